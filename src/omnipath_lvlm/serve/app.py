"""The HTTP server: an OpenAI-compatible chat API over slides, Deep Zoom tiles and the web viewer.

`create_app(engine, slides_dir, settings)` builds a FastAPI app around an
engine (anything with ``model_name`` and ``analyze(...)``, see `Engine`). The
engine is stateless per call; the app holds the settings, the slide-handle
cache (`SlideLibrary`) and the bounded work queue (`WorkQueue`).

Endpoints (all JSON errors are OpenAI-style ``{"error": {...}}``):

- ``POST /v1/chat/completions``: chat completions, streaming or not, about a
  slide (extension field ``slide_id``) or an inline image; see `chat` for the
  request format and the ``omnipath`` response extension.
- ``GET /v1/models``, ``GET /v1/models/{id}``: the one served model.
- ``GET /v1/slides``, ``GET /v1/slides/{id}``: slides in the folder (size,
  levels, microns per pixel).
- ``GET /slides/{id}.dzi``, ``GET /slides/{id}_files/{level}/{col}_{row}.jpeg``:
  Deep Zoom descriptor and tiles.
- ``GET /health`` (never needs the API key), ``GET /`` (the web viewer) and
  ``/static/...``.

With ``settings.api_key`` set, everything under ``/v1`` and ``/slides`` needs
``Authorization: Bearer <key>``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from omnipath_lvlm import __version__
from omnipath_lvlm.serve.chat import (Conversation, chunk_body, completion_body, conversation_of, dumps,
                                      parse_request, sse)
from omnipath_lvlm.serve.errors import ApiError, install_error_handlers
from omnipath_lvlm.serve.limits import (BodySizeLimit, PixelLimit, ServeSettings, check_api_key, decode_data_url,
                                        image_url_policy, open_image_checked)
from omnipath_lvlm.serve.tiles import SlideLibrary
from omnipath_lvlm.serve.workqueue import WorkQueue

if TYPE_CHECKING:
    from PIL import Image

    from omnipath_lvlm.wsi.analysis import Analysis

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The viewer loads only its own files; model answers are inserted as text, never as HTML.
_VIEWER_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")


class Engine(Protocol):
    """What the server needs from the model pipeline (e.g. `omnipath_lvlm.wsi.pipeline.load_engine`)."""

    model_name: str

    def analyze(self, source: Path | Image.Image, question: str, *, history: list[tuple[str, str]],
                max_new_tokens: int, on_text: Callable[[str], None] | None = None) -> Analysis: ...


def create_app(engine: Engine, slides_dir: str | Path, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    library = SlideLibrary(Path(slides_dir), cache_size=settings.slide_cache_size, tile_size=settings.tile_size,
                           overlap=settings.tile_overlap, quality=settings.tile_quality)
    queue = WorkQueue(settings.max_concurrent, settings.max_queue)
    pixel_limit = PixelLimit(settings.max_image_pixels)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.shutdown()
        library.close()

    app = FastAPI(title="OmniPath", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)

    async def authorize(authorization: str | None = Header(default=None)) -> None:
        check_api_key(authorization, settings.api_key)

    api = APIRouter(dependencies=[Depends(authorize)])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.model_name, **queue.stats()}

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(engine.model_name, started)]}

    @api.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict[str, Any]:
        _check_model(engine, model_id)
        return _model_card(engine.model_name, started)

    @api.get("/v1/slides")
    def list_slides() -> dict[str, Any]:
        return {"object": "list", "data": library.describe_all()}

    @api.get("/v1/slides/{slide_id}")
    def get_slide(slide_id: str) -> dict[str, Any]:
        return library.describe(slide_id)

    @api.get("/slides/{slide_id}.dzi")
    def deepzoom_descriptor(slide_id: str) -> Response:
        return Response(library.dzi(slide_id), media_type="application/xml")

    @api.get("/slides/{slide_id}_files/{level}/{col}_{row}.{fmt}")
    def deepzoom_tile(slide_id: str, level: int, col: int, row: int, fmt: str) -> Response:
        if fmt not in ("jpeg", "jpg"):
            raise ApiError(404, f"tiles are served as .jpeg, not .{fmt}", code="tile_not_found")
        return Response(library.tile(slide_id, level, col, row), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        chat = parse_request(await request.body())
        _check_model(engine, chat.model)
        conversation = conversation_of(chat)
        load_source = await _prepare_source(conversation, library, settings, pixel_limit)
        max_new_tokens = min(chat.max_completion_tokens or chat.max_tokens or settings.default_max_tokens,
                             settings.max_tokens)
        call = _EngineCall(engine, conversation, load_source, max_new_tokens)
        if chat.stream:
            return await _stream_completion(call, queue)
        future = queue.submit(call.run)  # 429 when full
        analysis = await _await_engine(future)
        body = completion_body(call.completion_id, call.created, engine.model_name, analysis.answer,
                               call.extension(analysis), call.finish_reason(analysis))
        return Response(dumps(body), media_type="application/json")

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    async def viewer() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": _VIEWER_CSP,
                                                                 "X-Content-Type-Options": "nosniff"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.settings = settings
    app.state.library = library
    app.state.queue = queue
    return app


def run_server(engine: Engine, slides_dir: str | Path, settings: ServeSettings | None = None) -> None:
    """Serve `create_app(...)` with uvicorn on ``settings.host:settings.port`` until interrupted."""
    import uvicorn

    settings = settings or ServeSettings()
    app = create_app(engine, slides_dir, settings)
    uvicorn.run(app, host=settings.host, port=settings.port, server_header=False, proxy_headers=False)


class _EngineCall:
    """One engine call: its inputs, its stream of text pieces and its timings."""

    def __init__(self, engine: Engine, conversation: Conversation,
                 load_source: Callable[[], Path | Image.Image], max_new_tokens: int) -> None:
        self.engine = engine
        self.conversation = conversation
        self.load_source = load_source
        self.max_new_tokens = max_new_tokens
        self.on_text: Callable[[str], None] | None = None
        self.completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.submitted = time.perf_counter()
        self.started = self.submitted

    def run(self) -> Analysis:
        """Runs on a worker thread."""
        self.started = time.perf_counter()
        source = self.load_source()
        try:
            return self.engine.analyze(source, self.conversation.question, history=self.conversation.history,
                                       max_new_tokens=self.max_new_tokens, on_text=self.on_text)
        except Exception as exc:
            log.exception("engine failed on %r", self.conversation.question)
            raise ApiError(500, f"the model failed: {type(exc).__name__}: {exc}", code="engine_error") from exc

    def extension(self, analysis: Analysis) -> dict[str, Any]:
        """The ``omnipath`` response field: the Analysis JSON plus server timings."""
        out = analysis.to_json()
        now = time.perf_counter()
        out["timings"] = {**out.get("timings", {}), "serve_queue": self.started - self.submitted,
                          "serve_total": now - self.submitted}
        out["slide_id"] = self.conversation.slide_id
        if isinstance(out.get("meta"), dict) and "source" in out["meta"]:
            # The engine may record the slide's server-side path; clients know it by its id.
            out["meta"]["source"] = self.conversation.slide_id or "image"
        return out

    def finish_reason(self, analysis: Analysis) -> str:
        """``length`` when the answer used every allowed new token, else ``stop`` (or the engine's own say)."""
        reason = analysis.meta.get("finish_reason")
        if reason in ("stop", "length"):
            return reason
        new_tokens = analysis.meta.get("new_tokens")
        return "length" if isinstance(new_tokens, int) and new_tokens >= self.max_new_tokens else "stop"


async def _prepare_source(conversation: Conversation, library: SlideLibrary, settings: ServeSettings,
                          pixel_limit: PixelLimit) -> Callable[[], Path | Image.Image]:
    """Check the conversation's slide or image now; return how the worker gets the engine's source."""
    if conversation.slide_id is not None:
        path = library.path(conversation.slide_id)
        await asyncio.to_thread(library.describe, conversation.slide_id)  # 422 now if OpenSlide cannot read it
        return lambda: path
    assert conversation.image_url is not None
    if image_url_policy(conversation.image_url, settings.allowed_image_hosts) == "data":
        data = decode_data_url(conversation.image_url)
    else:
        data = await _fetch_image(conversation.image_url, settings)
    image = open_image_checked(data, pixel_limit)  # header only; the pixels are decoded on the worker

    def decode() -> Image.Image:
        try:
            image.seek(0)
            return image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ApiError(400, f"image could not be decoded: {exc}", code="invalid_image", param="image_url") from exc

    return decode


async def _fetch_image(url: str, settings: ServeSettings) -> bytes:
    """Download an image from an allow-listed host (no redirects, size-capped)."""
    import httpx

    limit = settings.max_body_bytes
    try:
        async with httpx.AsyncClient(timeout=settings.remote_timeout_s, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ApiError(400, f"image URL answered HTTP {response.status_code}", code="image_fetch_failed",
                                   param="image_url")
                data = bytearray()
                async for piece in response.aiter_bytes():
                    data += piece
                    if len(data) > limit:
                        raise ApiError(413, f"remote image is larger than {limit} bytes", code="image_too_large",
                                       param="image_url")
    except httpx.HTTPError as exc:
        raise ApiError(400, f"image URL could not be fetched: {exc}", code="image_fetch_failed",
                       param="image_url") from exc
    return bytes(data)


async def _await_engine(future: concurrent.futures.Future[Analysis]) -> Analysis:
    try:
        return await asyncio.wrap_future(future)
    except ApiError:
        raise
    except concurrent.futures.CancelledError as exc:
        raise ApiError(503, "the server is shutting down", code="shutting_down") from exc


async def _stream_completion(call: _EngineCall, queue: WorkQueue) -> StreamingResponse:
    """Start the engine call and answer with its text as ``chat.completion.chunk`` events."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def push(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass

    call.on_text = lambda piece: push("text", piece)
    future = queue.submit(call.run)  # 429 here, before the stream starts
    future.add_done_callback(lambda done: push("done", done))
    model = call.engine.model_name

    async def events_out() -> AsyncIterator[bytes]:
        finished = False
        try:
            yield sse(chunk_body(call.completion_id, call.created, model, {"role": "assistant", "content": ""}))
            streamed = []
            while True:
                kind, value = await events.get()
                if kind == "done":
                    break
                if value:
                    streamed.append(value)
                    yield sse(chunk_body(call.completion_id, call.created, model, {"content": value}))
            finished = True
            try:
                analysis: Analysis = value.result()
            except ApiError as exc:
                yield sse(exc.body())
                return
            except concurrent.futures.CancelledError:
                yield sse(ApiError(503, "the server is shutting down", code="shutting_down").body())
                return
            rest = _unsent_rest(analysis.answer, "".join(streamed))
            if rest:
                yield sse(chunk_body(call.completion_id, call.created, model, {"content": rest}))
            yield sse(chunk_body(call.completion_id, call.created, model, {}, call.finish_reason(analysis),
                                 call.extension(analysis)))
            yield sse("[DONE]")
        finally:
            if not finished:
                future.cancel()  # the client left: drop the call if it is still waiting

    return StreamingResponse(events_out(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _unsent_rest(answer: str, streamed: str) -> str:
    """The part of the final answer the stream has not carried (all of it if the engine did not stream)."""
    return answer[len(streamed):] if answer.startswith(streamed) else ""


def _check_model(engine: Engine, model: str) -> None:
    if model != engine.model_name:
        raise ApiError(404, f"model {model!r} is not served here; this server runs {engine.model_name!r}",
                       code="model_not_found", param="model")


def _model_card(model_name: str, created: int) -> dict[str, Any]:
    return {"id": model_name, "object": "model", "created": created, "owned_by": "omnipath-lvlm"}


__all__ = ["Engine", "ServeSettings", "create_app", "run_server"]
