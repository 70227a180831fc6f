"""Streaming writer of pyramidal, JPEG-tiled, Aperio-style TIFF files.

The caller supplies level-0 pixels one tile-row strip at a time; the writer
encodes the level-0 tiles straight into the TIFF while it halves each strip
into the next levels (2 x 2 means, cascading), encodes their tiles as soon as a
full tile row exists and spills the JPEG bytes to a temporary file.  After
level 0 it writes a small thumbnail page, then copies the spilled tiles of
each lower level.  Memory is a few strips, whatever the slide size.

File layout (what OpenSlide's "aperio" driver and tiffslide's / tifffile's SVS
reader expect): page 0 = level 0 (tiled, ImageDescription starting with
``Aperio`` and carrying ``|MPP = ...|AppMag = ...``), page 1 = stripped
thumbnail, pages 2.. = lower levels (tiled, not marked "reduced").  Both
OpenSlide and tiffslide report the MPP as ``openslide.mpp-x`` /
``tiffslide.mpp-x``.  Nothing time-dependent is written, so equal pixels give
equal bytes.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import tifffile
from numpy.typing import NDArray

SOFTWARE = "omnipath-lvlm synthpath"
THUMBNAIL_MAX = 1024  # longest side of the thumbnail page


def halve(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """2 x 2 mean (rounded) of an (H, W, 3) uint8 image with even H and W -> (H/2, W/2, 3)."""
    if img.shape[0] % 2 or img.shape[1] % 2:
        raise ValueError(f"halve needs even dimensions, got {img.shape[:2]}")
    # cv2's area interpolation at exactly 1/2 is the rounded mean (a + b + c + d + 2) >> 2
    return cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)


def level_dimensions(width: int, height: int, levels: int) -> list[tuple[int, int]]:
    """(width, height) of each level: each level is the previous one halved, rounded up."""
    dims = [(width, height)]
    for _ in range(levels - 1):
        w, h = dims[-1]
        dims.append(((w + 1) // 2, (h + 1) // 2))
    return dims


def padded_size(width: int, height: int, tile: int, levels: int) -> tuple[int, int]:
    """Level-0 size to render so that every level's tiles come from whole 2 x 2 blocks."""
    block = tile * 2 ** (levels - 1)
    return -(-width // block) * block, -(-height // block) * block


def _encode(tile: NDArray[np.uint8], quality: int) -> bytes:
    return imagecodecs.jpeg_encode(tile, level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2))


class _Spill:
    """JPEG tiles of the lower levels, parked in a temporary file until their page is written."""

    def __init__(self, directory: Path, levels: int) -> None:
        self.file = tempfile.TemporaryFile(dir=directory, prefix=".synthpath-spill-")
        self.index: list[list[tuple[int, int]]] = [[] for _ in range(levels)]

    def put(self, level: int, data: bytes) -> None:
        offset = self.file.seek(0, 2)
        self.file.write(data)
        self.index[level].append((offset, len(data)))

    def tiles(self, level: int) -> Iterator[bytes]:
        for offset, length in self.index[level]:
            self.file.seek(offset)
            yield self.file.read(length)

    def close(self) -> None:
        self.file.close()


def write_aperio_pyramid(
    path: str | Path,
    width: int,
    height: int,
    render_rows: Callable[[int, int], NDArray[np.uint8]],
    *,
    mpp: float,
    tile: int = 256,
    levels: int = 4,
    quality: int = 90,
    background: tuple[int, int, int] = (255, 255, 255),
    title: str = "synthpath",
) -> list[tuple[int, int]]:
    """Write the pyramid and return the (width, height) of each level.

    ``render_rows(y0, h)`` must return the level-0 rows [y0, y0 + h) over the
    full padded width (see :func:`padded_size`), shape (h, padded_width, 3).
    """
    if tile % 16:
        raise ValueError(f"tile size must be a multiple of 16 for JPEG 4:2:0 tiles, got {tile}")
    if levels < 1:
        raise ValueError(f"a pyramid needs at least one level, got {levels}")
    path = Path(path)
    dims = level_dimensions(width, height, levels)
    pw, ph = padded_size(width, height, tile, levels)
    tiles_x = [-(-w // tile) for w, _ in dims]
    tiles_y = [-(-h // tile) for _, h in dims]
    bg_tile = np.empty((tile, tile, 3), np.uint8)
    bg_tile[:] = background
    bg_bytes = _encode(bg_tile, quality)
    mag = 10.0 / mpp
    spill = _Spill(path.parent, levels)
    # the thumbnail page: the last level, halved further until it fits in THUMBNAIL_MAX pixels
    extra = max(0, int(np.ceil(np.log2(max(dims[-1]) / THUMBNAIL_MAX)))) if max(dims[-1]) > THUMBNAIL_MAX else 0
    thumb_rows: list[NDArray[np.uint8]] = []

    def keep_for_thumbnail(rows: NDArray[np.uint8]) -> None:
        for _ in range(extra):
            rows = halve(rows)
        thumb_rows.append(rows)

    pending: list[NDArray[np.uint8] | None] = [None] * levels  # rows of each level awaiting a full tile row
    done_rows = [0] * levels  # tile rows emitted per level

    def encode_row(level: int, strip: NDArray[np.uint8]) -> Iterator[bytes]:
        for tx in range(tiles_x[level]):
            t = strip[:, tx * tile : (tx + 1) * tile]
            yield bg_bytes if (t == bg_tile).all() else _encode(np.ascontiguousarray(t), quality)

    def push(level: int, rows: NDArray[np.uint8]) -> None:
        """Add rows to a lower level; emit its complete tile rows and cascade."""
        if level == levels - 1:
            keep_for_thumbnail(rows)
        buf = rows if pending[level] is None else np.concatenate([pending[level], rows])
        while buf.shape[0] >= tile:
            strip, buf = buf[:tile], buf[tile:]
            if done_rows[level] < tiles_y[level]:
                for data in encode_row(level, strip):
                    spill.put(level, data)
            done_rows[level] += 1
            if level + 1 < levels:
                push(level + 1, halve(strip))
        pending[level] = buf if buf.shape[0] else None

    def level0_strip(ty: int) -> NDArray[np.uint8]:
        """Render level-0 tile row `ty` and feed the lower levels (before its tiles are handed out)."""
        strip = render_rows(ty * tile, tile)
        if strip.shape != (tile, pw, 3):
            raise ValueError(f"render_rows returned {strip.shape}, expected {(tile, pw, 3)}")
        if levels > 1:
            push(1, halve(strip))
        else:
            keep_for_thumbnail(strip)
        return strip

    def level0_tiles() -> Iterator[bytes]:
        for ty in range(tiles_y[0]):
            yield from encode_row(0, level0_strip(ty))

    description = (
        f"Aperio Image Library v10.0.0\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
        f"JPEG/RGB Q={quality}|AppMag = {mag:g}|MPP = {mpp:.6g}|Filename = {title}"
    )
    common = dict(tile=(tile, tile), photometric="rgb", compression="jpeg", subsampling=(2, 2),
                  metadata=None, software=SOFTWARE, dtype=np.uint8)
    bigtiff = width * height * 3 > 12 * 2**30  # JPEG tiles of this many raw bytes could pass 4 GiB
    try:
        with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
            tw.write(level0_tiles(), shape=(height, width, 3), description=description, **common)
            for ty in range(tiles_y[0], ph // tile):  # padding rows still feed the lower levels
                level0_strip(ty)
            tw_, th_ = -(-dims[-1][0] // 2**extra), -(-dims[-1][1] // 2**extra)
            thumb = np.ascontiguousarray(np.concatenate(thumb_rows)[:th_, :tw_])
            tw.write(
                thumb, photometric="rgb", compression="jpeg", compressionargs={"level": quality}, subsampling=(2, 2),
                rowsperstrip=64,
                metadata=None, software=SOFTWARE,
                description=f"Aperio Image Library v10.0.0\r\n{width}x{height} -> {thumb.shape[1]}x{thumb.shape[0]} - ",
            )
            for level in range(1, levels):
                w, h = dims[level]
                tw.write(
                    spill.tiles(level), shape=(h, w, 3),
                    description=f"Aperio Image Library v10.0.0\r\n{width}x{height} -> {w}x{h} - |AppMag = {mag:g}|MPP = {mpp * 2**level:.6g}",
                    **common,
                )
    finally:
        spill.close()
    return dims
