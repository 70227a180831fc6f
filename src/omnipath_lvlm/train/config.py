"""The typed training configuration: YAML file + dotted command-line overrides -> `TrainConfig`.

A config file has the sections of :class:`TrainConfig` (``model``, ``data``, ``optim``,
``lora``, ``train``, ``checkpoint``, ``logging``) plus ``output_dir``. Overrides use dotted
keys and YAML values, e.g. ``optim.lr=1e-4 train.max_steps=20 data.train=[a.jsonl]``.

Everything is checked before a model is built: an unknown key, a value of the wrong type,
a missing data file, an unknown module name or a global batch that the per-device batch,
gradient accumulation and world size cannot make all raise `ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# Module groups that can be frozen or given their own learning rate (attribute paths in the model).
MODULE_NAMES = (
    "vision_tower.siglip",
    "vision_tower.uni",
    "multi_modal_projector",
    "language_model",
    "mask_encoder",
    "mask_head",
)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class ConfigError(ValueError):
    """The training configuration is invalid (the message names the key)."""


@dataclass
class ModelSection:
    preset: str | None = "test-tiny"  # a model preset name (fresh weights) ...
    checkpoint: str | None = None  # ... or a save_pretrained folder (model + processor)
    overrides: dict[str, Any] = field(default_factory=dict)  # OmniPathConfig.from_name overrides
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # "sdpa", "eager", "flash_attention_2"; None: the default


@dataclass
class DataFile:
    path: str
    weight: float = 1.0  # times the file's records are seen per epoch
    tasks: list[str] = field(default_factory=list)  # only these tasks' records (empty: all)


@dataclass
class DataSection:
    train: list[DataFile] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    segmentation_output: Literal["mask", "polygons"] = "mask"
    region_pool: int = 3
    max_length: int | None = None
    num_workers: int = 0
    shuffle: bool = True
    # reuse the frozen vision tower's output per image across epochs (needs the tower in optim.freeze)
    cache_vision_features: bool = False
    # the gt field of boxes (relative x1, y1, x2, y2 of the main image) where a record's answer lies;
    # with train.focus_loss_weight > 0, PGFC's first-layer attention is trained towards them
    focus_boxes: str | None = None
    # training slide records' detail regions are re-read at every sighting, each shifted by up to this
    # fraction of its side (0: the exported crops); the cache keeps no shifted picture
    region_jitter: float = 0.0
    # "text": closed-ended answers "C. <option>" are trained as the option text alone (options stay lettered)
    closed_answers: Literal["letter", "text"] = "letter"


@dataclass
class OptimSection:
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    module_lr: dict[str, float] = field(default_factory=dict)  # module name -> learning rate
    freeze: list[str] = field(default_factory=list)  # module names that do not train


@dataclass
class LoraSection:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    train_modules: list[str] = field(  # trained in full beside the adapters
        default_factory=lambda: ["multi_modal_projector", "mask_encoder", "mask_head"])


@dataclass
class TrainSection:
    epochs: int = 2
    max_steps: int | None = None  # when set, the run length in optimiser steps (epochs is then ignored)
    per_device_batch_size: int = 1
    global_batch_size: int | None = None  # None: per_device x accumulation x world size
    gradient_accumulation_steps: int | None = None  # None: derived from global_batch_size
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    seed: int = 0
    cpu: bool = False  # force CPU even when a GPU is present
    focus_loss_weight: float = 0.0  # weight of the focus loss (omnipath_lvlm.model.focus); needs data.focus_boxes


@dataclass
class CheckpointSection:
    save_every: int | None = None  # optimiser steps between checkpoints (one is always saved at the end)
    keep_last: int = 2


@dataclass
class LoggingSection:
    log_every: int = 10
    eval_every: int | None = None
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    output_dir: str = "runs/omnipath"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    # ------------------------------------------------------------------ checks
    def gradient_accumulation(self, world_size: int) -> int:
        """Accumulation steps so that per_device x accumulation x world_size == global batch."""
        t = self.train
        per_step = t.per_device_batch_size * world_size
        if t.global_batch_size is None:
            return t.gradient_accumulation_steps or 1
        if t.global_batch_size % per_step:
            raise ConfigError(
                f"train.global_batch_size {t.global_batch_size} is not a multiple of per_device_batch_size "
                f"{t.per_device_batch_size} x world size {world_size} = {per_step}")
        accumulation = t.global_batch_size // per_step
        if t.gradient_accumulation_steps is not None and t.gradient_accumulation_steps != accumulation:
            raise ConfigError(
                f"train.global_batch_size {t.global_batch_size} != per_device_batch_size {t.per_device_batch_size} "
                f"x gradient_accumulation_steps {t.gradient_accumulation_steps} x world size {world_size}")
        return accumulation

    def global_batch(self, world_size: int) -> int:
        return self.train.per_device_batch_size * self.gradient_accumulation(world_size) * world_size

    def validate(self, world_size: int = 1, check_files: bool = True) -> None:
        """Raise ConfigError naming the first problem (files, module names, numbers, batch split)."""
        m, d, o, t = self.model, self.data, self.optim, self.train
        if (m.preset is None) == (m.checkpoint is None):
            raise ConfigError(f"set exactly one of model.preset and model.checkpoint "
                              f"(got preset={m.preset!r}, checkpoint={m.checkpoint!r})")
        if m.preset is not None:
            from omnipath_lvlm.config import OmniPathConfig

            if m.preset not in OmniPathConfig.preset_names():
                raise ConfigError(f"model.preset {m.preset!r} is unknown; known: {', '.join(OmniPathConfig.preset_names())}")
        elif check_files and not (Path(m.checkpoint) / "config.json").is_file():
            raise ConfigError(f"model.checkpoint {m.checkpoint} is not a saved model folder (no config.json)")
        if not d.train:
            raise ConfigError("data.train lists no JSONL files")
        for i, item in enumerate(d.train):
            if item.weight < 0:
                raise ConfigError(f"data.train[{i}].weight must be >= 0, got {item.weight}")
            if check_files and not Path(item.path).is_file():
                raise ConfigError(f"data.train[{i}].path {item.path} does not exist")
        for i, path in enumerate(d.eval):
            if check_files and not Path(path).is_file():
                raise ConfigError(f"data.eval[{i}] {path} does not exist")
        if d.region_pool < 1 or d.num_workers < 0:
            raise ConfigError("data.region_pool must be >= 1 and data.num_workers >= 0")
        if not 0.0 <= d.region_jitter <= 1.0:
            raise ConfigError(f"data.region_jitter is a fraction of a region's side in [0, 1], got {d.region_jitter}")
        for key in ("freeze", "module_lr"):
            for name in getattr(o, key):
                if name not in MODULE_NAMES:
                    raise ConfigError(f"optim.{key} names unknown module {name!r}; modules: {', '.join(MODULE_NAMES)}")
        for name in self.lora.train_modules:
            if name not in MODULE_NAMES:
                raise ConfigError(f"lora.train_modules names unknown module {name!r}; modules: {', '.join(MODULE_NAMES)}")
        if t.focus_loss_weight < 0 or (t.focus_loss_weight > 0 and not d.focus_boxes):
            raise ConfigError(f"train.focus_loss_weight must be >= 0 and, when > 0, data.focus_boxes must name the gt "
                              f"field of the boxes to focus on (got {t.focus_loss_weight}, {d.focus_boxes!r})")
        tower = ("vision_tower.siglip", "vision_tower.uni")
        if d.cache_vision_features and not set(tower) <= set(o.freeze):
            missing = [name for name in tower if name not in o.freeze]
            raise ConfigError(f"data.cache_vision_features needs a frozen vision tower: add {' and '.join(missing)} "
                              f"to optim.freeze (a training tower's cached features would go stale)")
        if set(o.freeze) == set(MODULE_NAMES) and not self.lora.enabled:
            raise ConfigError("optim.freeze freezes every module: nothing would train")
        if o.lr <= 0 or any(lr <= 0 for lr in o.module_lr.values()):
            raise ConfigError("learning rates (optim.lr, optim.module_lr) must be > 0")
        if not all(0 <= b < 1 for b in o.betas) or o.eps <= 0 or o.weight_decay < 0:
            raise ConfigError(f"optim.betas must lie in [0, 1), eps > 0, weight_decay >= 0 (betas={o.betas})")
        if not 0 <= o.warmup_ratio < 1 or (o.warmup_steps is not None and o.warmup_steps < 0):
            raise ConfigError("optim.warmup_ratio must lie in [0, 1) and optim.warmup_steps be >= 0")
        if t.epochs < 1 and t.max_steps is None:
            raise ConfigError("train.epochs must be >= 1 (or set train.max_steps)")
        if t.max_steps is not None and t.max_steps < 1:
            raise ConfigError(f"train.max_steps must be >= 1, got {t.max_steps}")
        if t.per_device_batch_size < 1:
            raise ConfigError(f"train.per_device_batch_size must be >= 1, got {t.per_device_batch_size}")
        if t.gradient_accumulation_steps is not None and t.gradient_accumulation_steps < 1:
            raise ConfigError(f"train.gradient_accumulation_steps must be >= 1, got {t.gradient_accumulation_steps}")
        if t.global_batch_size is not None and t.global_batch_size < 1:
            raise ConfigError(f"train.global_batch_size must be >= 1, got {t.global_batch_size}")
        self.gradient_accumulation(world_size)
        c, lg = self.checkpoint, self.logging
        if c.keep_last < 1 or (c.save_every is not None and c.save_every < 1):
            raise ConfigError("checkpoint.keep_last must be >= 1 and checkpoint.save_every >= 1")
        if lg.log_every < 1 or (lg.eval_every is not None and lg.eval_every < 1):
            raise ConfigError("logging.log_every and logging.eval_every must be >= 1")
        if lg.eval_every is not None and not d.eval:
            raise ConfigError("logging.eval_every is set but data.eval lists no files")

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from plain data; ConfigError names unknown keys and wrong types."""
    return _build(TrainConfig, data, "")


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        apply_override(data, item)
    return config_from_dict(data)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in nested dicts (the value is parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


# ---------------------------------------------------------------------- typed building
def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} (known in {where or 'the top level'}: "
                          f"{', '.join(sorted(names))})")
    values = {name: _convert(hints[name], value, f"{where}.{name}" if where else name) for name, value in data.items()}
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where} must not be empty")
    if dataclasses.is_dataclass(hint):
        if hint is DataFile and isinstance(value, str):
            return DataFile(path=value)
        return _build(hint, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
