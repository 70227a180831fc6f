"""Where does the last prompt token look? A_last mass on tissue and on tumour, before and after training.

For every test slide of the SynthPath export, the first LLM layer's last-token attention over
the thumbnail tokens (the paper's A_last, as PGFC uses it) is split into the share that falls on
tissue tokens and on tumour tokens (cells touched by a "Tumor" polygon of the slide's GeoJSON),
and compared with those tokens' share of the grid (what uniform attention would give).

    .venv/bin/python scripts/attention_stats.py MODEL_DIR [MODEL_DIR ...] --out runs/repro/attention_stats.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

QUESTION = "What cancer subtype is shown in this image?"


def tumour_grid(geojson: Path, slide_size: tuple[int, int], grid: int) -> np.ndarray:
    """(grid, grid) bool: cells that a Tumor polygon touches (thumbnail stretched to square)."""
    from omnipath_lvlm.data.geometry import polygons_to_mask

    scale = 8  # rasterise finely, then mark touched cells
    w, h = slide_size
    polys = []
    for feature in json.loads(geojson.read_text())["features"]:
        if feature["properties"]["classification"]["name"] != "Tumor":
            continue
        ring = np.asarray(feature["geometry"]["coordinates"][0], dtype=float)
        polys.append(np.stack([ring[:, 0] / w * grid * scale, ring[:, 1] / h * grid * scale], axis=1))
    fine = polygons_to_mask(polys, (grid * scale, grid * scale)) if polys else np.zeros((grid * scale,) * 2, bool)
    return fine.reshape(grid, scale, grid, scale).any(axis=(1, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="saved model folders")
    parser.add_argument("--data", default="data/synthpath/test-slide.jsonl")
    parser.add_argument("--out", default="runs/repro/attention_stats.json")
    args = parser.parse_args()
    from omnipath_lvlm.data.records import read_jsonl
    from omnipath_lvlm.wsi.pgfc import PGFCConfig
    from omnipath_lvlm.wsi.pipeline import load_engine

    records, _ = read_jsonl(args.data)
    slides = sorted({r.slide for r in records})
    results = {}
    for model in args.models:
        engine = load_engine(model)
        rows = []
        for slide in slides:
            a = engine.analyze(slide, QUESTION, pgfc=PGFCConfig(mode="none"), max_new_tokens=1)
            scores = a.score_grid / a.score_grid.sum()
            tumour = tumour_grid(Path(slide).with_suffix(".geojson"), a.slide_size, scores.shape[0])
            rows.append({"slide": Path(slide).name,
                         "tissue_share_of_attention": float(scores[a.tissue_grid].sum()),
                         "tissue_share_of_grid": float(a.tissue_grid.mean()),
                         "tumour_share_of_attention": float(scores[tumour].sum()),
                         "tumour_share_of_grid": float(tumour.mean())})
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "slide"}
        results[Path(model).name if Path(model).name != "final" else Path(model).parent.name] = {"mean": mean, "slides": rows}
        print(model, json.dumps(mean))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
