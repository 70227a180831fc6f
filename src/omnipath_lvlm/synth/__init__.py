"""SynthPath: a procedural, seeded histology world with exact ground truth.

* :func:`generate_patch` - H&E-like patches (384 um field of view) with nucleus
  instances, structures, region masks and the answers of every patch task;
* :func:`write_slide` / :func:`render_region` - pyramidal JPEG-tiled TIFF slides
  (OpenSlide / tiffslide readable, MPP in the metadata) with QuPath GeoJSON
  annotations and slide labels, rendered tile by tile in bounded memory;
* :func:`export_dataset` - train / val / test instruction JSONL on disjoint seeds.

The names are imported lazily so that ``omnipath --help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = (
    ("generate_patch", "patches"),
    ("SynthPatch", "patches"),
    ("SynthObject", "patches"),
    ("write_slide", "slide"),
    ("render_region", "slide"),
    ("read_truth", "slide"),
    ("SlideTruth", "slide"),
    ("SlideParams", "slide"),
    ("export_dataset", "export"),
)
__all__ = [name for name, _ in _EXPORTS]


def __getattr__(name: str) -> Any:
    for export, module in _EXPORTS:
        if export == name:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
