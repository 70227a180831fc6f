"""Training throughput of the `nano` preset on CPU, with and without gradient checkpointing.

    .venv/bin/python benchmarks/train_throughput.py [--steps 4] [--batch 2] [--preset nano] [--lanes | --precision]

Each setting runs in its own process (so peak memory is its own): the model and AdamW are
built by the training recipe (`build_model`, `build_optimizer`), one warm-up step runs, then
`--steps` timed forward/backward/optimiser steps on a batch of image + question + answer
(+ output `<mask>`) conversations. Printed side by side: samples/s, seconds per step and
the peak resident memory of the process and its growth over the training steps
(activations, gradients, optimiser state).

``--lanes`` instead compares two ways of using the machine's cores for two independent runs:
one process using every core, against one process per core side by side (each with one
thread), measured in turn in this run. Printed: samples/s of both together, and their ratio
(scripts/reproduce.py trains the ablation models in two lanes).

``--precision`` instead compares fp32 with bf16 autocast (what `train.precision: bf16` gives on a
CPU through accelerate), measured in turn in this run: samples/s of each and their ratio. On a CPU
with AMX or AVX512-bf16 the bf16 matrix products run natively; elsewhere they are emulated.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _measure(preset: str, checkpointing: bool, steps: int, batch_size: int, queue, threads: int | None = None,
             precision: str = "fp32") -> None:
    from contextlib import nullcontext

    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)

    from omnipath_lvlm.processing import pad_batch
    from omnipath_lvlm.train.config import config_from_dict
    from omnipath_lvlm.train.recipe import build_model, build_optimizer

    torch.manual_seed(0)
    config = config_from_dict({"model": {"preset": preset, "gradient_checkpointing": checkpointing}})
    model, processor = build_model(config)
    optimizer = build_optimizer(model, config)
    model.train()
    answer = "The tissue shows clear cell carcinoma with a nested growth pattern. <mask>"
    conversation = [{"from": "human", "value": "<image>\nDescribe the tissue and segment the tumour."},
                    {"from": "gpt", "value": answer}]
    encoded = [processor.encode_conversation(conversation, image_pools=[1]) for _ in range(batch_size)]
    padded = pad_batch(encoded, processor.tokenizer.pad_token_id, left=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (processor.max_image_size,) * 2 + (3,), dtype=np.uint8) for _ in range(batch_size)]
    size = processor.mask_target_size
    targets = torch.zeros(batch_size, size, size)
    targets[:, : size // 2] = 1
    batch = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"], "labels": padded["labels"],
             "pixel_values": processor.preprocess_images(images), "image_pool": torch.ones(batch_size, dtype=torch.long),
             "mask_targets": targets}

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step() -> float:
        with autocast:
            out = model(**batch, use_cache=False)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.item()

    before = _peak_rss_mib()  # model, optimiser and batch built; no step taken yet
    step()  # warm-up (allocations, lazy initialisation)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    queue.put({"checkpointing": checkpointing, "precision": precision, "samples_per_s": steps * batch_size / elapsed,
               "s_per_step": elapsed / steps, "peak_rss_mib": _peak_rss_mib(),
               "rss_growth_mib": _peak_rss_mib() - before, "tokens": int(padded["input_ids"].shape[1]),
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lanes", action="store_true", help="one process on every core vs one process per core")
    parser.add_argument("--precision", action="store_true", help="fp32 vs bf16 autocast")
    args = parser.parse_args(argv)
    context = mp.get_context("spawn")
    if args.lanes:
        return lanes(context, args)
    if args.precision:
        return precisions(context, args)
    rows = []
    for checkpointing in (False, True):
        queue = context.Queue()
        process = context.Process(target=_measure, args=(args.preset, checkpointing, args.steps, args.batch, queue))
        process.start()
        rows.append(queue.get())
        process.join()
    first = rows[0]
    print(f"preset {args.preset}: {first['params_m']:.1f} M parameters, batch {args.batch} x {first['tokens']} tokens, "
          f"{args.steps} timed steps on CPU (fp32)")
    print(f"{'gradient checkpointing':<24}{'samples/s':>10}{'s/step':>9}{'peak RSS MiB':>14}{'growth MiB':>12}")
    for row in rows:
        name = "on" if row["checkpointing"] else "off"
        print(f"{name:<24}{row['samples_per_s']:>10.2f}{row['s_per_step']:>9.2f}{row['peak_rss_mib']:>14.0f}"
              f"{row['rss_growth_mib']:>12.0f}")
    return 0


def precisions(context, args) -> int:
    """Samples/s in fp32, then with bf16 autocast, each in its own process using every core."""
    rows = []
    for precision in ("fp32", "bf16"):
        queue = context.Queue()
        process = context.Process(target=_measure, args=(args.preset, False, args.steps, args.batch, queue, None, precision))
        process.start()
        rows.append(queue.get())
        process.join()
    print(f"preset {args.preset}: batch {args.batch} x {rows[0]['tokens']} tokens, {args.steps} timed steps, CPU")
    print(f"{'precision':<12}{'samples/s':>10}{'s/step':>9}{'peak RSS MiB':>14}")
    for row in rows:
        print(f"{row['precision']:<12}{row['samples_per_s']:>10.2f}{row['s_per_step']:>9.2f}{row['peak_rss_mib']:>14.0f}")
    print(f"bf16 / fp32: {rows[1]['samples_per_s'] / rows[0]['samples_per_s']:.2f}x the samples per second")
    return 0


def lanes(context, args) -> int:
    """Samples/s of one process on every core, then of one one-thread process per core at once."""
    import os

    import torch

    cores = os.cpu_count() or 1
    rates = {}
    for name, processes, threads in (("one process, all cores", 1, torch.get_num_threads()), (f"{cores} lanes, 1 thread each", cores, 1)):
        queue = context.Queue()
        workers = [context.Process(target=_measure, args=(args.preset, False, args.steps, args.batch, queue, threads))
                   for _ in range(processes)]
        tic = time.perf_counter()
        for w in workers:
            w.start()
        rows = [queue.get() for _ in workers]
        for w in workers:
            w.join()
        rates[name] = (sum(r["samples_per_s"] for r in rows), time.perf_counter() - tic, threads)
    print(f"preset {args.preset}: batch {args.batch}, {args.steps} timed steps per process, {cores} cores, CPU fp32")
    print(f"{'setting':<28}{'threads/process':>16}{'samples/s (all)':>17}{'wall s':>8}")
    for name, (rate, wall, threads) in rates.items():
        print(f"{name:<28}{threads:>16}{rate:>17.2f}{wall:>8.1f}")
    (one, both) = (v[0] for v in rates.values())
    print(f"lanes / one process: {both / one:.2f}x the samples per second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
