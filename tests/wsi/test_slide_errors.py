"""Every kind of bad file or bad call ends as one readable SlideError, and the process carries on."""
from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tifffile
from PIL import Image

from omnipath_lvlm.wsi.slide import SlideError, open_slide

READERS = ("openslide", "tiffslide", "pillow")


def png_bytes(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height RGB, with whatever pixel data is given."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b"")


def noise_image(width=256, height=192) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def write_tiled_jpeg(path: Path) -> Path:
    """A 1024 x 768 Aperio-style pyramid (levels 1 and 1/4) of flat colour."""
    base = np.full((768, 1024, 3), (230, 200, 220), np.uint8)
    desc = "Aperio Image Library v12.0.0\r\n1024x768 [0,0 1024x768] (256x256) JPEG/RGB Q=90|AppMag = 20|MPP = 0.5"
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, tile=(256, 256), compression="jpeg", photometric="rgb", description=desc, metadata=None)
        tw.write(np.ascontiguousarray(base[::4, ::4]), tile=(256, 256), compression="jpeg", photometric="rgb",
                 description=desc, metadata=None)
    return path


# ---------------------------------------------------------------- files that must not open or read


def missing(tmp: Path) -> Path:
    return tmp / "nowhere" / "slide.svs"


def directory(tmp: Path) -> Path:
    (tmp / "folder.svs").mkdir()
    return tmp / "folder.svs"


def empty(tmp: Path) -> Path:
    (tmp / "empty.svs").write_bytes(b"")
    return tmp / "empty.svs"


def random_bytes(tmp: Path) -> Path:
    (tmp / "random.svs").write_bytes(np.random.default_rng(0).bytes(50_000))
    return tmp / "random.svs"


def tiff_magic_then_garbage(tmp: Path) -> Path:
    (tmp / "garbage.tif").write_bytes(b"II*\x00" + struct.pack("<I", 8) + np.random.default_rng(2).bytes(4000))
    return tmp / "garbage.tif"


def truncated_pyramid(tmp: Path) -> Path:
    data = write_tiled_jpeg(tmp / "whole.svs").read_bytes()
    (tmp / "truncated.svs").write_bytes(data[: len(data) // 2])
    return tmp / "truncated.svs"


def truncated_jpeg(tmp: Path) -> Path:
    noise_image().save(tmp / "whole.jpg", quality=90)
    data = (tmp / "whole.jpg").read_bytes()
    (tmp / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return tmp / "truncated.jpg"


def truncated_png(tmp: Path) -> Path:
    noise_image().save(tmp / "whole.png")
    data = (tmp / "whole.png").read_bytes()
    (tmp / "truncated.png").write_bytes(data[: len(data) // 2])
    return tmp / "truncated.png"


def text_file(tmp: Path) -> Path:
    (tmp / "notes.png").write_text("this is not a picture\n" * 50)
    return tmp / "notes.png"


def zip_file(tmp: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(tmp / "archive.svs", "w") as archive:
        archive.writestr("inner.txt", "hello")
    return tmp / "archive.svs"


def zero_size_png(tmp: Path) -> Path:
    (tmp / "zero.png").write_bytes(png_bytes(0, 10))
    return tmp / "zero.png"


def bomb_png(tmp: Path) -> Path:
    (tmp / "bomb.png").write_bytes(png_bytes(60_000, 60_000, b"\x00" * 1000))
    return tmp / "bomb.png"


def over_cap_png(tmp: Path) -> Path:
    # 9000 x 9000 = 81 Mpx: under Pillow's own bomb limits, over the 64 Mpx read cap.
    (tmp / "large.png").write_bytes(png_bytes(9000, 9000, b"\x00" * 1000))
    return tmp / "large.png"


def sixteen_bit_png(tmp: Path) -> Path:
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(tmp / "deep.png")
    return tmp / "deep.png"


BAD_FILES: list[Callable[[Path], Path]] = [
    missing, directory, empty, random_bytes, tiff_magic_then_garbage, truncated_pyramid, truncated_jpeg,
    truncated_png, text_file, zip_file, zero_size_png, bomb_png, over_cap_png, sixteen_bit_png,
]


def open_and_read(path: Path) -> None:
    with open_slide(path) as slide:
        slide.thumbnail(128)
        width, height = slide.dimensions
        slide.read_region((0, 0), (width, height), (max(1, width // 8), max(1, height // 8)))


@pytest.mark.parametrize("make", BAD_FILES, ids=lambda f: f.__name__)
def test_bad_file_raises_slide_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(SlideError) as caught:
        open_and_read(path)
    error = caught.value
    text = str(error)
    assert error.path == str(path) and str(path) in text
    assert error.message and error.message in text
    for reader, message in error.attempts:
        assert reader in READERS and message
        assert f"{reader}: {message}" in text
    if make not in (missing, directory, empty, truncated_pyramid):
        # refused at open: every reader had its say
        assert [reader for reader, _ in error.attempts] == list(READERS)


def test_path_problems_say_what_is_wrong(tmp_path):
    for make, words in ((missing, "no such file"), (directory, "directory"), (empty, "empty")):
        with pytest.raises(SlideError, match=words):
            open_slide(make(tmp_path))


def test_bomb_messages_mention_the_size(tmp_path):
    with pytest.raises(SlideError, match="81000000 pixels, over the cap"):
        open_slide(over_cap_png(tmp_path))


# ---------------------------------------------------------------- bad reads on a good file


@pytest.fixture()
def pyramid(tmp_path) -> Path:
    return write_tiled_jpeg(tmp_path / "good.svs")


def test_corrupt_tile_breaks_the_handle(tmp_path, pyramid):
    with tifffile.TiffFile(pyramid) as tf:
        page = tf.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]  # tile row 1, column 1 of 4
    with open(pyramid, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\x00" * count)
    slide = open_slide(pyramid)  # the probe reads the coarse level, which is intact
    assert slide.backend == "openslide"
    slide.read_region((0, 0), (200, 200))  # an intact tile
    with pytest.raises(SlideError, match="failed") as caught:
        slide.read_region((300, 300), (100, 100))  # inside the zeroed tile
    assert caught.value.attempts and caught.value.attempts[0][0] == "openslide"
    assert str(pyramid) in str(caught.value)
    with pytest.raises(SlideError, match="broken"):
        slide.read_region((0, 0), (200, 200))  # even intact tiles are refused now
    with pytest.raises(SlideError, match="broken"):
        slide.thumbnail(64)
    slide.close()
    with open_slide(pyramid) as fresh:  # a new handle works again where the data is intact
        assert fresh.read_region((0, 0), (200, 200)).size == (200, 200)


@pytest.mark.parametrize(
    ("location", "size", "out_size"),
    [
        ((0, 0), (0, 10), None),
        ((0, 0), (10, -5), None),
        ((0, 0), (10, 10), (0, 4)),
        ((math.nan, 0), (10, 10), None),
        ((0, 0), (math.inf, 10), None),
        ((0, 0), "big", None),
        ((0,), (10, 10), None),
        ((-5000, -5000), (-1, -1), None),
    ],
)
def test_invalid_read_arguments(pyramid, location, size, out_size):
    with open_slide(pyramid) as slide:
        with pytest.raises(SlideError) as caught:
            slide.read_region(location, size, out_size)
        assert str(pyramid) in str(caught.value)
        assert slide.read_region((0, 0), (16, 16)).size == (16, 16)  # bad arguments do not break the handle


def test_read_over_pixel_cap_is_refused(pyramid):
    with open_slide(pyramid, max_read_pixels=50_000) as slide:
        with pytest.raises(SlideError, match="over the cap"):
            slide.read_region((0, 0), (1024, 768))  # level 0, 786,432 px
        with pytest.raises(SlideError, match="over the cap"):
            slide.read_region((0, 0), (512, 512), (300, 300))  # 90,000 output px
        assert slide.read_region((0, 0), (1024, 768), (256, 192)).size == (256, 192)  # level 1 fits


def test_thumbnail_refused_when_every_level_is_over_cap(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.full((400, 500, 3), 200, np.uint8), tile=(128, 128))
    with open_slide(tmp_path / "flat.tif", max_read_pixels=50_000) as slide:
        assert slide.level_count == 1
        with pytest.raises(SlideError, match="no level fits the pixel cap"):
            slide.thumbnail(64)


def test_closed_handle_refuses_reads(pyramid):
    slide = open_slide(pyramid)
    slide.close()
    slide.close()  # twice is fine
    for call in (lambda: slide.read_region((0, 0), (8, 8)), lambda: slide.thumbnail(32)):
        with pytest.raises(SlideError, match="closed"):
            call()


def test_missing_associated_image(pyramid):
    with open_slide(pyramid) as slide:
        with pytest.raises(SlideError, match="no associated image 'label'"):
            slide.associated_image("label")
