"""Configuration of OmniPath: one typed config per component, combined into `OmniPathConfig`.

```
OmniPathConfig
├── vision_config: OmniPathVisionConfig      multi-scale dual tower
│   ├── siglip_config: SiglipVisionConfig    transformers' own config (layers kept up to the feature layer)
│   └── uni_config: UniConfig | None         timm ViT (UNI ViT-L/16); None switches UNI off
├── text_config: any causal-LM config        Llama/Vicuna, Qwen2, Mistral ... (AutoConfig)
├── projector_config: ProjectorConfig        2-layer GELU MLP
└── mask_config: MaskConfig                  ResNet mask encoder + SAM-style mask decoder + loss weights
```

Named sizes are data: YAML files in ``resources/presets/`` (``omnipath-7b``, ``nano``,
``test-tiny``), loaded with ``OmniPathConfig.from_name(name, **overrides)``. Configs are
validated on construction and saved beside the weights (``config.json``).
"""
from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import yaml
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig, SiglipVisionConfig
from transformers.configuration_utils import SubConfigSpec

IMAGE_TOKEN = "<image>"
MASK_TOKEN = "<mask>"

# ImageNet statistics, used by UNI (timm default for DINOv2-trained ViTs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@strict
class UniConfig(PreTrainedConfig):
    """UNI, a timm ``VisionTransformer`` (ViT-L/16 with LayerScale) used for its patch tokens."""

    model_type = "omnipath_uni"
    base_config_key = "uni_config"

    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    init_values: float | None = 1e-5
    reference_image_size: int = 224  # the grid its position embedding was trained at (resampled dynamically)
    image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN
    image_std: list[float] | tuple[float, ...] = IMAGENET_STD

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"UNI embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        _check_stats("UNI", self.image_mean, self.image_std)

    def timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``timm.models.vision_transformer.VisionTransformer``."""
        return dict(
            img_size=self.reference_image_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            init_values=self.init_values,
            dynamic_img_size=True,
            num_classes=0,
            global_pool="",
        )


@strict
class OmniPathVisionConfig(PreTrainedConfig):
    """The dual vision tower with multi-scale feature fusion (MSFF).

    ``image_size`` is the base size of one tile (SigLIP's native resolution). For each
    scale ``s`` the image is resized to ``image_size * s`` and cut into ``s * s`` tiles; the
    features of every scale are pooled back to the base grid and concatenated on channels.
    ``feature_layer`` indexes SigLIP's hidden states as LLaVA does (``-2``: penultimate layer).
    """

    model_type = "omnipath_vision"
    base_config_key = "vision_config"
    sub_configs_defaults = {
        "siglip_config": SiglipVisionConfig,
        "uni_config": SubConfigSpec(UniConfig, optional=True),
    }

    siglip_config: dict | PreTrainedConfig | None = None
    uni_config: dict | PreTrainedConfig | None = None
    scales: list[int] | tuple[int, ...] = (1, 2)
    feature_layer: int = -2
    image_mean: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5)  # SigLIP's normalisation
    image_std: list[float] | tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.scales = tuple(int(s) for s in self.scales)
        if not self.scales or any(s < 1 for s in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales must be distinct positive integers, got {self.scales}")
        if self.scales[0] != 1:
            raise ValueError(f"scales must start with the base scale 1, got {self.scales}")
        n = self.siglip_config.num_hidden_layers
        if not (-n <= self.feature_layer <= n) or self.feature_layer == 0 and n == 0:
            raise ValueError(f"feature_layer {self.feature_layer} is outside SigLIP's {n} layers")
        if self.siglip_config.image_size < self.siglip_config.patch_size:
            raise ValueError(
                f"SigLIP image_size {self.siglip_config.image_size} is smaller than patch_size "
                f"{self.siglip_config.patch_size}"
            )
        _check_stats("SigLIP", self.image_mean, self.image_std)

    @property
    def image_size(self) -> int:
        """Base tile size in pixels."""
        return int(self.siglip_config.image_size)

    @property
    def max_image_size(self) -> int:
        """Size of the square image the processor prepares (base size times the largest scale)."""
        return self.image_size * max(self.scales)

    @property
    def grid_size(self) -> int:
        """Side of the token grid the LLM sees per image (27 for SigLIP-384/14)."""
        return self.image_size // int(self.siglip_config.patch_size)

    @property
    def num_image_tokens(self) -> int:
        return self.grid_size**2

    @property
    def num_siglip_layers_used(self) -> int:
        """How many SigLIP layers run: hidden state ``feature_layer`` is the output of this many layers."""
        n = self.siglip_config.num_hidden_layers
        return self.feature_layer if self.feature_layer > 0 else n + 1 + self.feature_layer

    @property
    def use_uni(self) -> bool:
        return self.uni_config is not None

    @property
    def feature_dim(self) -> int:
        """Channels of the fused feature map (the projector's input size)."""
        dim = self.siglip_config.hidden_size
        if self.uni_config is not None:
            dim += self.uni_config.embed_dim
        return dim * len(self.scales)


@strict
class ProjectorConfig(PreTrainedConfig):
    """The vision-to-language projector (LLaVA-1.5's mlp2x_gelu)."""

    model_type = "omnipath_projector"
    base_config_key = "projector_config"

    depth: int = 2
    hidden_act: str = "gelu"
    bias: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.depth != 2:
            raise ValueError(f"only the paper's 2-layer MLP projector is implemented, got depth={self.depth}")


@strict
class MaskConfig(PreTrainedConfig):
    """The `<mask>` machinery: ResNet mask encoder, SAM-style mask decoder and the loss weights."""

    model_type = "omnipath_mask"
    base_config_key = "mask_config"

    encoder_layers: list[int] | tuple[int, ...] = (2, 2, 2, 2)  # ResNet-18
    encoder_input_size: int = 384  # masks are resized to this before encoding
    decoder_dim: int = 256  # SAM's transformer_dim
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    decoder_attention_downsample: int = 2
    bce_weight: float = 2.0
    dice_weight: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.encoder_layers = tuple(int(x) for x in self.encoder_layers)
        if len(self.encoder_layers) != 4 or min(self.encoder_layers) < 1:
            raise ValueError(f"encoder_layers must be 4 positive block counts, got {self.encoder_layers}")
        if self.decoder_dim % self.decoder_heads or (self.decoder_dim // self.decoder_attention_downsample) % self.decoder_heads:
            raise ValueError(
                f"decoder_dim {self.decoder_dim} (and its /{self.decoder_attention_downsample} downsampled width) "
                f"must be divisible by decoder_heads {self.decoder_heads}"
            )
        if self.decoder_dim % 8:
            raise ValueError(f"decoder_dim {self.decoder_dim} must be a multiple of 8 (the upscaling halves it twice)")
        if self.bce_weight < 0 or self.dice_weight < 0:
            raise ValueError("mask loss weights must be non-negative")


@strict
class OmniPathConfig(PreTrainedConfig):
    """Top-level configuration of ``OmniPathForConditionalGeneration``."""

    model_type = "omnipath"
    sub_configs_defaults = {
        "vision_config": OmniPathVisionConfig,
        "text_config": SubConfigSpec(AutoConfig, model_type="llama"),
        "projector_config": ProjectorConfig,
        "mask_config": MaskConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projector_config: dict | PreTrainedConfig | None = None
    mask_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    mask_token_id: int = 32002
    ignore_index: int = -100
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    preset: str | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        vocab = self.text_config.vocab_size
        for name in ("image_token_id", "mask_token_id"):
            value = getattr(self, name)
            if not 0 <= value < vocab:
                raise ValueError(f"{name} {value} is outside the text model's vocabulary of {vocab}")
        if self.image_token_id == self.mask_token_id:
            raise ValueError(f"image_token_id and mask_token_id must differ, both are {self.image_token_id}")

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset_names(cls) -> list[str]:
        folder = resources.files("omnipath_lvlm.resources") / "presets"
        return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))

    @classmethod
    def preset_dict(cls, name: str) -> dict[str, Any]:
        """The raw data of a named preset."""
        path = resources.files("omnipath_lvlm.resources") / "presets" / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(cls.preset_names())}")
        return yaml.safe_load(path.read_text())

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "OmniPathConfig":
        """Build a named preset, with keyword overrides.

        Shortcuts: ``use_uni`` (bool), ``scales``, ``feature_layer``. Sub-config overrides are
        dicts merged into the preset: ``text_config={"num_hidden_layers": 4}``. Top-level fields
        (``image_token_id``, ...) are set directly. Anything else is an error.
        """
        data = copy.deepcopy(cls.preset_dict(name))
        data["preset"] = name
        vision = data.setdefault("vision_config", {})
        for key, value in overrides.items():
            if key == "use_uni":
                if not value:
                    vision["uni_config"] = None
                elif vision.get("uni_config") is None:
                    raise ValueError(f"preset {name!r} has no UNI configuration to switch on")
            elif key in ("scales", "feature_layer"):
                vision[key] = list(value) if key == "scales" else value
            elif key in cls.sub_configs_defaults:
                if not isinstance(value, dict):
                    raise ValueError(f"override {key} must be a dict of fields to change, got {type(value).__name__}")
                _deep_update(data.setdefault(key, {}), value)
            elif key in cls.__dataclass_fields__ and not key.startswith("_"):
                data[key] = value
            else:
                known = ["use_uni", "scales", "feature_layer", *cls.sub_configs_defaults, "image_token_id", "mask_token_id"]
                raise ValueError(f"unknown override {key!r} for preset {name!r}; valid: {', '.join(known)}")
        return cls(**data)


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def _check_stats(name: str, mean, std) -> None:
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"{name} image_mean/image_std must be 3 values each with std > 0, got {mean} / {std}")


def pooled_grid_side(grid: int, pool: int) -> int:
    """Side of an image's token grid after average-pooling by ``pool`` (PGFC detail regions).

    ``pool == 1`` keeps the grid; otherwise the grid is adaptively pooled to ``ceil(grid / pool)``.
    """
    if pool < 1:
        raise ValueError(f"image pool size must be >= 1, got {pool}")
    return -(-grid // pool)
