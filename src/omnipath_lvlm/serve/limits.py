"""Server settings and the safety checks every request passes.

`ServeSettings` holds the limits; the functions and the middleware below
enforce them:

- `BodySizeLimit`: request bodies over ``max_body_bytes`` get 413, whether the
  size is announced in Content-Length or only found while reading a chunked body.
- `check_api_key`: when an API key is configured, ``Authorization: Bearer KEY``
  is required (401 otherwise), compared in constant time.
- `resolve_slide_path`: a slide id is a plain file name inside the slide folder;
  ids with path separators or ``..`` get 400, and files (or symlinks) that
  resolve outside the folder get 404.
- `image_url_policy` / `open_image_checked`: only inline ``data:image/...;base64``
  images are decoded; http(s) URLs are refused unless their host is on the
  allow-list; images whose header announces more than ``max_image_pixels``
  pixels are refused (413) before any pixel is decoded.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omnipath_lvlm.serve.errors import ApiError

# Formats PIL may parse from a request; anything else is refused unread.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and options of one server (defaults are safe for a workstation)."""

    host: str = "127.0.0.1"  # loopback unless the operator opts in to a wider bind
    port: int = 8000
    api_key: str | None = None  # when set, every /v1 and /slides request needs "Authorization: Bearer <key>"
    max_body_bytes: int = 20 * 1024 * 1024  # request bodies above this get 413
    max_image_pixels: int = 50_000_000  # width*height of an uploaded image; above gets 413 before decoding
    max_tokens: int = 1024  # requests asking for more new tokens are capped to this
    default_max_tokens: int = 512  # when the request does not say
    max_concurrent: int = 1  # engine calls running at once
    max_queue: int = 8  # requests waiting for the engine; more than running+waiting get 429
    allowed_image_hosts: tuple[str, ...] = ()  # hosts from which http(s) image URLs may be fetched
    remote_timeout_s: float = 10.0  # when fetching an allowed remote image
    slide_cache_size: int = 16  # open slide handles kept
    tile_size: int = 254  # Deep Zoom tile edge (plus overlap on each side)
    tile_overlap: int = 1
    tile_quality: int = 80  # JPEG quality of Deep Zoom tiles

    def __post_init__(self) -> None:
        positive = ("max_body_bytes", "max_image_pixels", "max_tokens", "default_max_tokens", "max_concurrent",
                    "slide_cache_size", "tile_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"ServeSettings.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError(f"ServeSettings.max_queue must be 0 or more, got {self.max_queue}")
        if self.tile_overlap < 0 or not 1 <= self.tile_quality <= 100:
            raise ValueError("ServeSettings.tile_overlap must be >= 0 and tile_quality within 1..100")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServeSettings.port must be within 0..65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("ServeSettings.api_key must be None or a non-empty string")


class BodySizeLimit:
    """ASGI middleware: refuse request bodies larger than ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> ApiError:
        return ApiError(413, f"request body is larger than the server's limit of {self.max_bytes} bytes",
                        code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send, int(declared) if declared.isdigit() else None)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()  # rendered by the app's ApiError handler
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, declared: int | None) -> None:
        # Read (and drop) a modest part of the body so the client gets to read the
        # 413 instead of a reset connection; larger bodies are cut off.
        budget = 4 * self.max_bytes
        more = declared is not None and declared <= budget
        while more:
            message = await receive()
            budget -= len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False) and budget > 0
        body = json.dumps(self._error().body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def check_api_key(authorization: str | None, api_key: str | None) -> None:
    """Raise 401 unless no key is configured or the header carries ``Bearer <api_key>``."""
    if api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "this server needs an API key: send 'Authorization: Bearer <key>'",
                       code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(401, "the API key is not valid for this server", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


def resolve_slide_path(slides_dir: Path, slide_id: str) -> Path:
    """The file that `slide_id` names inside `slides_dir` (400 for a malformed id, 404 if absent or outside)."""
    if not slide_id or "\x00" in slide_id or "/" in slide_id or "\\" in slide_id or slide_id in {".", ".."}:
        raise ApiError(400, f"slide id {slide_id!r} must be a plain file name inside the slide folder "
                            "(no '/', '\\' or '..')", code="invalid_slide_id", param="slide_id")
    if slide_id.startswith("."):
        raise ApiError(404, f"no slide {slide_id!r} in the slide folder", code="slide_not_found", param="slide_id")
    root = slides_dir.resolve()
    path = (root / slide_id).resolve()
    if path.parent != root or not path.is_file():  # a symlink may point elsewhere: only the folder itself counts
        raise ApiError(404, f"no slide {slide_id!r} in the slide folder", code="slide_not_found", param="slide_id")
    return path


def image_url_policy(url: str, allowed_hosts: tuple[str, ...]) -> str:
    """Classify an image URL as ``"data"`` or ``"remote"``; refuse everything else with 400."""
    if url[:5].lower() == "data:":
        return "data"
    parts = urlsplit(url)
    if parts.scheme.lower() in {"http", "https"}:
        host = (parts.hostname or "").lower()
        if host and host in {h.lower() for h in allowed_hosts}:
            return "remote"
        raise ApiError(400, f"image URLs from {host or 'this host'!r} are not fetched by this server; send the "
                            "image inline as a data:image/...;base64 URL", code="remote_url_not_allowed",
                       param="image_url")
    raise ApiError(400, f"image URL scheme {parts.scheme or url[:16]!r} is not supported; send a "
                        "data:image/...;base64 URL", code="unsupported_image_url", param="image_url")


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 ``data:image/...`` URL (400 if it is not one)."""
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise ApiError(400, "image data URLs must be base64-encoded: data:image/<type>;base64,<data>",
                       code="invalid_image_url", param="image_url")
    mime = (match.group("mime") or "").lower()
    if not mime.startswith("image/"):
        raise ApiError(400, f"data URL media type {mime or 'text/plain'!r} is not an image",
                       code="invalid_image_url", param="image_url")
    payload = "".join(url[match.end():].split())
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"image data URL is not valid base64: {exc}", code="invalid_image_url",
                       param="image_url") from exc


class PixelLimit:
    """Pillow's decompression-bomb limit, lowered or raised only inside `scope()`.

    ``Image.MAX_IMAGE_PIXELS`` is one process-wide value; the lock keeps
    concurrent scopes from interleaving their set/restore.
    """

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._lock = threading.Lock()

    @contextmanager
    def scope(self) -> Iterator[None]:
        with self._lock:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = self.max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def open_image_checked(data: bytes, limit: PixelLimit) -> Image.Image:
    """Open an uploaded image (header only) after checking its size; decode later with ``.convert("RGB")``.

    Raises 413 when the announced width*height exceeds the limit (checked before
    decoding, so a small file claiming huge dimensions costs nothing) and 400
    when the bytes are not an image of an accepted format.
    """
    with limit.scope():
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except Image.DecompressionBombError as exc:
            raise ApiError(413, f"image refused: {exc}", code="image_too_large", param="image_url") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ApiError(400, f"image could not be read as one of {', '.join(IMAGE_FORMATS)}: {exc}",
                           code="invalid_image", param="image_url") from exc
    width, height = image.size
    if width < 1 or height < 1 or width * height > limit.max_pixels:
        image.close()
        raise ApiError(413, f"image is {width} x {height} = {width * height} pixels; this server accepts at most "
                            f"{limit.max_pixels} pixels", code="image_too_large", param="image_url")
    return image
