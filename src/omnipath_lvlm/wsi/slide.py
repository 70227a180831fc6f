"""Whole-slide access: one handle over OpenSlide, tiffslide and plain images.

`open_slide(path)` tries the readers in order and returns a `Slide`:

1. OpenSlide (Aperio, Hamamatsu, MIRAX, generic tiled TIFF, DICOM, ...),
2. tiffslide, for TIFF-based slides OpenSlide refuses (e.g. WebP or JPEG 2000
   tiles, stripped TIFFs),
3. Pillow, for ordinary PNG / JPEG / TIFF images, which become one-level slides.

Coordinates are level-0 pixels, x to the right and y down; sizes are (width,
height). `Slide.read_region` reads from the coarsest pyramid level that still
gives the wanted output resolution and resizes, so reading a large area into a
small picture costs about as much as the picture. `Slide.thumbnail` reads the
smallest adequate level (or the slide's own associated thumbnail image), so its
cost does not grow with the level-0 size.

Every failure, whether opening or reading, is raised as `SlideError`, whose
message names the file, the readers tried and what each said. A handle whose
read failed is marked broken and refuses further reads. Decoding is capped at
`max_read_pixels` (64 Mpx unless told otherwise) so a hostile or huge file
cannot exhaust memory. Handles are not meant to be shared between threads.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import openslide
from PIL import Image

# Most pixels decoded for one read (a region, a thumbnail) or held by a plain image.
MAX_READ_PIXELS = 64 * 1024 * 1024
# Side, in read-level pixels, of the blocks a large read is split into (bounds peak memory).
CHUNK_SIDE = 4096
# A level whose downsample exceeds the wanted one by at most this factor still counts as adequate.
_LEVEL_TOLERANCE = 1.01
_DEFAULT_BACKGROUND = (255, 255, 255)
# TIFF ResolutionUnit names -> micrometres per unit. Inches are left out on purpose:
# 72 dpi is a common writer default, so an inch resolution is not evidence of scale.
_RESOLUTION_UNIT_UM = {"centimeter": 1e4, "millimeter": 1e3, "micrometer": 1.0}
_PILLOW_RESOLUTION_UNITS = {1: "none", 2: "inch", 3: "centimeter"}

Size = tuple[int, int]


class SlideError(Exception):
    """A slide could not be opened or read.

    `path` is the file, `message` what went wrong and `attempts` the
    (reader, message) pairs of every reader tried, in order.
    """

    def __init__(self, path: str | os.PathLike[str], message: str, attempts: list[tuple[str, str]] | None = None):
        self.path = str(path)
        self.message = message
        self.attempts = list(attempts or [])
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        if self.attempts:
            tried = "; ".join(f"{reader}: {msg}" for reader, msg in self.attempts)
            text += f" (readers tried: {tried})"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.message, self.attempts))


@dataclass(frozen=True)
class ReadInfo:
    """What the last `read_region` / `thumbnail` call actually decoded."""

    source: str  # "level" or "associated:<name>"
    level: int | None  # pyramid level read, None for an associated image
    downsample: float  # level-0 pixels per read pixel
    read_size: Size  # pixels decoded at that level (inside the slide)
    out_size: Size  # size of the returned picture
    chunks: int  # number of backend reads it took


class _Refused(Exception):
    """A reader's own reason for turning a file down (reported without a type name)."""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "no message"
    return text if isinstance(exc, _Refused) else f"{type(exc).__name__}: {text}"


# --------------------------------------------------------------------------- readers


class _Reader(Protocol):
    """The little each backend must provide; reads are always inside the level."""

    name: str
    level_dimensions: list[Size]
    level_downsamples: list[float]
    properties: dict[str, str]
    associated_names: list[str]

    def read(self, location0: Size, level: int, size: Size) -> Image.Image: ...

    def associated(self, name: str) -> Image.Image: ...

    def close(self) -> None: ...


def _string_properties(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(raw).items() if v is not None}


class _OpenSlideReader:
    name = "openslide"

    def __init__(self, path: Path):
        if openslide.OpenSlide.detect_format(str(path)) is None:
            raise _Refused("format not recognised")
        self._slide = openslide.OpenSlide(str(path))
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.properties = _string_properties(self._slide.properties)
        self.associated_names = list(self._slide.associated_images.keys())

    def read(self, location0: Size, level: int, size: Size) -> Image.Image:
        return self._slide.read_region(location0, level, size)  # RGBA

    def associated(self, name: str) -> Image.Image:
        return self._slide.associated_images[name]

    def close(self) -> None:
        self._slide.close()


class _TiffSlideReader:
    name = "tiffslide"

    def __init__(self, path: Path, max_pixels: int):
        import tiffslide  # deferred: pulls in zarr and fsspec

        self._slide = tiffslide.TiffSlide(str(path))
        try:
            self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
            self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
            self.properties = _string_properties(self._slide.properties)
            self.associated_names = list(self._slide.associated_images.keys())
            self._check_chunks(max_pixels)
        except BaseException:
            self._slide.close()
            raise

    def _check_chunks(self, max_pixels: int) -> None:
        """Refuse files whose smallest decodable unit (tile or strip) is over the cap."""
        series = self._slide.ts_tifffile.series[0]
        for level, page in enumerate(series.levels):
            chunk = page.keyframe.chunks  # e.g. (rows, cols, samples) or (rows, cols)
            samples = max(1, int(page.keyframe.samplesperpixel))
            pixels = math.prod(int(c) for c in chunk) // samples
            if pixels > max_pixels:
                raise _Refused(
                    f"level {level} is stored in blocks of {pixels} pixels, over the cap of {max_pixels}"
                )

    def read(self, location0: Size, level: int, size: Size) -> Image.Image:
        return self._slide.read_region(location0, level, size, padding=False)

    def associated(self, name: str) -> Image.Image:
        return self._slide.associated_images[name]

    def close(self) -> None:
        self._slide.close()


class _PillowReader:
    """A plain image held decoded in memory as one level."""

    name = "pillow"

    def __init__(self, path: Path, max_pixels: int):
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise _Refused(f"image has zero size {width}x{height}")
                if width * height > max_pixels:
                    raise _Refused(
                        f"image is {width}x{height} = {width * height} pixels, over the cap of "
                        f"{max_pixels} (possible decompression bomb)"
                    )
                self.properties = self._properties(img)
                img.load()
                self._image = self._to_rgb_or_rgba(img)
        self.level_dimensions = [(width, height)]
        self.level_downsamples = [1.0]
        self.associated_names: list[str] = []

    @staticmethod
    def _properties(img: Image.Image) -> dict[str, str]:
        props = {"pillow.format": str(img.format), "pillow.mode": img.mode}
        tags = getattr(img, "tag_v2", None)
        if tags is not None and 282 in tags and 283 in tags:  # TIFF XResolution, YResolution
            props["tiff.XResolution"] = str(float(tags[282]))
            props["tiff.YResolution"] = str(float(tags[283]))
            props["tiff.ResolutionUnit"] = _PILLOW_RESOLUTION_UNITS.get(int(tags.get(296, 2)), "none")
        elif img.info.get("jfif_unit") == 2 and "jfif_density" in img.info:  # JPEG density in dots/cm
            x_res, y_res = img.info["jfif_density"]
            props["tiff.XResolution"] = str(float(x_res))
            props["tiff.YResolution"] = str(float(y_res))
            props["tiff.ResolutionUnit"] = "centimeter"
        return props

    @staticmethod
    def _to_rgb_or_rgba(img: Image.Image) -> Image.Image:
        if img.mode in ("RGB", "RGBA"):
            return img.copy()
        if img.mode in ("LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
            return img.convert("RGBA")
        if img.mode in ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV"):
            return img.convert("RGB")
        raise _Refused(f"pixel mode {img.mode!r} is not supported (expected 8-bit grey, colour or palette)")

    def read(self, location0: Size, level: int, size: Size) -> Image.Image:
        x, y = location0
        return self._image.crop((x, y, x + size[0], y + size[1]))

    def associated(self, name: str) -> Image.Image:
        raise KeyError(name)

    def close(self) -> None:
        self._image.close()


# --------------------------------------------------------------------------- metadata parsing


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _mean_of(*values: float | None) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def _mpp_from_properties(props: dict[str, str]) -> float | None:
    """Micrometres per level-0 pixel as the file states it, or None."""
    mpp = _mean_of(_positive(props.get("openslide.mpp-x")), _positive(props.get("openslide.mpp-y")))
    if mpp is None:
        mpp = _positive(props.get("aperio.MPP"))
    unit = props.get("tiff.ResolutionUnit", "").lower()
    x_res, y_res = _positive(props.get("tiff.XResolution")), _positive(props.get("tiff.YResolution"))
    if mpp is None:
        mpp = _mean_of(_positive(props.get("tiffslide.mpp-x")), _positive(props.get("tiffslide.mpp-y")))
        # tiffslide also converts inch resolutions (often a 72 dpi writer default): do not trust those.
        if mpp is not None and unit not in _RESOLUTION_UNIT_UM and x_res is not None:
            if math.isclose(mpp, 25400.0 / x_res, rel_tol=1e-6) or unit in ("inch", "none"):
                mpp = None
    if mpp is None and unit in _RESOLUTION_UNIT_UM and x_res is not None:
        scale = _RESOLUTION_UNIT_UM[unit]
        mpp = _mean_of(scale / x_res, scale / y_res if y_res is not None else None)
    return mpp


def _objective_from_properties(props: dict[str, str]) -> float | None:
    for key in ("openslide.objective-power", "tiffslide.objective-power", "aperio.AppMag"):
        power = _positive(props.get(key))
        if power is not None:
            return power
    return None


def _background_from_properties(props: dict[str, str]) -> tuple[int, int, int]:
    for key in ("openslide.background-color", "tiffslide.background-color"):
        text = props.get(key, "").strip().lstrip("#")
        if len(text) == 6:
            try:
                return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
            except ValueError:
                continue
    return _DEFAULT_BACKGROUND


def _as_pair(value: Any, what: str, path: Path, positive: bool) -> Size:
    """Two integers from a pair (floats are rounded); SlideError when the contract is broken."""
    try:
        a, b = value
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        raise SlideError(path, f"{what} must be a pair of numbers, got {value!r}") from None
    if not (math.isfinite(fa) and math.isfinite(fb)):
        raise SlideError(path, f"{what} must be finite, got {value!r}")
    pair = (int(round(fa)), int(round(fb)))
    if positive and (pair[0] <= 0 or pair[1] <= 0):
        raise SlideError(path, f"{what} must be positive, got {value!r}")
    return pair


# --------------------------------------------------------------------------- the handle


class Slide:
    """An open slide or image. Use as a context manager, or call `close()`.

    Attributes: `path`, `backend` ("openslide" | "tiffslide" | "image"),
    `dimensions` (level-0 width, height), `level_count`, `level_dimensions`,
    `level_downsamples`, `mpp` (micrometres per level-0 pixel, None when the
    file does not say), `objective_power` (None when unknown),
    `background_color` (RGB), `properties` (str -> str), `associated_image_names`,
    `last_read` (a `ReadInfo` on what the last read decoded) and
    `open_attempts` (readers that refused the file before this one).
    """

    def __init__(
        self,
        path: Path,
        reader: _Reader,
        max_read_pixels: int = MAX_READ_PIXELS,
        open_attempts: list[tuple[str, str]] | None = None,
    ):
        self.path = path
        self._reader: _Reader | None = reader
        self._reader_name = reader.name
        # (reader, message) of the readers that refused the file before this one took it
        self.open_attempts: list[tuple[str, str]] = list(open_attempts or [])
        self.max_read_pixels = int(max_read_pixels)
        self.chunk_side = CHUNK_SIDE  # reads larger than this (in level pixels) go block by block
        self.backend = "image" if reader.name == "pillow" else reader.name
        self.level_dimensions: list[Size] = list(reader.level_dimensions)
        self.level_downsamples: list[float] = list(reader.level_downsamples)
        self.properties: dict[str, str] = dict(reader.properties)
        self.associated_image_names: list[str] = list(reader.associated_names)
        self.mpp = _mpp_from_properties(self.properties)
        self.objective_power = _objective_from_properties(self.properties)
        self.background_color = _background_from_properties(self.properties)
        self.last_read: ReadInfo | None = None
        self._broken: str | None = None
        self._associated_thumbnail_size: Size | None = None  # learnt when first decoded

    # ---- plain facts

    @property
    def dimensions(self) -> Size:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def closed(self) -> bool:
        return self._reader is None

    @property
    def last_read_level(self) -> int | None:
        return None if self.last_read is None else self.last_read.level

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("broken" if self._broken else "open")
        return f"Slide({str(self.path)!r}, backend={self.backend!r}, dimensions={self.dimensions}, {state})"

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file; safe to call twice."""
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:  # a handle that cannot close cleanly is gone either way
                pass

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most `downsample` (level-0 px per wanted px)."""
        best = 0
        for level, level_ds in enumerate(self.level_downsamples):
            if level_ds <= downsample * _LEVEL_TOLERANCE and level_ds >= self.level_downsamples[best]:
                best = level
        return best

    # ---- reading

    def _usable_reader(self) -> _Reader:
        if self._reader is None:
            raise SlideError(self.path, "the slide handle is closed")
        if self._broken is not None:
            raise SlideError(self.path, f"the slide handle is broken by an earlier read error ({self._broken}); open it again")
        return self._reader

    def read_region(
        self, location_level0: tuple[float, float], size_level0: tuple[float, float], out_size: tuple[int, int] | None = None
    ) -> Image.Image:
        """RGB picture of the level-0 box at `location_level0` of `size_level0`, resized to `out_size`.

        Reads from the coarsest level adequate for `out_size` (default: the
        level-0 size). Pixels outside the slide, and transparent ones, come out
        in `background_color`. Fractional coordinates are rounded to whole
        level-0 pixels.
        """
        self._usable_reader()
        location = _as_pair(location_level0, "location_level0", self.path, positive=False)
        size0 = _as_pair(size_level0, "size_level0", self.path, positive=True)
        out = size0 if out_size is None else _as_pair(out_size, "out_size", self.path, positive=True)
        downsample = min(size0[0] / out[0], size0[1] / out[1])
        return self._read(location, size0, out, self.best_level(downsample))

    def thumbnail(self, max_size: int | tuple[int, int] = 384, max_pixels: int | None = None) -> Image.Image:
        """RGB picture of the whole slide fitting in `max_size` (a side, or a (w, h) box), aspect kept.

        Decodes the smallest adequate source: a pyramid level or the slide's
        associated thumbnail. A level over `max_pixels` (default
        `max_read_pixels`) is never read; a smaller, coarser level is upsampled
        instead, and SlideError is raised when every level is over the cap.
        Never enlarges beyond the level-0 size.
        """
        self._usable_reader()
        box = (max_size, max_size) if isinstance(max_size, (int, float)) else max_size
        box_w, box_h = _as_pair(box, "max_size", self.path, positive=True)
        cap = self.max_read_pixels if max_pixels is None else int(max_pixels)
        width, height = self.dimensions
        scale = min(box_w / width, box_h / height, 1.0)
        out = (max(1, round(width * scale)), max(1, round(height * scale)))
        downsample = min(width / out[0], height / out[1])

        level = self.best_level(downsample)
        level_pixels = math.prod(self.level_dimensions[level])
        associated = self._adequate_associated_thumbnail(out, level_pixels)
        if associated is not None:
            return associated
        if level_pixels > cap:
            smaller = [lv for lv in range(self.level_count) if math.prod(self.level_dimensions[lv]) <= cap]
            if not smaller:
                raise SlideError(
                    self.path,
                    f"no level fits the pixel cap of {cap} for a thumbnail: the smallest level is "
                    f"{min(math.prod(d) for d in self.level_dimensions)} pixels",
                )
            level = min(smaller, key=lambda lv: self.level_downsamples[lv])  # finest under the cap
        return self._read((0, 0), (width, height), out, level, cap)

    def _adequate_associated_thumbnail(self, out: Size, level_pixels: int) -> Image.Image | None:
        """The slide's own thumbnail image when it is big enough, cheaper than the level and of the same shape."""
        if "thumbnail" not in self.associated_image_names:
            return None
        width, height = self.dimensions

        def adequate(size: Size) -> bool:
            same_shape = math.isclose(size[0] / size[1], width / height, rel_tol=0.02)
            big_enough = size[0] >= out[0] and size[1] >= out[1]
            return same_shape and big_enough and size[0] * size[1] < level_pixels

        if self._associated_thumbnail_size is not None and not adequate(self._associated_thumbnail_size):
            return None  # known from an earlier call: not worth decoding again
        reader = self._usable_reader()
        try:
            image = reader.associated("thumbnail")
        except Exception:  # an unreadable associated image only means we read a level instead
            self.associated_image_names.remove("thumbnail")
            return None
        self._associated_thumbnail_size = image.size
        if not adequate(image.size):
            return None
        picture = self._flatten(image).resize(out, Image.Resampling.BOX)
        self.last_read = ReadInfo("associated:thumbnail", None, width / image.width, image.size, out, 1)
        return picture

    def _flatten(self, image: Image.Image) -> Image.Image:
        """RGB, with transparency composited onto the background colour."""
        if image.mode == "RGB":
            return image
        canvas = Image.new("RGB", image.size, self.background_color)
        rgba = image.convert("RGBA")
        canvas.paste(rgba.convert("RGB"), (0, 0), rgba.getchannel("A"))
        return canvas

    def _read(self, location: Size, size0: Size, out: Size, level: int, cap: int | None = None) -> Image.Image:
        cap = self.max_read_pixels if cap is None else cap
        if out[0] * out[1] > cap:
            raise SlideError(self.path, f"out_size {out} is {out[0] * out[1]} pixels, over the cap of {cap}")
        ds = self.level_downsamples[level]
        width0, height0 = self.dimensions
        x, y = location
        inside_w = max(0, min(x + size0[0], width0) - max(x, 0))
        inside_h = max(0, min(y + size0[1], height0) - max(y, 0))
        read_pixels = math.ceil(inside_w / ds) * math.ceil(inside_h / ds)
        if read_pixels > cap:
            raise SlideError(
                self.path,
                f"reading {size0} at level {level} would decode {read_pixels} pixels, over the cap of {cap}; "
                "ask for a smaller out_size or region",
            )
        canvas = Image.new("RGB", out, self.background_color)
        sx, sy = size0[0] / out[0], size0[1] / out[1]  # level-0 px per output px
        block_w = max(1, int(self.chunk_side * ds / sx))  # output px per block, ~chunk_side read px
        block_h = max(1, int(self.chunk_side * ds / sy))
        chunks = 0
        for oy in range(0, out[1], block_h):
            for ox in range(0, out[0], block_w):
                bw, bh = min(block_w, out[0] - ox), min(block_h, out[1] - oy)
                box0 = (x + ox * sx, y + oy * sy, x + (ox + bw) * sx, y + (oy + bh) * sy)
                block, reads = self._read_block(box0, level, (bw, bh))
                chunks += reads
                if block is not None:
                    canvas.paste(block, (ox, oy))
        self.last_read = ReadInfo("level", level, ds, (math.ceil(inside_w / ds), math.ceil(inside_h / ds)), out, chunks)
        return canvas

    def _read_block(self, box0: tuple[float, float, float, float], level: int, out: Size) -> tuple[Image.Image | None, int]:
        """One output block: read the level pixels covering the level-0 box, pad outside, resize."""
        reader = self._usable_reader()
        ds = self.level_downsamples[level]
        level_w, level_h = self.level_dimensions[level]
        # box in level pixels, and the whole-pixel span that covers it
        lx0, ly0, lx1, ly1 = (v / ds for v in box0)
        px0, py0, px1, py1 = math.floor(lx0), math.floor(ly0), math.ceil(lx1), math.ceil(ly1)
        ix0, iy0, ix1, iy1 = max(px0, 0), max(py0, 0), min(px1, level_w), min(py1, level_h)
        if ix1 <= ix0 or iy1 <= iy0:  # wholly outside the slide
            return None, 0
        # ceil keeps the backend's own truncation of location0 / ds landing on ix0
        location0 = (math.ceil(ix0 * ds), math.ceil(iy0 * ds)) if level else (ix0, iy0)
        try:
            tile = reader.read(location0, level, (ix1 - ix0, iy1 - iy0))
            tile.load()
        except Exception as exc:
            self._broken = _describe(exc)
            raise SlideError(
                self.path,
                f"reading level {level} at level-0 {location0}, size {(ix1 - ix0, iy1 - iy0)} failed",
                [*self.open_attempts, (self._reader_name, self._broken)],
            ) from exc
        span = Image.new("RGB", (px1 - px0, py1 - py0), self.background_color)
        span.paste(self._flatten(tile), (ix0 - px0, iy0 - py0))
        crop = (lx0 - px0, ly0 - py0, lx1 - px0, ly1 - py0)
        shrinking = (lx1 - lx0) >= out[0]
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        return span.resize(out, resample, box=crop), 1

    def associated_image(self, name: str) -> Image.Image:
        """An associated image (label, macro, thumbnail) as RGB."""
        reader = self._usable_reader()
        if name not in self.associated_image_names:
            raise SlideError(self.path, f"no associated image {name!r}; the slide has {self.associated_image_names}")
        try:
            return self._flatten(reader.associated(name))
        except Exception as exc:
            raise SlideError(
                self.path, f"reading associated image {name!r} failed", [(self._reader_name, _describe(exc))]
            ) from exc

    def info(self, with_properties: bool = False) -> dict[str, Any]:
        """Metadata as a JSON-serialisable dict."""
        out: dict[str, Any] = {
            "path": str(self.path),
            "backend": self.backend,
            "vendor": self.properties.get("openslide.vendor") or self.properties.get("tiffslide.vendor"),
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": self.mpp,
            "objective_power": self.objective_power,
            "background_color": list(self.background_color),
            "associated_images": list(self.associated_image_names),
        }
        if with_properties:
            out["properties"] = dict(self.properties)
        return out


# --------------------------------------------------------------------------- opening


def _check_path(path: Path) -> None:
    if not path.exists():
        raise SlideError(path, "no such file")
    if path.is_dir():
        raise SlideError(path, "is a directory, not a slide file")
    if not path.is_file():
        raise SlideError(path, "is not a regular file")
    if path.stat().st_size == 0:
        raise SlideError(path, "is an empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise SlideError(path, "is not readable (permission denied)")


def _probe(reader: _Reader) -> None:
    """Decode one pixel of the coarsest level so a broken file fails at open, not later."""
    for level, (width, height) in enumerate(reader.level_dimensions):
        if width <= 0 or height <= 0:
            raise _Refused(f"level {level} has zero size {width}x{height}")
    reader.read((0, 0), len(reader.level_dimensions) - 1, (1, 1)).load()


def open_slide(path: str | os.PathLike[str], max_read_pixels: int = MAX_READ_PIXELS) -> Slide:
    """Open a whole-slide file or plain image; SlideError when no reader can."""
    path = Path(path)
    _check_path(path)
    attempts: list[tuple[str, str]] = []
    openers = (
        ("openslide", lambda: _OpenSlideReader(path)),
        ("tiffslide", lambda: _TiffSlideReader(path, max_read_pixels)),
        ("pillow", lambda: _PillowReader(path, max_read_pixels)),
    )
    for name, opener in openers:
        reader: _Reader | None = None
        try:
            reader = opener()
            _probe(reader)
        except Exception as exc:
            attempts.append((name, _describe(exc)))
            if reader is not None:
                try:
                    reader.close()
                except Exception:
                    pass
            continue
        return Slide(path, reader, max_read_pixels, attempts)
    raise SlideError(path, "no reader could open it", attempts)


def slide_info(path: str | os.PathLike[str], with_properties: bool = False) -> dict[str, Any]:
    """Metadata of one slide (opened and closed again) as a JSON-serialisable dict."""
    with open_slide(path) as slide:
        return slide.info(with_properties)
