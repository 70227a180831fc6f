"""The training recipe on `accelerate`: setup, train, evaluate, checkpoint, resume, export.

One `Trainer` drives a run folder::

    RUN/config.yaml            the resolved config (batch split filled in)
    RUN/metrics.jsonl          one JSON object per logged step / evaluation
    RUN/tensorboard/           the same scalars for TensorBoard
    RUN/checkpoints/checkpoint-00000020/   accelerate state (model, optimiser, scheduler, RNG)
                                           + trainer_state.json (step, epoch, data position)
    RUN/final/                 save_pretrained model (safetensors) + processor

The same code runs on one CPU process, DDP, FSDP or DeepSpeed (``accelerate launch
--config_file configs/accelerate/...``). Data order is a seeded permutation per epoch,
identical on every process and sharded by accelerate, so a run's batches depend only on
the seed and the global batch; ``resume`` restores the accelerate state and skips the
micro-batches already consumed in the current epoch, continuing exactly where it stopped.
Checkpoints are written to a hidden temporary folder and renamed into place, so a
``checkpoint-*`` folder is always complete; the last ``keep_last`` are kept.

Losses are logged per part (LM cross-entropy, mask BCE, mask Dice) and per task (LM loss
of each sample's answer tokens, mask losses of its masks), summed over processes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from omnipath_lvlm.data.dataset import InstructionDataset, model_inputs
from omnipath_lvlm.train.feature_cache import VisionFeatureCache
from omnipath_lvlm.train.config import MODULE_NAMES, TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainState:
    """Where a run is: optimiser steps done and the data position within the current epoch."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches this process consumed in `epoch`
    samples_seen: int = 0  # over all processes


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    final_dir: Path | None
    history: list[dict[str, Any]]  # the logged training records of this call


class EpochSampler(Sampler[int]):
    """The same seeded permutation of the dataset on every process; ``set_epoch`` reshuffles."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class Trainer:
    """Builds everything from a `TrainConfig` and runs it (see the module docstring)."""

    def __init__(self, config: TrainConfig, resume: bool = False):
        from accelerate import Accelerator, PartialState
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        world_size = PartialState(cpu=config.train.cpu).num_processes
        config.validate(world_size=world_size)  # before anything heavy is built
        self.accumulation = config.gradient_accumulation(world_size)
        self.config = replace(config, train=replace(
            config.train, gradient_accumulation_steps=self.accumulation, global_batch_size=config.global_batch(world_size)))
        self.accelerator = Accelerator(
            gradient_accumulation_steps=self.accumulation,
            mixed_precision=_mixed_precision(config),
            cpu=config.train.cpu,
            step_scheduler_with_optimizer=False,
            # batches without <mask> leave the mask encoder / head unused
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        acc = self.accelerator
        self.run_dir = Path(config.output_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.resume = resume
        set_seed(config.train.seed)

        self.model, self.processor = build_model(config)
        self.train_data = self._dataset([f.path for f in config.data.train], [f.weight for f in config.data.train],
                                        [f.tasks for f in config.data.train], config.data.region_jitter)
        self.eval_data = self._dataset(list(config.data.eval), None) if config.data.eval else None
        tasks = set(self.train_data.task_names) | set(self.eval_data.task_names if self.eval_data else [])
        self.task_names = sorted(tasks)
        self.sampler = EpochSampler(len(self.train_data), config.train.seed, config.data.shuffle)
        train_loader = self._loader(self.train_data, self.sampler)
        eval_loader = (self._loader(self.eval_data, EpochSampler(len(self.eval_data), 0, False), drop_last=False)
                       if self.eval_data else None)

        optimizer = build_optimizer(self.model, config)
        self.steps_per_epoch = len(train_loader) // acc.num_processes // self.accumulation
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{len(self.train_data)} training samples cannot fill one global batch of {self.config.train.global_batch_size}")
        self.total_steps = config.train.max_steps or config.train.epochs * self.steps_per_epoch
        scheduler = build_scheduler(optimizer, config, self.total_steps)
        prepared = acc.prepare(self.model, optimizer, train_loader, scheduler, *([eval_loader] if eval_loader else []))
        self.model, self.optimizer, self.train_loader, self.scheduler = prepared[:4]
        self.feature_cache = (VisionFeatureCache(_omnipath_model(acc.unwrap_model(self.model)).vision_tower)
                              if config.data.cache_vision_features else None)
        self.eval_loader = prepared[4] if eval_loader else None
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []
        self._writer = None
        self._evaluated_at: int | None = None
        self._no_tensorboard = False

    # ------------------------------------------------------------------ setup helpers
    def _dataset(self, paths: list[str], weights: list[float] | None,
                 tasks: list[list[str]] | None = None, region_jitter: float = 0.0) -> InstructionDataset:
        d = self.config.data
        focus = d.focus_boxes if self.config.train.focus_loss_weight > 0 else None
        return InstructionDataset(paths, self.processor, mixture_weights=weights, tasks=tasks, focus_boxes=focus,
                                  segmentation_output=d.segmentation_output,
                                  region_pool=d.region_pool, seed=self.config.train.seed, max_length=d.max_length,
                                  region_jitter=region_jitter, closed_answers=d.closed_answers)

    def _loader(self, dataset: InstructionDataset, sampler: Sampler[int], drop_last: bool = True) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.train.per_device_batch_size, sampler=sampler,
                          collate_fn=dataset.collate, num_workers=self.config.data.num_workers, drop_last=drop_last)

    def _objective(self, out) -> torch.Tensor:
        """What the optimiser minimises: the model's loss plus the weighted focus loss (when the batch has any)."""
        weight = self.config.train.focus_loss_weight
        if weight and out.focus_loss is not None:
            return out.loss + weight * out.focus_loss
        return out.loss

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The model's keyword arguments; with the feature cache, cached tower outputs replace the pixels."""
        inputs = model_inputs(batch)
        if self.feature_cache is not None and "pixel_values" in inputs:
            inputs["vision_features"] = self.feature_cache(inputs.pop("pixel_values"), batch.get("image_cacheable"))
        return inputs

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ------------------------------------------------------------------ the loop
    def train(self, stop_after_steps: int | None = None) -> TrainResult:
        """Train to the configured end (or stop after ``stop_after_steps``, saving a checkpoint, as a preemption would)."""
        acc, cfg = self.accelerator, self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / "config.yaml")
        if self.resume:
            self.load_latest()
        acc.wait_for_everyone()
        end = self.total_steps if stop_after_steps is None else min(self.total_steps, stop_after_steps)
        progress = _progress(self.total_steps, self.state.step, disable=not (self.is_main and cfg.logging.progress))
        meter = self._meter()
        tick, steps_since = time.perf_counter(), 0
        model = self.model
        model.train()
        per_epoch = self.steps_per_epoch * self.accumulation  # micro-batches per process and epoch
        while self.state.step < end:
            self.sampler.set_epoch(self.state.epoch)
            loader = self.train_loader
            if self.state.batches_in_epoch:
                loader = acc.skip_first_batches(loader, self.state.batches_in_epoch)
            for batch in loader:
                with acc.accumulate(model):
                    out = model(**self._inputs(batch), use_cache=False)
                    acc.backward(self._objective(out))
                    if acc.sync_gradients and cfg.optim.max_grad_norm:
                        acc.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                meter.add(batch, out)
                self.state.batches_in_epoch += 1
                if not acc.sync_gradients:
                    continue
                self.scheduler.step()
                self.state.step += 1
                self.state.samples_seen += cfg.train.global_batch_size
                steps_since += 1
                progress.update(1)
                if self.state.step % cfg.logging.log_every == 0 or self.state.step == end:
                    elapsed = time.perf_counter() - tick
                    record = self._log(meter, "train", samples_per_s=steps_since * cfg.train.global_batch_size / elapsed)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                         samples_s=f"{record['samples_per_s']:.1f}")
                    meter, tick, steps_since = self._meter(), time.perf_counter(), 0
                if cfg.logging.eval_every and self.state.step % cfg.logging.eval_every == 0:
                    self.evaluate()
                    model.train()
                if cfg.checkpoint.save_every and self.state.step % cfg.checkpoint.save_every == 0:
                    self.save_checkpoint()
                if self.state.step >= end or self.state.batches_in_epoch >= per_epoch:
                    break
            else:  # the loader ran dry (cannot happen with drop_last and the epoch length above)
                self.state.batches_in_epoch = per_epoch
            if self.state.batches_in_epoch >= per_epoch:
                self.state.epoch += 1
                self.state.batches_in_epoch = 0
        progress.close()
        if not (cfg.checkpoint.save_every and self.state.step % cfg.checkpoint.save_every == 0):
            self.save_checkpoint()  # always one at the end (or at the stop)
        final = None
        if self.state.step >= self.total_steps:
            if self.eval_loader is not None and self._evaluated_at != self.state.step:
                self.evaluate()
            final = self.export()
        if self._writer is not None:
            self._writer.close()
        return TrainResult(self.run_dir, self.state, final, self.history)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Mean losses on ``data.eval`` (logged with the ``eval/`` prefix)."""
        if self.eval_loader is None:
            raise ValueError("no evaluation data: set data.eval")
        self.model.eval()
        self._evaluated_at = self.state.step
        meter = self._meter()
        for batch in self.eval_loader:
            meter.add(batch, self.model(**self._inputs(batch), use_cache=False))
        return self._log(meter, "eval")

    # ------------------------------------------------------------------ logging
    def _meter(self) -> "_LossMeter":
        return _LossMeter(self.task_names, self.accelerator.device, self.processor.mask_token_id)

    def _log(self, meter: "_LossMeter", split: str, **extra: float) -> dict[str, Any]:
        summary = meter.reduce(self.accelerator)
        record: dict[str, Any] = {"split": split, "step": self.state.step, "epoch": self.state.epoch,
                                  "lr": self.scheduler.get_last_lr()[0], **summary, **extra}
        if split == "train":
            self.history.append(record)
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            writer = self._tensorboard()
            if writer is not None:
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key not in ("step", "split"):
                        writer.add_scalar(f"{split}/{key}", value, self.state.step)
                writer.flush()
        return record

    def _tensorboard(self):
        if self._writer is None and self.config.logging.tensorboard and not self._no_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
                self._no_tensorboard = True
                return None
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write the full training state to ``checkpoints/checkpoint-STEP`` atomically; prune old ones."""
        acc = self.accelerator
        name = f"{CHECKPOINT_PREFIX}{self.state.step:08d}"
        final, tmp = self.checkpoint_dir / name, self.checkpoint_dir / f".tmp-{name}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            if self.is_main:
                state = {**asdict(self.state), "world_size": acc.num_processes,
                         "global_batch_size": self.config.train.global_batch_size}
                (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                self._prune()
        except BaseException:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()
        return final

    def _prune(self) -> None:
        for old in list_checkpoints(self.checkpoint_dir)[: -self.config.checkpoint.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def load_latest(self) -> Path | None:
        """Restore the newest complete checkpoint (None when there is none)."""
        found = list_checkpoints(self.checkpoint_dir)
        if not found:
            logger.warning("resume asked but %s holds no checkpoint: starting from scratch", self.checkpoint_dir)
            return None
        path = found[-1]
        saved = json.loads((path / STATE_FILE).read_text())
        if saved["global_batch_size"] != self.config.train.global_batch_size:
            raise ValueError(f"checkpoint {path} was trained with global batch {saved['global_batch_size']}, "
                             f"this run has {self.config.train.global_batch_size}: the data position would not match")
        if saved["world_size"] != self.accelerator.num_processes:
            raise ValueError(f"checkpoint {path} was written by {saved['world_size']} processes, this run has "
                             f"{self.accelerator.num_processes}: the per-process data position would not match")
        self.accelerator.load_state(str(path))
        self.state = TrainState(**{k: saved[k] for k in asdict(TrainState())})
        logger.info("resumed from %s at step %d", path, self.state.step)
        return path

    # ------------------------------------------------------------------ export
    def export(self) -> Path:
        """The trained model (safetensors, LoRA merged) and the processor in ``RUN/final``."""
        acc = self.accelerator
        final, tmp = self.run_dir / "final", self.run_dir / ".tmp-final"
        state_dict = None if self.config.lora.enabled else acc.get_state_dict(self.model)
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            model = acc.unwrap_model(self.model)
            if self.config.lora.enabled:
                model = model.merge_and_unload()
            model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            self.processor.save_pretrained(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        acc.wait_for_everyone()
        return final


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Run a whole training (the ``omnipath train`` entry point)."""
    return Trainer(config, resume=resume).train()


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (temporary folders are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


# ---------------------------------------------------------------------- model and optimisation
def build_model(config: TrainConfig):
    """(model, processor) from the preset or checkpoint, with freezing, LoRA and checkpointing applied."""
    from omnipath_lvlm.config import OmniPathConfig
    from omnipath_lvlm.model import OmniPathForConditionalGeneration
    from omnipath_lvlm.processing import OmniPathProcessor

    m = config.model
    extra = {} if m.attn_implementation is None else {"attn_implementation": m.attn_implementation}
    if m.checkpoint is not None:
        # fp32 master weights, as a preset is built: accelerate's autocast gives bf16/fp16 compute, and
        # a bf16 checkpoint (the shipped nano) would otherwise train in bf16 on CPUs that lack its kernels
        model = OmniPathForConditionalGeneration.from_pretrained(m.checkpoint, dtype=torch.float32, **extra)
        processor = OmniPathProcessor.from_pretrained(m.checkpoint)
    else:
        model_config = OmniPathConfig.from_name(m.preset, **m.overrides)
        if m.attn_implementation is not None:
            model_config._attn_implementation = m.attn_implementation
        model = OmniPathForConditionalGeneration(model_config)
        processor = OmniPathProcessor.for_config(model_config)
    if m.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        uni = getattr(model.vision_tower, "uni", None)
        if uni is not None and hasattr(uni, "vit"):
            uni.vit.set_grad_checkpointing(True)
    if config.lora.enabled:
        model = _with_lora(model, config)
    for name in config.optim.freeze:
        module = _submodule(model, name)
        if module is not None:
            module.requires_grad_(False)
    return model, processor


def _with_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lo = config.lora
    targets = "|".join(lo.target_modules)
    lora_config = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                             target_modules=rf".*language_model\..*\.({targets})")
    wrapped = get_peft_model(model, lora_config)  # freezes everything but the adapters
    for name in lo.train_modules:
        module = _submodule(wrapped.base_model.model, name)
        if module is not None:
            module.requires_grad_(True)
    return wrapped


def _omnipath_model(model):
    """The OmniPath model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _submodule(model, name: str):
    """The module at dotted ``name`` (None when the model has none, e.g. UNI switched off)."""
    module = model
    for part in name.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def module_group(param_name: str) -> str:
    """The MODULE_NAMES entry a parameter belongs to (wrapper prefixes such as peft's are ignored)."""
    for name in MODULE_NAMES:
        if param_name.startswith(name + ".") or f".{name}." in param_name:
            return name
    raise ValueError(f"parameter {param_name!r} belongs to none of the modules {MODULE_NAMES}")


def build_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with one group per (module, decay) pair: per-module learning rates; no decay on biases/norms."""
    o = config.optim
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            decay = param.ndim >= 2
            groups.setdefault((module_group(name), decay), []).append(param)
    if not groups:
        raise ValueError("no trainable parameters: every module is frozen")
    param_groups = [
        {"params": params, "lr": o.module_lr.get(module, o.lr), "weight_decay": o.weight_decay if decay else 0.0,
         "name": f"{module}{'' if decay else '/no_decay'}"}
        for (module, decay), params in groups.items()
    ]
    return torch.optim.AdamW(param_groups, lr=o.lr, betas=o.betas, eps=o.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Warm-up then cosine / linear decay to zero, or constant, over ``total_steps`` optimiser steps."""
    from transformers import get_scheduler

    o = config.optim
    warmup = o.warmup_steps if o.warmup_steps is not None else math.ceil(o.warmup_ratio * total_steps)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[o.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _mixed_precision(config: TrainConfig) -> str:
    precision = config.train.precision
    if precision == "auto":
        gpu = torch.cuda.is_available() and not config.train.cpu
        return "bf16" if gpu and torch.cuda.is_bf16_supported() else "no"
    return "no" if precision == "fp32" else precision


def _progress(total: int, initial: int, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=disable, desc="train", unit="step", dynamic_ncols=True)


# ---------------------------------------------------------------------- loss bookkeeping
class _LossMeter:
    """Sums of the loss parts, overall and per task, since the last log (reduced over processes)."""

    PARTS = ("loss", "lm_loss", "mask_bce", "mask_dice", "focus_loss")

    def __init__(self, task_names: list[str], device: torch.device, mask_token_id: int):
        self.mask_token_id = mask_token_id
        self.tasks = {t: i for i, t in enumerate(task_names)}
        self.parts = torch.zeros(len(self.PARTS), 2, dtype=torch.float64, device=device)  # (part, [sum, count])
        # per task: LM token-loss sum, LM tokens, BCE sum, Dice sum, masks
        self.per_task = torch.zeros(len(task_names), 5, dtype=torch.float64, device=device)
        self.skipped = 0

    @torch.no_grad()
    def add(self, batch: dict[str, Any], out) -> None:
        for i, part in enumerate(self.PARTS):
            value = getattr(out, part)
            if value is not None:
                self.parts[i] += torch.stack([value.detach().double(), value.new_ones((), dtype=torch.float64)])
        self.skipped += len(batch.get("skipped", []))
        rows = [self.tasks[t] for t in batch["tasks"]]
        labels = batch["labels"]
        for row, task in enumerate(rows):  # per-sample LM loss, one row at a time to bound memory
            target = labels[row, 1:]
            keep = target != -100
            if keep.any():
                ce = F.cross_entropy(out.logits[row, :-1][keep].float(), target[keep], reduction="sum")
                self.per_task[task, 0] += ce.double()
                self.per_task[task, 1] += int(keep.sum())
        if out.pred_masks is not None and "mask_targets" in batch:
            from omnipath_lvlm.model.mask import mask_losses

            is_output = (batch["input_ids"] == self.mask_token_id) & (labels != -100)
            owners = [r for r, n in enumerate(is_output.sum(1).tolist()) for _ in range(n)]
            for k, row in enumerate(owners):
                bce, dice = mask_losses(out.pred_masks[k:k + 1], batch["mask_targets"][k:k + 1].to(out.pred_masks.device))
                self.per_task[rows[row], 2:] += torch.stack([bce.double(), dice.double(), bce.new_ones((), dtype=torch.float64)])

    def reduce(self, accelerator) -> dict[str, float]:
        parts = accelerator.reduce(self.parts, reduction="sum")
        per_task = accelerator.reduce(self.per_task, reduction="sum")
        skipped = accelerator.reduce(torch.tensor(float(self.skipped), device=self.parts.device), reduction="sum")
        out: dict[str, float] = {}
        for i, part in enumerate(self.PARTS):
            if parts[i, 1] > 0:
                out[part] = float(parts[i, 0] / parts[i, 1])
        for task, i in self.tasks.items():
            if per_task[i, 1] > 0:
                out[f"task/{task}/lm_loss"] = float(per_task[i, 0] / per_task[i, 1])
            if per_task[i, 4] > 0:
                out[f"task/{task}/mask_bce"] = float(per_task[i, 2] / per_task[i, 4])
                out[f"task/{task}/mask_dice"] = float(per_task[i, 3] / per_task[i, 4])
        out["skipped_samples"] = float(skipped)
        return out
