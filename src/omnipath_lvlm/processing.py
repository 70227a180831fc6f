"""OmniPathProcessor: tokenizer, conversation template, image preprocessing and token expansion.

A prompt is built from a conversation (Vicuna v1 / LLaVA-1.5 template by default)::

    [<s>] SYSTEM USER: <image>\\nQUESTION ASSISTANT: ANSWER</s>USER: ... ASSISTANT:

and tokenised segment by segment so that training (labels on assistant turns only) and
inference produce identical ids. Each ``<image>`` placeholder becomes ``n`` image-token ids,
where ``n = side^2`` and ``side = ceil(grid / pool)`` for that image's pool size (1 for a full
image; PGFC detail regions are pooled). A ``<mask>`` in a user turn is an input mask (its
embedding comes from the mask encoder); a ``<mask>`` in an assistant turn is an output (the
mask decoder draws it).

Images are resized (stretched) to ``base * max(scales)`` square, so relative box and polygon
coordinates mean the same in the original image and in the model's input, then normalised
with SigLIP's mean/std (UNI's normalisation is derived inside the vision tower).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

from omnipath_lvlm.config import IMAGE_TOKEN, MASK_TOKEN, OmniPathConfig, pooled_grid_side
from omnipath_lvlm.data import geometry

VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclass
class Encoded:
    """One tokenised conversation."""

    input_ids: list[int]
    labels: list[int]
    mask_input_positions: list[bool]
    image_pools: list[int] = field(default_factory=list)


class OmniPathProcessor(ProcessorMixin):
    """Turns conversations, images and masks into model inputs (and back into text)."""

    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        tokenizer=None,
        image_size: int = 384,
        max_image_size: int = 768,
        grid_size: int = 27,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        mask_input_size: int = 384,
        mask_target_size: int = 384,
        system_prompt: str = VICUNA_SYSTEM,
        add_bos: bool = True,
        **kwargs,
    ):
        self.image_size = int(image_size)
        self.max_image_size = int(max_image_size)
        self.grid_size = int(grid_size)
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        self.mask_input_size = int(mask_input_size)
        self.mask_target_size = int(mask_target_size)
        self.system_prompt = system_prompt
        self.add_bos = add_bos
        super().__init__(tokenizer, **kwargs)
        for token in (IMAGE_TOKEN, MASK_TOKEN):
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid is None or tid == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no {token} token; add it as a special token first")
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.mask_token_id = tokenizer.convert_tokens_to_ids(MASK_TOKEN)

    @classmethod
    def for_config(cls, config: OmniPathConfig, tokenizer=None, **kwargs) -> "OmniPathProcessor":
        """The processor matching a model config (built-in tokenizer for the small presets)."""
        if tokenizer is None:
            from omnipath_lvlm.tokenizer import default_tokenizer

            tokenizer = default_tokenizer()
            kwargs.setdefault("system_prompt", "")
        v = config.vision_config
        proc = cls(
            tokenizer,
            image_size=v.image_size,
            max_image_size=v.max_image_size,
            grid_size=v.grid_size,
            image_mean=v.image_mean,
            image_std=v.image_std,
            mask_input_size=config.mask_config.encoder_input_size,
            mask_target_size=v.image_size,
            **kwargs,
        )
        if proc.image_token_id != config.image_token_id or proc.mask_token_id != config.mask_token_id:
            raise ValueError(
                f"tokenizer ids <image>={proc.image_token_id}, <mask>={proc.mask_token_id} differ from the model "
                f"config's {config.image_token_id}, {config.mask_token_id}"
            )
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {config.text_config.vocab_size}")
        return proc

    # ------------------------------------------------------------------ images
    def tokens_per_image(self, pool: int = 1) -> int:
        return pooled_grid_side(self.grid_size, pool) ** 2

    def preprocess_images(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """RGB images -> (N, 3, S, S) normalised, S = max_image_size."""
        out = []
        size = self.max_image_size
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        for i, image in enumerate(images):
            image = _to_pil(image, f"image {i}")
            if image.width == 0 or image.height == 0:
                raise ValueError(f"image {i} is empty ({image.width}x{image.height})")
            image = image.convert("RGB").resize((size, size), Image.BICUBIC)
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
            out.append((x - mean) / std)
        if not out:
            return torch.zeros(0, 3, size, size)
        return torch.stack(out)

    def preprocess_masks(self, masks: Sequence[np.ndarray | Image.Image], size: int, what: str) -> torch.Tensor:
        """Binary masks -> (K, size, size) float in {0, 1} (nearest resize)."""
        out = []
        for i, mask in enumerate(masks):
            arr = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
            if arr.ndim != 2 or arr.size == 0:
                raise ValueError(f"{what} {i} must be a non-empty 2-D binary mask, got shape {arr.shape}")
            out.append(torch.from_numpy(geometry.resize_mask(arr, (size, size))).float())
        return torch.stack(out) if out else torch.zeros(0, size, size)

    # ------------------------------------------------------------------ text
    def conversation_segments(self, conversation: Sequence[dict], add_generation_prompt: bool) -> list[tuple[str, str]]:
        """[(text, role)] with role "prompt" (no labels) or "answer" (labelled)."""
        if not conversation:
            raise ValueError("the conversation is empty")
        segments: list[tuple[str, str]] = []
        head = (self.system_prompt + " ") if self.system_prompt else ""
        for i, turn in enumerate(conversation):
            role = turn.get("from", turn.get("role"))
            text = turn.get("value", turn.get("content"))
            if not isinstance(text, str):
                raise ValueError(f"turn {i} has no text (got {type(text).__name__})")
            if role in ("human", "user"):
                if not text.strip():
                    raise ValueError(f"turn {i} (user) is empty: the prompt needs a question")
                segments.append((f"{head}USER: {text} ASSISTANT:", "prompt"))
                head = ""
            elif role in ("gpt", "assistant"):
                if i == 0:
                    raise ValueError("the conversation must start with a user turn")
                segments.append((f" {text}{self.tokenizer.eos_token}", "answer"))
            else:
                raise ValueError(f"turn {i} has unknown role {role!r} (expected human/user or gpt/assistant)")
        if add_generation_prompt and segments[-1][1] != "prompt":
            raise ValueError("add_generation_prompt needs the conversation to end with a user turn")
        return segments

    def _encode_text(self, text: str, pools: list[int], role: str, image_index: int) -> tuple[list[int], list[bool], int]:
        """Tokenise ``text``, expanding each <image> placeholder; returns ids, input-mask flags and images used."""
        ids: list[int] = []
        pieces = text.split(IMAGE_TOKEN)
        for j, piece in enumerate(pieces):
            if piece:
                ids.extend(self.tokenizer.encode(piece, add_special_tokens=False))
            if j < len(pieces) - 1:
                if image_index >= len(pools):
                    raise ValueError(
                        f"{len(pools)} images given but the prompt has more <image> placeholders"
                    )
                ids.extend([self.image_token_id] * self.tokens_per_image(pools[image_index]))
                image_index += 1
        flags = [role == "prompt" and t == self.mask_token_id for t in ids]
        return ids, flags, image_index

    def encode_conversation(
        self, conversation: Sequence[dict], image_pools: Sequence[int] = (), add_generation_prompt: bool = False
    ) -> Encoded:
        """Token ids, labels (assistant answers only) and input-mask positions of one conversation."""
        pools = [int(p) for p in image_pools]
        ids: list[int] = [self.tokenizer.bos_token_id] if self.add_bos else []
        labels: list[int] = [-100] * len(ids)
        flags: list[bool] = [False] * len(ids)
        used = 0
        for text, role in self.conversation_segments(conversation, add_generation_prompt):
            seg, seg_flags, used = self._encode_text(text, pools, role, used)
            ids += seg
            flags += seg_flags
            labels += seg if role == "answer" else [-100] * len(seg)
        n_placeholders = sum(t.get("value", t.get("content", "")).count(IMAGE_TOKEN) for t in conversation)
        if used != len(pools):
            raise ValueError(f"{len(pools)} images given but the prompt has {n_placeholders} <image> tokens")
        return Encoded(ids, labels, flags, pools)

    def __call__(
        self,
        conversations: Sequence[dict] | Sequence[Sequence[dict]] | str,
        images: Sequence[Image.Image | np.ndarray] | None = None,
        image_pool: Sequence[int] | None = None,
        input_masks: Sequence[np.ndarray] | None = None,
        add_generation_prompt: bool = True,
        **kwargs,
    ) -> BatchFeature:
        """Prepare a batch for ``generate``: left-padded ids, pixel values, pools, input masks.

        ``conversations`` is one conversation (a list of turns), a batch of them, or a plain
        question string (one user turn). Images and pools are given in order of appearance.
        """
        if isinstance(conversations, str):
            conversations = [[{"from": "human", "value": conversations}]]
        elif conversations and isinstance(conversations[0], dict):
            conversations = [conversations]
        images = list(images or [])
        pools = list(image_pool) if image_pool is not None else [1] * len(images)
        if len(pools) != len(images):
            raise ValueError(f"{len(images)} images given but image_pool has {len(pools)} entries")
        encoded, start = [], 0
        for conv in conversations:
            n = sum(t.get("value", t.get("content", "")).count(IMAGE_TOKEN) for t in conv)
            encoded.append(self.encode_conversation(conv, pools[start : start + n], add_generation_prompt))
            start += n
        if start != len(images):
            raise ValueError(f"{len(images)} images given but the prompts have {start} <image> tokens")
        batch = pad_batch(encoded, self.tokenizer.pad_token_id, left=True)
        data = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if images:
            data["pixel_values"] = self.preprocess_images(images)
            data["image_pool"] = torch.tensor(pools, dtype=torch.long)
        n_in = int(batch["mask_input_positions"].sum())
        masks = list(input_masks or [])
        if n_in != len(masks):
            raise ValueError(f"{len(masks)} input masks given but the user turns hold {n_in} <mask> tokens")
        if masks:
            data["mask_pixel_values"] = self.preprocess_masks(masks, self.mask_input_size, "input mask").unsqueeze(1)
            data["mask_input_positions"] = batch["mask_input_positions"]
        return BatchFeature(data)

    def decode(self, token_ids, **kwargs) -> str:
        kwargs.setdefault("skip_special_tokens", False)
        text = self.tokenizer.decode(token_ids, **kwargs)
        for special in (self.tokenizer.eos_token, self.tokenizer.pad_token):
            text = text.replace(special, "")
        return text.strip()


def pad_batch(encoded: Sequence[Encoded], pad_id: int, left: bool) -> dict[str, torch.Tensor]:
    """Pad encoded conversations into tensors (left padding for generation, right for training)."""
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    flags = torch.zeros((len(encoded), width), dtype=torch.bool)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        sl = slice(width - n, width) if left else slice(0, n)
        ids[i, sl] = torch.tensor(e.input_ids)
        labels[i, sl] = torch.tensor(e.labels)
        attention[i, sl] = 1
        flags[i, sl] = torch.tensor(e.mask_input_positions, dtype=torch.bool)
    return {"input_ids": ids, "labels": labels, "attention_mask": attention, "mask_input_positions": flags}


def _to_pil(image, what: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.ndim == 2:
        return Image.fromarray(arr.astype(np.uint8))
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{what} must be an RGB image (H, W, 3), got array of shape {arr.shape}")
    if arr.shape[2] == 4:
        return Image.fromarray(arr.astype(np.uint8), "RGBA").convert("RGB")
    return Image.fromarray(arr.astype(np.uint8))
