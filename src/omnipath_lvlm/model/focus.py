"""The first LLM layer's attention from chosen query tokens, and the focus loss that trains it.

PGFC (``omnipath_lvlm.wsi.pgfc``) reads detail regions where the first layer's attention from the
last prompt token (A_last) falls on the thumbnail. A large LLM's A_last points at what the question
is about; a small one's may be nearly uniform, and then PGFC reads regions at random. When a record
says where its answer lies (boxes of the thumbnail, e.g. a slide's tumours), the focus loss trains
A_last towards those thumbnail tokens:

    loss = -log( sum of A_last over the target tokens / sum of A_last over all thumbnail tokens )

computed on the prompt PGFC scores (the question with the thumbnail alone, before any region is
added), so that training and analysis read the same attention row.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


def first_layer_attention(
    decoder: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, query_positions: torch.Tensor
) -> torch.Tensor:
    """Head-averaged attention of the decoder's first layer for some query positions: (B, Q, L).

    ``inputs_embeds`` (B, L, D); ``attention_mask`` (B, L), 1 = real token; ``query_positions``
    (B, Q). Computes only what those rows need: the first layer's input norm, keys for the whole
    sequence and queries for the query positions, rotary embeddings (positions 0..L-1; rotary
    attention depends on relative positions only, so left padding does not change it), q/k norms
    when the layer has them, grouped key/value heads repeated, then a causal softmax that honours
    the mask and a sliding window when the layer has one. Differentiable.
    """
    if inputs_embeds.ndim != 3:
        raise ValueError(f"inputs_embeds must be (B, L, D), got shape {tuple(inputs_embeds.shape)}")
    batch, length = inputs_embeds.shape[:2]
    positions = query_positions.to(device=inputs_embeds.device, dtype=torch.long)
    if positions.ndim != 2 or positions.shape[0] != batch or positions.numel() == 0:
        raise ValueError(f"query_positions must be (B={batch}, Q), got shape {tuple(positions.shape)}")
    if int(positions.min()) < 0 or int(positions.max()) >= length:
        raise ValueError(f"query positions must lie inside 0..{length - 1}, got {positions.tolist()}")
    layer = decoder.layers[0]
    attn = getattr(layer, "self_attn", None)
    if attn is None or not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "head_dim", "scaling")):
        raise ValueError(f"{type(layer).__name__} is not a Llama-family decoder layer (q_proj/k_proj/head_dim/scaling)")
    head_dim = int(attn.head_dim)
    n_query = positions.shape[1]

    hidden = layer.input_layernorm(inputs_embeds)  # (B, L, D)
    keys = attn.k_proj(hidden).view(batch, length, -1, head_dim)  # (B, L, H_kv, hd)
    picked = torch.gather(hidden, 1, positions[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, Q, D)
    queries = attn.q_proj(picked).view(batch, n_query, -1, head_dim)  # (B, Q, H, hd)
    if hasattr(attn, "k_norm") and hasattr(attn, "q_norm"):
        keys, queries = attn.k_norm(keys), attn.q_norm(queries)
    keys, queries = keys.transpose(1, 2), queries.transpose(1, 2)  # (B, H_kv, L, hd), (B, H, Q, hd)

    position_ids = torch.arange(length, device=inputs_embeds.device).unsqueeze(0)  # (1, L)
    cos, sin = decoder.rotary_emb(hidden, position_ids=position_ids)  # (1, L, hd) each
    q_cos, q_sin = cos[0][positions], sin[0][positions]  # (B, Q, hd)
    queries, _ = apply_rotary_pos_emb(queries, queries, q_cos, q_sin)
    _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
    n_heads, n_kv = queries.shape[1], keys.shape[1]
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv} key/value heads")
    keys = keys.repeat_interleave(n_heads // n_kv, dim=1)  # (B, H, L, hd)

    logits = torch.matmul(queries, keys.transpose(2, 3)).float() * float(attn.scaling)  # (B, H, Q, L)
    key_index = torch.arange(length, device=inputs_embeds.device)
    allowed = key_index[None, None, :] <= positions[:, :, None]  # (B, Q, L) causal
    # Qwen2-style layers carry their own window (None on full-attention layers); Mistral reads its config
    window = attn.sliding_window if hasattr(attn, "sliding_window") else getattr(getattr(attn, "config", None),
                                                                                  "sliding_window", None)
    if window:
        allowed &= key_index[None, None, :] > positions[:, :, None] - int(window)
    if attention_mask is not None:
        mask = attention_mask.to(device=inputs_embeds.device).bool()
        if mask.shape != (batch, length):
            raise ValueError(f"attention_mask must be (B, L) = {(batch, length)}, got {tuple(mask.shape)}")
        allowed &= mask[:, None, :]
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # (B, H, Q, L); a fully masked row gives zeros
    return weights.mean(dim=1)  # (B, Q, L)


def focus_loss(image_attention: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over rows of -log(share of each row's attention that falls on its target tokens).

    ``image_attention`` (B, N) A_last over one image's tokens (any scale: rows are renormalised);
    ``targets`` (B, N) bool, at least one True per row.
    """
    if image_attention.shape != targets.shape:
        raise ValueError(f"attention {tuple(image_attention.shape)} and targets {tuple(targets.shape)} differ in shape")
    if not bool(targets.any(dim=1).all()):
        raise ValueError("every focus target row needs at least one target token")
    total = image_attention.sum(dim=1).clamp_min(eps)
    on_target = (image_attention * targets.to(image_attention.dtype)).sum(dim=1)
    return -torch.log(on_target / total + eps).mean()
