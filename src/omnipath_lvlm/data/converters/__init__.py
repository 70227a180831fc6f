"""Converters from public annotation formats to instruction records.

Every converter is ``convert_<source>(path, out_dir, rng_seed=0, tasks=None, **options) -> list[Record]``
in its own module; :data:`CONVERTERS` names them by the source kind used on the
command line (``omnipath data build KIND PATH``). Modules are imported on demand.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType

# source kind -> (module, function, one-line description)
CONVERTERS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "monuseg": ("monuseg", "convert_monuseg", "MoNuSeg images + Aperio XML nucleus outlines"),
    "pannuke": ("pannuke", "convert_pannuke", "PanNuke fold (images.npy, masks.npy, types.npy)"),
    "nucls": ("nucls", "convert_nucls", "NuCLS per-FOV CSV tables + RGB images"),
    "conic": ("conic", "convert_conic", "CoNIC images.npy + labels.npy (instance, class)"),
    "tnbc": ("tnbc", "convert_tnbc", "TNBC-style Slide_XX/GT_XX (or images/masks) binary masks"),
    "coco": ("coco", "convert_coco", "COCO instance JSON (needs --task)"),
    "geojson": ("geojson", "convert_geojson", "QuPath GeoJSON slide annotations"),
    "asap": ("asap", "convert_asap", "ASAP XML slide annotations (CAMELYON)"),
    "folder": ("classification_folder", "convert_classification_folder", "root/CLASS/*.png (needs --task)"),
    "csv": ("classification_csv", "convert_classification_csv", "CSV image,label[,organ] (needs --task)"),
})


def get_converter(kind: str) -> Callable[..., list]:
    """The converter function of a source kind; KeyError listing the known kinds otherwise."""
    try:
        module, function, _ = CONVERTERS[kind]
    except KeyError:
        raise KeyError(f"unknown source kind {kind!r}; known kinds: {', '.join(CONVERTERS)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)
