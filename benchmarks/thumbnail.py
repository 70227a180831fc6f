"""Thumbnail cost against slide size: it should not grow with the level-0 size.

Writes two synthetic Aperio-style pyramidal TIFFs (JPEG tiles, levels every 4x
down to about 512 px) tile by tile into a temporary folder, so memory stays
small, then times `open_slide(...).thumbnail(384)` on each, a fresh handle per
repeat so no tile cache helps. Prints both times side by side and their ratio
(target: at most 1.5).

    python benchmarks/thumbnail.py [--sizes 8192 32768] [--repeats 5] [--keep DIR]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from omnipath_lvlm.wsi.slide import open_slide

TILE = 256
BACKGROUND = np.array((240, 238, 242), np.uint8)
TISSUE = np.array((205, 120, 170), np.uint8)


def tile_at(level_x: int, level_y: int, downsample: int, width: int, height: int) -> np.ndarray:
    """One (TILE, TILE, 3) tile of a level: a checkerboard of 4096 px tissue squares on glass."""
    xs = (level_x + np.arange(TILE)) * downsample  # level-0 x of each column
    ys = (level_y + np.arange(TILE)) * downsample
    tissue = ((ys[:, None] // 4096 + xs[None, :] // 4096) % 2 == 0) & (ys[:, None] < height) & (xs[None, :] < width)
    return np.where(tissue[:, :, None], TISSUE, BACKGROUND)


def level_tiles(width: int, height: int, downsample: int) -> Iterator[np.ndarray]:
    level_w, level_h = width // downsample, height // downsample
    for ty in range(0, level_h, TILE):
        for tx in range(0, level_w, TILE):
            yield tile_at(tx, ty, downsample, width, height)


def write_pyramid(path: Path, side: int) -> Path:
    """A side x side Aperio-style pyramid; every level written tile by tile."""
    desc = f"Aperio Image Library v12.0.0\r\n{side}x{side} [0,0 {side}x{side}] ({TILE}x{TILE}) JPEG/RGB Q=80|AppMag = 40|MPP = 0.25"
    downsample = 1
    with tifffile.TiffWriter(path, bigtiff=side > 40000) as tw:
        while True:
            level_side = side // downsample
            tw.write(
                level_tiles(side, side, downsample),
                shape=(level_side, level_side, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="rgb",
                description=desc,
                metadata=None,
            )
            if level_side <= 512:
                break
            downsample *= 4
    return path


def time_thumbnail(path: Path, repeats: int) -> tuple[float, int | None, tuple[int, int]]:
    """Median seconds for open + thumbnail(384), the level it read, and the thumbnail size."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with open_slide(path) as slide:
            picture = slide.thumbnail(384)
            level = slide.last_read_level
        times.append(time.perf_counter() - start)
    return statistics.median(times), level, picture.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(8192, 32768), help="level-0 sides of the two slides")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="write the slides here instead of a temp dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for side in args.sizes:
            start = time.perf_counter()
            path = write_pyramid(folder / f"synthetic_{side}.svs", side)
            written = time.perf_counter() - start
            seconds, level, size = time_thumbnail(path, args.repeats)
            with open_slide(path) as slide:
                levels = slide.level_dimensions
            rows.append((side, seconds, level, size, levels, path.stat().st_size, written))

    print(f"{'slide':>13} {'file MB':>8} {'write s':>8} {'levels':>7} {'read level':>10} {'thumbnail':>10} {'open+thumb ms':>14}")
    for side, seconds, level, size, levels, nbytes, written in rows:
        print(
            f"{side:>6}x{side:<6} {nbytes / 1e6:>8.1f} {written:>8.1f} {len(levels):>7} "
            f"{str(level) + ' ' + 'x'.join(map(str, levels[level])):>10} {'x'.join(map(str, size)):>10} {seconds * 1e3:>14.2f}"
        )
    ratio = rows[1][1] / rows[0][1]
    verdict = "ok" if ratio <= 1.5 else "TOO SLOW"
    print(f"ratio {rows[1][0]} / {rows[0][0]}: {ratio:.2f} (target <= 1.5: {verdict})")


if __name__ == "__main__":
    main()
