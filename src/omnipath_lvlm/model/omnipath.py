"""OmniPathForConditionalGeneration: vision tower -> projector -> causal LLM, plus `<mask>` I/O.

The path of one batch (transformers v5 Llava convention)::

    input_ids (B, L)            each image already expanded into N image-token ids by the processor
    pixel_values (N_img, 3, S, S)    -> vision tower (N_img, g*g, F) -> per-image pooling
      (or vision_features (N_img, g*g, F): a frozen tower's output, cached)
                                     -> projector (N_tok, D) -> replaces the image-token embeddings
    mask_pixel_values (K_in, 1, H, W) -> mask encoder (K_in, D) -> replaces prompt `<mask>` embeddings
    LLM -> hidden (B, L, D) -> logits (B, L, V)
    output `<mask>` tokens: the hidden state that predicts each one -> mask head with the
    sample's first image features -> mask logits (K_out, 1, 4g, 4g)

With UNI off and scales (1,) this is exactly LLaVA-1.5 with a SigLIP tower (see ``from_llava``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings
from transformers.utils import ModelOutput

from omnipath_lvlm.config import OmniPathConfig, pooled_grid_side
from omnipath_lvlm.model.focus import first_layer_attention, focus_loss
from omnipath_lvlm.model.mask import MaskEncoder, build_mask_head, mask_losses
from omnipath_lvlm.model.projector import MultiModalProjector
from omnipath_lvlm.model.vision import build_vision_tower


@dataclass
class EncodedImages:
    """Images encoded once and reusable across forwards (PGFC encodes the thumbnail once).

    ``features``: fused vision features before pooling, (N_img, g*g, F) (the mask decoder's input).
    ``tokens``: projected LLM inputs of all images, pooled per image and concatenated, (N_tok, D).
    ``tokens_per_image``: how many of ``tokens`` belong to each image, in order.
    """

    features: torch.Tensor
    tokens: torch.Tensor
    tokens_per_image: list[int] = field(default_factory=list)

    @staticmethod
    def cat(parts: list["EncodedImages"]) -> "EncodedImages":
        return EncodedImages(
            features=torch.cat([p.features for p in parts]),
            tokens=torch.cat([p.tokens for p in parts]),
            tokens_per_image=[n for p in parts for n in p.tokens_per_image],
        )


@dataclass
class OmniPathOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    lm_loss: torch.Tensor | None = None
    mask_bce: torch.Tensor | None = None
    mask_dice: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None  # (K_out, 1, 4g, 4g) logits
    encoded_images: EncodedImages | None = None
    focus_loss: torch.Tensor | None = None  # not part of `loss`: the training recipe weighs it


@dataclass
class GenerationResult:
    sequences: torch.Tensor  # (B, L_prompt + L_new)
    new_tokens: torch.Tensor  # (B, L_new)
    masks: list[list[torch.Tensor]]  # per sample, one (4g, 4g) logit map per generated <mask>

    def new_masks(self, index: int, mask_token_id: int) -> list[torch.Tensor]:
        """Sample ``index``'s masks of the ``<mask>`` tokens it generated (the last of its maps): (4g, 4g) bool, CPU."""
        n_new = int((self.new_tokens[index] == mask_token_id).sum())
        maps = self.masks[index][len(self.masks[index]) - n_new:] if n_new else []
        return [(m.float() > 0).cpu() for m in maps]


class OmniPathPreTrainedModel(PreTrainedModel):
    config_class = OmniPathConfig
    config: OmniPathConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["LlamaDecoderLayer", "Qwen2DecoderLayer", "MistralDecoderLayer", "SiglipEncoderLayer", "Block"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # non-persistent buffers are not in checkpoints: rebuild them after loading on the meta device
        if isinstance(module, SiglipVisionEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


class OmniPathForConditionalGeneration(OmniPathPreTrainedModel, GenerationMixin):
    """OmniPath: SigLIP + UNI (MSFF) -> MLP projector -> causal LLM, with `<mask>` encoder/decoder."""

    def __init__(self, config: OmniPathConfig):
        super().__init__(config)
        # the setter propagates the chosen attention implementation to every nested sub-config
        config._attn_implementation = config._attn_implementation
        hidden = config.text_config.hidden_size
        self.vision_tower = build_vision_tower(config.vision_config)
        self.multi_modal_projector = MultiModalProjector(config.projector_config, config.vision_config.feature_dim, hidden)
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.mask_encoder = MaskEncoder(config.mask_config, hidden)
        self.mask_head = build_mask_head(config.mask_config, config.vision_config.feature_dim, hidden)
        self.post_init()

    # ------------------------------------------------------------------ plumbing
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    @property
    def decoder(self) -> nn.Module:
        """The LLM's transformer stack (embeddings, layers, norm) without the LM head."""
        return self.language_model.get_decoder()

    # ------------------------------------------------------------------ images
    def encode_images(
        self,
        pixel_values: torch.Tensor | None = None,
        image_pool: torch.Tensor | list[int] | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> EncodedImages:
        """Encode (N_img, 3, S, S) images; ``image_pool[i] > 1`` average-pools image i's token grid.

        ``vision_features`` (N_img, g*g, F), the vision tower's output computed earlier (a frozen
        tower's cache, see ``omnipath_lvlm.train.feature_cache``), replaces ``pixel_values``.
        """
        if (pixel_values is None) == (vision_features is None):
            raise ValueError("give exactly one of pixel_values and vision_features")
        if vision_features is not None:
            g2 = self.config.vision_config.grid_size ** 2
            if vision_features.dim() != 3 or vision_features.shape[1] != g2:
                raise ValueError(f"vision_features must be (N_img, {g2}, F) as the vision tower returns them, "
                                 f"got {tuple(vision_features.shape)}")
            features = vision_features.to(self.dtype)
        else:
            features = self.vision_tower(pixel_values.to(self.dtype))  # (N_img, g*g, F)
        n_img = features.shape[0]
        pools = [1] * n_img if image_pool is None else [int(p) for p in image_pool]
        if len(pools) != n_img:
            raise ValueError(f"{n_img} images given but image_pool has {len(pools)} entries")
        g = self.config.vision_config.grid_size
        grids = []
        for i, pool in enumerate(pools):
            feat = features[i]
            if pool != 1:
                side = pooled_grid_side(g, pool)
                grid = feat.transpose(0, 1).reshape(1, -1, g, g)
                feat = F.adaptive_avg_pool2d(grid, side).flatten(2)[0].transpose(0, 1)  # (side*side, F)
            grids.append(feat)
        counts = [x.shape[0] for x in grids]
        tokens = self.multi_modal_projector(torch.cat(grids))  # (N_tok, D)
        return EncodedImages(features=features, tokens=tokens, tokens_per_image=counts)

    def _first_image_of_each_sample(self, input_ids: torch.Tensor, tokens_per_image: list[int]) -> list[int | None]:
        """Index of the first image whose tokens appear in each sample (None when it has none)."""
        per_sample = (input_ids == self.config.image_token_id).sum(1).tolist()
        out, img, = [], 0
        for count in per_sample:
            out.append(img if count else None)
            while count > 0:
                if img >= len(tokens_per_image):
                    raise ValueError("the prompt has more <image> tokens than the images provide")
                count -= tokens_per_image[img]
                img += 1
            if count < 0:
                raise ValueError("an image's tokens are split across two samples of the batch")
        return out

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_pool: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        encoded_images: EncodedImages | None = None,
        mask_pixel_values: torch.Tensor | None = None,
        mask_input_positions: torch.Tensor | None = None,
        mask_targets: torch.Tensor | None = None,
        focus_input_ids: torch.LongTensor | None = None,
        focus_attention_mask: torch.Tensor | None = None,
        focus_samples: torch.LongTensor | None = None,
        focus_targets: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> OmniPathOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if input_ids is not None and input_ids.shape[-1] == 0:
            raise ValueError("the prompt is empty: input_ids has no tokens")
        prefill = cache is None or cache.get_seq_length() == 0
        if prefill and encoded_images is None and (pixel_values is not None or vision_features is not None):
            encoded_images = self.encode_images(pixel_values, image_pool, vision_features)
        if inputs_embeds is None:
            if prefill:
                inputs_embeds = self.embed_inputs(input_ids, encoded_images, mask_pixel_values, mask_input_positions)
            else:
                inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)

        need_hidden = bool(output_hidden_states) or mask_targets is not None
        outputs = self.decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=bool(output_hidden_states),
            **kwargs,
        )
        hidden = outputs.last_hidden_state  # (B, L, D)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.language_model.lm_head(hidden[:, keep, :])

        loss = lm_loss = bce = dice = pred_masks = None
        if labels is not None:
            lm_loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=self.config.ignore_index,
            )
            loss = lm_loss
        if need_hidden and mask_targets is not None:
            if input_ids is None or encoded_images is None:
                raise ValueError("mask targets need input_ids and images (the mask decoder reads the image features)")
            pred_masks = self.decode_masks(input_ids, hidden, encoded_images, mask_input_positions)
            bce, dice = mask_losses(pred_masks, mask_targets)
            mc = self.config.mask_config
            mask_loss = mc.bce_weight * bce + mc.dice_weight * dice
            loss = mask_loss if loss is None else loss + mask_loss
        focus = None
        if focus_input_ids is not None:
            if input_ids is None or encoded_images is None or focus_targets is None or focus_samples is None:
                raise ValueError("focus prompts need input_ids, images, focus_samples and focus_targets")
            focus = self.compute_focus_loss(input_ids, encoded_images, focus_input_ids, focus_attention_mask, focus_samples,
                                    focus_targets)
        return OmniPathOutput(
            loss=loss,
            logits=logits,
            cache=getattr(outputs, "cache", None),
            hidden_states=outputs.hidden_states if output_hidden_states else None,
            lm_loss=lm_loss,
            mask_bce=bce,
            mask_dice=dice,
            pred_masks=pred_masks,
            encoded_images=encoded_images,
            focus_loss=focus,
        )

    def compute_focus_loss(
        self,
        input_ids: torch.LongTensor,
        encoded_images: EncodedImages,
        focus_input_ids: torch.LongTensor,
        focus_attention_mask: torch.Tensor | None,
        focus_samples: torch.LongTensor,
        focus_targets: torch.Tensor,
    ) -> torch.Tensor:
        """The focus loss (``omnipath_lvlm.model.focus``) of PGFC's prompts for some samples of the batch.

        ``focus_input_ids`` (B_f, L_f), left-padded: each the question with its sample's first image
        (the thumbnail) alone, ending with the generation prompt; ``focus_samples`` (B_f,): which
        sample of ``input_ids`` each belongs to; ``focus_targets`` (B_f, N): that image's target tokens.
        """
        first = self._first_image_of_each_sample(input_ids, encoded_images.tokens_per_image)
        per_image = encoded_images.tokens.split(encoded_images.tokens_per_image)  # (n_i, D) each
        parts, counts = [], []
        for sample in focus_samples.tolist():
            image = first[sample]
            if image is None:
                raise ValueError(f"sample {sample} has a focus target but no image")
            parts.append(per_image[image])
            counts.append(encoded_images.tokens_per_image[image])
        thumbnails = EncodedImages(features=encoded_images.features[:0], tokens=torch.cat(parts), tokens_per_image=counts)
        embeds = self.embed_inputs(focus_input_ids, thumbnails)  # (B_f, L_f, D)
        rows, length = focus_input_ids.shape
        last = torch.full((rows, 1), length - 1, dtype=torch.long, device=embeds.device)  # left padding: the last token
        attention = first_layer_attention(self.decoder, embeds, focus_attention_mask, last)[:, 0]  # (B_f, L_f)
        is_image = focus_input_ids == self.config.image_token_id  # (B_f, L_f)
        if len(set(counts)) != 1 or focus_targets.shape != (rows, counts[0]):
            raise ValueError(f"focus targets {tuple(focus_targets.shape)} must cover each thumbnail's {counts} tokens")
        return focus_loss(attention[is_image].view(rows, counts[0]), focus_targets.bool())

    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        encoded_images: EncodedImages | None = None,
        mask_pixel_values: torch.Tensor | None = None,
        mask_input_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The LLM's input embeddings (B, L, D): token embeddings with image tokens replaced by
        projected image features and prompt ``<mask>`` tokens by mask-encoder embeddings."""
        inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
        n_image_tokens = int((input_ids == self.config.image_token_id).sum())
        n_features = 0 if encoded_images is None else encoded_images.tokens.shape[0]
        if n_image_tokens != n_features:
            n_images = 0 if encoded_images is None else len(encoded_images.tokens_per_image)
            raise ValueError(
                f"{n_images} images give {n_features} image features but the prompt has {n_image_tokens} "
                f"image tokens (did the processor expand every <image> placeholder?)"
            )
        if n_features:
            where = (input_ids == self.config.image_token_id).unsqueeze(-1).expand_as(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(where, encoded_images.tokens.to(inputs_embeds.dtype))
        if mask_pixel_values is not None:
            inputs_embeds = self._insert_input_masks(input_ids, inputs_embeds, mask_pixel_values, mask_input_positions)
        return inputs_embeds

    def _insert_input_masks(self, input_ids, inputs_embeds, mask_pixel_values, mask_input_positions):
        if mask_input_positions is None:
            raise ValueError("mask_pixel_values given without mask_input_positions (which <mask> tokens they fill)")
        positions = mask_input_positions.bool()
        if positions.shape != input_ids.shape:
            raise ValueError(
                f"mask_input_positions has shape {tuple(positions.shape)} but input_ids has {tuple(input_ids.shape)}"
            )
        if bool((input_ids[positions] != self.config.mask_token_id).any()):
            raise ValueError("mask_input_positions marks a token that is not <mask>")
        n_pos, n_masks = int(positions.sum()), mask_pixel_values.shape[0]
        if n_pos != n_masks:
            raise ValueError(f"{n_masks} input masks given but the prompt marks {n_pos} <mask> tokens for them")
        embeddings = self.mask_encoder(mask_pixel_values)  # (K_in, D)
        where = positions.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(where, embeddings.to(inputs_embeds.dtype))

    def output_mask_positions(self, input_ids: torch.Tensor, mask_input_positions: torch.Tensor | None = None):
        """(batch, position) of each hidden state that predicts an output `<mask>` token, in order.

        Output `<mask>` tokens are the ones not filled by an input mask. The hidden state at
        position p - 1 predicts the token at p, which is what generation sees when it emits one.
        """
        is_mask = input_ids == self.config.mask_token_id
        if mask_input_positions is not None:
            is_mask = is_mask & ~mask_input_positions.bool()
        is_mask[:, 0] = False  # nothing predicts the first token
        b, p = is_mask.nonzero(as_tuple=True)
        return b, p - 1

    def decode_masks(self, input_ids, hidden, encoded_images: EncodedImages, mask_input_positions=None) -> torch.Tensor:
        """Mask logits (K_out, 1, 4g, 4g) for every output `<mask>` in ``input_ids``."""
        b, p = self.output_mask_positions(input_ids, mask_input_positions)
        first = self._first_image_of_each_sample(input_ids, encoded_images.tokens_per_image)
        missing = [int(i) for i in b.tolist() if first[i] is None]
        if missing:
            raise ValueError(f"samples {sorted(set(missing))} ask for a <mask> output but have no image to segment")
        image_index = torch.tensor([first[i] for i in b.tolist()], dtype=torch.long, device=hidden.device)
        return self.mask_head(encoded_images.features[image_index], hidden[b, p])

    # ------------------------------------------------------------------ generation
    def prepare_inputs_for_generation(self, input_ids, cache=None, is_first_iteration=False, **kwargs):
        # images and input masks are consumed by the prefill only
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in ("pixel_values", "image_pool", "vision_features", "encoded_images", "mask_pixel_values",
                        "mask_input_positions"):
                kwargs.pop(key, None)
        return super().prepare_inputs_for_generation(
            input_ids, cache=cache, is_first_iteration=is_first_iteration, **kwargs
        )

    @torch.no_grad()
    def generate_with_masks(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_pool: torch.Tensor | None = None,
        encoded_images: EncodedImages | None = None,
        mask_pixel_values: torch.Tensor | None = None,
        mask_input_positions: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> GenerationResult:
        """``generate`` (KV cache; greedy or sampling) that also returns a mask per generated `<mask>`.

        Images are encoded once; when the answer holds `<mask>` tokens, one extra forward over
        the full sequence reads the hidden states that produced them and decodes the masks.
        """
        if encoded_images is None and pixel_values is not None:
            encoded_images = self.encode_images(pixel_values, image_pool)
        extra = {} if mask_pixel_values is None else {
            "mask_pixel_values": mask_pixel_values, "mask_input_positions": mask_input_positions}
        sequences = self.generate(
            input_ids=input_ids, attention_mask=attention_mask, encoded_images=encoded_images, **extra, **generate_kwargs
        )
        prompt_len = input_ids.shape[1]
        new_tokens = sequences[:, prompt_len:]
        masks: list[list[torch.Tensor]] = [[] for _ in range(sequences.shape[0])]
        if bool((new_tokens == self.config.mask_token_id).any()) and encoded_images is not None:
            full_attention = None
            if attention_mask is not None:
                pad_id = generate_kwargs.get("pad_token_id", self.generation_config.pad_token_id)
                new_attention = torch.ones_like(new_tokens) if pad_id is None else (new_tokens != pad_id).long()
                full_attention = torch.cat([attention_mask, new_attention.to(attention_mask.dtype)], dim=1)
            positions = None
            if mask_input_positions is not None:
                positions = torch.cat([mask_input_positions.bool(), torch.zeros_like(new_tokens, dtype=torch.bool)], 1)
            out = self(
                input_ids=sequences, attention_mask=full_attention, encoded_images=encoded_images,
                output_hidden_states=True, use_cache=False, **({} if positions is None else {
                    "mask_pixel_values": mask_pixel_values, "mask_input_positions": positions}),
            )
            hidden = out.hidden_states[-1]
            b, _ = self.output_mask_positions(sequences, positions)
            logits = self.decode_masks(sequences, hidden, encoded_images, positions)
            for i, sample in enumerate(b.tolist()):
                masks[sample].append(logits[i, 0])
        return GenerationResult(sequences=sequences, new_tokens=new_tokens, masks=masks)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_llava(cls, llava, *, mask_token_id: int | None = None, mask_config: dict | None = None):
        """An OmniPath with UNI off and scales (1,) holding the weights of a SigLIP Llava.

        ``mask_token_id`` defaults to the last id of the vocabulary.
        """
        from omnipath_lvlm.model.loading import from_llava

        if mask_token_id is None:
            mask_token_id = llava.config.text_config.vocab_size - 1
        return from_llava(cls, llava, mask_token_id=mask_token_id, mask_config=mask_config)

    @classmethod
    def from_components(cls, *, llava, siglip, uni=None, preset: str = "omnipath-7b", **overrides):
        """The paper's starting point from local llava-hf / SigLIP / UNI checkpoints: (model, tokenizer)."""
        from omnipath_lvlm.model.loading import from_components

        return from_components(cls, llava=llava, siglip=siglip, uni=uni, preset=preset, **overrides)


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModelForImageTextToText`` know the ``omnipath`` model type."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    AutoConfig.register("omnipath", OmniPathConfig, exist_ok=True)
    AutoModelForImageTextToText.register(OmniPathConfig, OmniPathForConditionalGeneration, exist_ok=True)


register_auto_classes()
