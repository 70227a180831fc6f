"""A frozen vision tower's output, computed once per image and reused in every later epoch.

With ``optim.freeze`` naming the whole vision tower, its output for an image never changes during a
run, yet a plain loop recomputes it at every sighting of every image: the tower is most of a step's
cost for records with many images (a slide's thumbnail plus its detail regions). With
``data.cache_vision_features: true`` the recipe passes each batch's ``pixel_values`` through
:class:`VisionFeatureCache` and hands the model ``vision_features`` instead; the model then pools,
projects and trains exactly as it would on the tower's fresh output.

Images are keyed by their preprocessed pixels (a BLAKE2 digest of the tensor's bytes, shape and
dtype), so a key can only match the same input, whatever file or record it came from. Features are
computed with the tower in eval mode, without gradients, and kept on the CPU.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes: int = 0


def image_key(image: torch.Tensor) -> str:
    """A digest that names one preprocessed image (3, S, S) by its values, shape and dtype."""
    data = image.detach().contiguous().cpu()
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{tuple(data.shape)}|{data.dtype}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class VisionFeatureCache:
    """``cache(pixel_values)`` -> the tower's output (N_img, g*g, F), computing only unseen images.

    ``tower`` must not train: a cache of a tower that changes would hand the model stale features,
    so the constructor refuses a tower with any parameter that requires grad.
    """

    def __init__(self, tower: nn.Module):
        trainable = [name for name, p in tower.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(f"the vision feature cache needs a frozen vision tower, but {len(trainable)} of its "
                             f"parameters train (first: {trainable[0]}); freeze vision_tower.siglip and "
                             f"vision_tower.uni in optim.freeze")
        self.tower = tower
        self.store: dict[str, torch.Tensor] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self.store)

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor, store: torch.Tensor | None = None) -> torch.Tensor:
        """(N_img, 3, S, S) -> (N_img, g*g, F) on ``pixel_values``' device.

        ``store`` (N_img,) bool: which images to keep (default all). An image that will not be seen
        again (a region shifted at random) is encoded for this call only, so the cache does not grow.
        """
        if store is not None and len(store) != len(pixel_values):
            raise ValueError(f"{len(pixel_values)} images given but store marks {len(store)}")
        keys = [image_key(image) for image in pixel_values]
        first: dict[str, int] = {}  # each unseen key -> its first row, in order
        for row, k in enumerate(keys):
            if k not in self.store:
                first.setdefault(k, row)
        unseen = list(first)
        kept = {k for row, k in enumerate(keys) if k in first and (store is None or bool(store[row]))}
        passing: dict[str, torch.Tensor] = {}  # this call's features of images not kept
        if unseen:
            rows = pixel_values[list(first.values())]  # (N_new, 3, S, S)
            was_training = self.tower.training
            self.tower.eval()
            try:
                dtype = next(self.tower.parameters()).dtype
                features = self.tower(rows.to(dtype))  # (N_new, g*g, F)
            finally:
                self.tower.train(was_training)
            for k, f in zip(unseen, features):
                stored = f.detach().to("cpu", copy=True)
                if k in kept:
                    self.store[k] = stored
                    self.stats.bytes += stored.numel() * stored.element_size()
                else:
                    passing[k] = stored
        self.stats.misses += len(unseen)
        self.stats.hits += len(keys) - len(unseen)
        return torch.stack([self.store[k] if k in self.store else passing[k] for k in keys]).to(pixel_values.device)
