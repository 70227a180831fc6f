"""Is the slide label in what the LLM is shown? Linear probes on image features of SynthPath slides.

For every slide of two folders of exported SynthPath slides, this takes the view the LLM gets
(the thumbnail, and the first detail crop, which the exporter centres on a tumour), encodes it
with a model's vision tower and projector exactly as ``encode_images`` does (detail crops pooled
by ``--region-pool``), averages the tokens, and fits a logistic regression on the first folder's
slides that is scored on the second folder's slides. Baseline features: simple pixel statistics
(per-channel mean and spread, and the share of dark, nucleus-coloured pixels).

A label a probe reads well on held-out slides is in the features: if the LLM still does not
answer it, the bottleneck is the language side or the training signal, not the encoder.

    .venv/bin/python scripts/feature_probe.py runs/repro/untrained-nano models/omnipath-nano \
        --fit data/synthpath-train-slides-1 --score data/synthpath-train-slides-2 --out runs/repro/feature_probe.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

VIEWS = ("thumbnail", "detail0")  # the slide's thumbnail, its first (tumour) detail crop
LABELS = ("organ", "grade", "architecture")


@dataclass(frozen=True)
class SlideViews:
    labels: dict[str, str]
    images: dict[str, Image.Image]  # view -> RGB image


def architecture(organ: str, subtype: str) -> str:
    """The tumour architecture a subtype name stands for (the organ-independent part of the subtype)."""
    from omnipath_lvlm.synth.taxonomy import SUBTYPES

    by_name = {name: arch for arch, name in SUBTYPES[organ].items()}
    if subtype not in by_name:
        raise ValueError(f"{subtype!r} is not a subtype of {organ}: {sorted(by_name)}")
    return by_name[subtype]


def load_slides(folder: Path) -> list[SlideViews]:
    """Labels and views of every exported slide under ``folder/slides`` (sorted by name)."""
    out = []
    for meta in sorted((folder / "slides").glob("slide-*.json")):
        labels = json.loads(meta.read_text())["labels"]
        labels = {**labels, "architecture": architecture(labels["organ"], labels["subtype"])}
        stem = meta.with_suffix("")
        images = {v: Image.open(f"{stem}-{v}.png").convert("RGB") for v in VIEWS}
        out.append(SlideViews(labels, images))
    if not out:
        raise FileNotFoundError(f"no exported slides (slide-*.json) under {folder / 'slides'}")
    return out


def pixel_features(image: Image.Image) -> NDArray[np.float64]:
    """Per-channel mean and standard deviation, and the share of dark (haematoxylin-like) pixels."""
    a = np.asarray(image, np.float64) / 255.0  # (H, W, 3)
    dark = (a.mean(-1) < 0.55).mean()
    return np.concatenate([a.mean((0, 1)), a.std((0, 1)), [dark]])


def model_features(model_dir: Path, images: list[Image.Image], pools: list[int]) -> NDArray[np.float64]:
    """Mean projected token of each image (pooled by ``pools[i]``), as the LLM receives it (N, D)."""
    import torch

    from omnipath_lvlm.model import OmniPathForConditionalGeneration
    from omnipath_lvlm.processing import OmniPathProcessor

    model = OmniPathForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = OmniPathProcessor.from_pretrained(model_dir)
    feats = []
    with torch.no_grad():
        for start in range(0, len(images), 16):
            chunk = images[start : start + 16]
            encoded = model.encode_images(processor.preprocess_images(chunk), pools[start : start + 16])
            feats += [t.mean(0).numpy() for t in encoded.tokens.split(encoded.tokens_per_image)]
    return np.stack(feats).astype(np.float64)


def probe(train_x: NDArray, train_y: list[str], test_x: NDArray, test_y: list[str]) -> dict[str, float]:
    """Held-out accuracy of a standardised logistic regression, and of the commonest training label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    commonest = max(sorted(set(train_y)), key=train_y.count)
    if len(set(train_y)) == 1:  # nothing to separate: the probe can only answer the one label it saw
        predicted = np.asarray([commonest] * len(test_y))
    else:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        predicted = clf.fit(train_x, train_y).predict(test_x)
    return {"accuracy": float((predicted == np.asarray(test_y)).mean()),
            "constant": float(np.mean([y == commonest for y in test_y])), "n_fit": len(train_y), "n_score": len(test_y)}


def run(models: list[Path], fit: Path, score: Path, region_pool: int) -> dict:
    sets = {"fit": load_slides(fit), "score": load_slides(score)}
    # every (set, slide, view) image in one list, so that each model is loaded and run once
    keys = [(name, i, view) for name, slides in sets.items() for i in range(len(slides)) for view in VIEWS]
    images = [sets[name][i].images[view] for name, i, view in keys]
    pools = [1 if view == "thumbnail" else region_pool for _, _, view in keys]
    results: dict = {}
    for source in ["pixels", *map(str, models)]:
        feats = (np.stack([pixel_features(image) for image in images]) if source == "pixels"
                 else model_features(Path(source), images, pools))
        for view in VIEWS:
            x = {name: feats[[k for k, key in enumerate(keys) if key[0] == name and key[2] == view]] for name in sets}
            for label in LABELS:
                y = {name: [s.labels[label] for s in slides] for name, slides in sets.items()}
                results.setdefault(source, {}).setdefault(view, {})[label] = probe(x["fit"], y["fit"], x["score"], y["score"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="saved model folders")
    parser.add_argument("--fit", type=Path, required=True, help="export folder whose slides fit the probes")
    parser.add_argument("--score", type=Path, required=True, help="export folder whose slides score them")
    parser.add_argument("--region-pool", type=int, default=3, help="pooling of detail crops (training's region_pool)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args.models, args.fit, args.score, args.region_pool)
    print(f"{'features':<40} {'view':<10} " + " ".join(f"{l:>22}" for l in LABELS))
    for source, views in results.items():
        for view, labels in views.items():
            cells = [f"{r['accuracy'] * 100:5.1f} (const {r['constant'] * 100:4.1f})" for r in labels.values()]
            print(f"{source[-40:]:<40} {view:<10} " + " ".join(f"{c:>22}" for c in cells))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
