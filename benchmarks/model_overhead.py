"""OmniPath's overhead over transformers' Llava on the same weights (UNI off, scales (1,)).

Both models hold identical weights (``from_llava``); forward and greedy generation are timed
interleaved, several rounds, in one process, and the ratio of medians is printed.
Target: OmniPath / Llava <= 1.05.

    .venv/bin/python benchmarks/model_overhead.py [--rounds 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

from omnipath_lvlm.model import OmniPathForConditionalGeneration


def build():
    torch.manual_seed(0)
    vision = SiglipVisionConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=6, num_attention_heads=3, patch_size=16, image_size=192)
    text = LlamaConfig(vocab_size=2048, hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6, pad_token_id=0)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=4,
                         vision_feature_select_strategy="full", vision_feature_layer=-2)
    config._attn_implementation = "sdpa"
    llava = LlavaForConditionalGeneration(config).eval()
    omni = OmniPathForConditionalGeneration.from_llava(llava, mask_token_id=5).eval()
    ids = torch.randint(10, 2000, (1, 200))
    ids[0, 10:154] = 4  # 12x12 image tokens
    return llava, omni, ids, torch.randn(1, 3, 192, 192)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    llava, omni, ids, px = build()
    with torch.no_grad():
        assert (llava(input_ids=ids, pixel_values=px).logits - omni(input_ids=ids, pixel_values=px).logits).abs().max() < 1e-4
    results = {"forward": ([], []), "generate": ([], [])}
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        for _ in range(args.rounds):
            for i, model in enumerate((llava, omni)):
                results["forward"][i].append(timed(lambda: model(input_ids=ids, pixel_values=px)))
                results["generate"][i].append(timed(lambda: model.generate(input_ids=ids, pixel_values=px, **gen)))
    print(f"{'':10} {'Llava s':>10} {'OmniPath s':>11} {'ratio':>7}  (median of {args.rounds}, interleaved, same weights)")
    for name, (a, b) in results.items():
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:10} {ma:10.4f} {mb:11.4f} {mb / ma:7.3f}  target <= 1.05: {'ok' if mb / ma <= 1.05 else 'MISSED'}")


if __name__ == "__main__":
    main()
