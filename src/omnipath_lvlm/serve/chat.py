"""OpenAI chat-completions wire format: requests in, completions and chunks out.

A request is the standard ``POST /v1/chat/completions`` body. What the server
reads from it:

- ``messages``: ``system``/``developer`` messages are ignored (the model has its
  own conversation template); the last message must be a ``user`` turn (the
  question); the turns before it must alternate ``user``, ``assistant`` and
  become the engine's ``history``. ``content`` is a string or a list of
  ``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url":
  {"url": ...}}`` parts.
- Extension field ``slide_id`` (top level, e.g. ``"slide_id": "case1.svs"``; with
  the `openai` client pass ``extra_body={"slide_id": ...}``): the file name of a
  slide in the server's slide folder. A conversation refers to exactly one
  picture: either a ``slide_id`` or one image part somewhere in its messages.
- ``max_tokens`` / ``max_completion_tokens`` (capped by the server), ``stream``,
  ``model`` (must name the served model); ``n`` must be 1; other OpenAI fields
  (temperature, ...) are accepted and ignored.

Responses are standard ``chat.completion`` objects (or ``chat.completion.chunk``
server-sent events) with one extension field, ``omnipath``: the Analysis JSON
(answer, detections/outlines/regions in slide level-0 pixels, score grid,
timings), on the completion and on the last chunk before ``data: [DONE]``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omnipath_lvlm.serve.errors import ApiError


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = 1
    slide_id: str | None = None  # extension: a slide in the server's slide folder


@dataclass
class Conversation:
    """What the engine needs from a chat request."""

    question: str
    history: list[tuple[str, str]] = field(default_factory=list)  # earlier (user, assistant) turns, oldest first
    image_url: str | None = None  # the one image part of the conversation, if any
    slide_id: str | None = None


def parse_request(body: bytes) -> ChatRequest:
    """Validate a request body (400 naming the first broken field)."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    try:
        request = ChatRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", code="invalid_request", param=where or None) from exc
    if request.n != 1:
        raise ApiError(400, f"n={request.n} completions asked for; this server returns exactly one", param="n",
                       code="unsupported_parameter")
    return request


def conversation_of(request: ChatRequest) -> Conversation:
    """Split the messages into question, history and the conversation's one image or slide."""
    turns = [m for m in request.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "the last message must be a user message (the question)", param="messages",
                       code="invalid_messages")
    images: list[str] = []
    texts: list[str] = []
    for message in turns:
        text, urls = _split_content(message)
        texts.append(text)
        images.extend(urls)
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message.role != expected:
            raise ApiError(400, f"user and assistant turns must alternate, starting and ending with user: turn "
                                f"{index + 1} is {message.role!r}, expected {expected!r}", param="messages",
                           code="invalid_messages")
    question = texts[-1].strip()
    if not question:
        raise ApiError(400, "the last user message has no text (the question)", param="messages",
                       code="invalid_messages")
    if len(images) > 1:
        raise ApiError(400, f"{len(images)} images given but the model reads one image or slide per conversation",
                       param="messages", code="too_many_images")
    if images and request.slide_id is not None:
        raise ApiError(400, "both a slide_id and an image were given; send one of them", param="slide_id",
                       code="too_many_images")
    if not images and request.slide_id is None:
        raise ApiError(400, "nothing to look at: give a slide_id (extension field) or an image_url part",
                       param="slide_id", code="missing_image")
    history = [(texts[i], texts[i + 1]) for i in range(0, len(turns) - 1, 2)]
    return Conversation(question, history, images[0] if images else None, request.slide_id)


def _split_content(message: ChatMessage) -> tuple[str, list[str]]:
    """The message's text (parts joined by newlines) and its image URLs."""
    if message.content is None:
        return "", []
    if isinstance(message.content, str):
        return message.content, []
    texts, urls = [], []
    for part in message.content:
        if part.type == "text":
            texts.append(part.text or "")
        elif part.type == "image_url":
            if part.image_url is None:
                raise ApiError(400, "an image_url part has no image_url object", param="messages",
                               code="invalid_messages")
            if message.role != "user":
                raise ApiError(400, "only user messages may carry images", param="messages", code="invalid_messages")
            urls.append(part.image_url.url)
        else:
            raise ApiError(400, f"content part type {part.type!r} is not supported (text, image_url)",
                           param="messages", code="unsupported_content")
    return "\n".join(texts), urls


def completion_body(completion_id: str, created: int, model: str, answer: str, extension: dict[str, Any],
                    finish_reason: str = "stop") -> dict[str, Any]:
    """A ``chat.completion`` object with the ``omnipath`` extension."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish_reason,
                     "logprobs": None}],
        "usage": _usage(extension),
        "omnipath": extension,
    }


def chunk_body(completion_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None,
               extension: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``; the last one before ``[DONE]`` carries the extension."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if extension is not None:
        chunk["usage"] = _usage(extension)
        chunk["omnipath"] = extension
    return chunk


def _usage(extension: dict[str, Any]) -> dict[str, int] | None:
    """Token counts when the engine reported them in ``meta`` (``prompt_tokens``, ``new_tokens``)."""
    meta = extension.get("meta") or {}
    prompt, completion = meta.get("prompt_tokens"), meta.get("completion_tokens", meta.get("new_tokens"))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event line: ``data: <json>`` (or a literal like ``[DONE]``)."""
    data = payload if isinstance(payload, str) else dumps(payload)
    return f"data: {data}\n\n".encode()


def dumps(payload: Any) -> str:
    """JSON text for a response: numpy values converted, non-finite floats as null (valid for browsers)."""
    return json.dumps(_finite(payload), default=_plain, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """json.dumps fallback for numpy scalars/arrays and paths."""
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
