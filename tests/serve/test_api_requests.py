"""Request parsing, limits and the work queue, without a server."""
from __future__ import annotations

import base64
import json
import threading

import numpy as np
import pytest
from PIL import Image

from omnipath_lvlm.serve.chat import conversation_of, dumps, parse_request
from omnipath_lvlm.serve.errors import ApiError
from omnipath_lvlm.serve.limits import (PixelLimit, ServeSettings, check_api_key, decode_data_url, image_url_policy,
                                        resolve_slide_path)
from omnipath_lvlm.serve.workqueue import WorkQueue


def request(messages, **extra) -> bytes:
    return json.dumps({"model": "m", "messages": messages, **extra}).encode()


def test_conversation_splits_question_history_and_image():
    url = "data:image/png;base64,AAAA"
    chat = parse_request(request([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "first"}, {"type": "text", "text": "question"}]},
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "second?"},
    ]))
    conversation = conversation_of(chat)
    assert conversation.question == "second?"
    assert conversation.history == [("first\nquestion", "answer one")]
    assert conversation.image_url == url and conversation.slide_id is None


@pytest.mark.parametrize("messages, extra, code", [
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], {"slide_id": "s.svs"},
     "invalid_messages"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}], {"slide_id": "s.svs"},
     "invalid_messages"),
    ([{"role": "user", "content": "   "}], {"slide_id": "s.svs"}, "invalid_messages"),
    ([{"role": "user", "content": "q"}], {}, "missing_image"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}},
                                   {"type": "image_url", "image_url": {"url": "data:,"}},
                                   {"type": "text", "text": "q"}]}], {}, "too_many_images"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}},
                                   {"type": "text", "text": "q"}]}], {"slide_id": "s.svs"}, "too_many_images"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], {"slide_id": "s.svs"},
     "unsupported_content"),
])
def test_malformed_conversations_are_400(messages, extra, code):
    with pytest.raises(ApiError) as info:
        conversation_of(parse_request(request(messages, **extra)))
    assert info.value.status == 400 and info.value.code == code


def test_parse_request_names_the_broken_field():
    with pytest.raises(ApiError) as info:
        parse_request(request([{"role": "robot", "content": "x"}]))
    assert info.value.status == 400 and info.value.param == "messages.0.role"
    with pytest.raises(ApiError) as info:
        parse_request(request([{"role": "user", "content": "x"}], max_tokens=0))
    assert info.value.param == "max_tokens"


def test_data_urls_decode_and_non_base64_is_refused():
    assert decode_data_url("data:image/png;base64," + base64.b64encode(b"\x89PNG").decode()) == b"\x89PNG"
    for bad in ("data:image/png,rawtext", "data:text/plain;base64,QUJD", "data:image/png;base64,@@@"):
        with pytest.raises(ApiError) as info:
            decode_data_url(bad)
        assert info.value.status == 400


def test_image_url_policy_uses_the_allow_list():
    assert image_url_policy("data:image/png;base64,AA", ()) == "data"
    assert image_url_policy("https://Images.Example.org/a.png", ("images.example.org",)) == "remote"
    for url, hosts in (("https://evil.example/a.png", ("images.example.org",)), ("ftp://x/a.png", ("x",))):
        with pytest.raises(ApiError) as info:
            image_url_policy(url, hosts)
        assert info.value.status == 400


def test_api_key_check():
    check_api_key(None, None)
    check_api_key("Bearer s3cret", "s3cret")
    for header in (None, "Bearer", "Basic s3cret", "Bearer wrong"):
        with pytest.raises(ApiError) as info:
            check_api_key(header, "s3cret")
        assert info.value.status == 401 and info.value.headers["WWW-Authenticate"] == "Bearer"


def test_slide_ids_resolve_only_inside_the_folder(tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "a.svs").write_bytes(b"x")
    (tmp_path / "secret.svs").write_bytes(b"x")
    (folder / "inside-link.svs").symlink_to(folder / "a.svs")
    (folder / "outside-link.svs").symlink_to(tmp_path / "secret.svs")
    assert resolve_slide_path(folder, "a.svs") == (folder / "a.svs").resolve()
    assert resolve_slide_path(folder, "inside-link.svs") == (folder / "a.svs").resolve()
    for slide_id, status in (("../secret.svs", 400), (str(tmp_path / "secret.svs"), 400), ("", 400),
                             ("outside-link.svs", 404), ("nope.svs", 404)):
        with pytest.raises(ApiError) as info:
            resolve_slide_path(folder, slide_id)
        assert info.value.status == status, slide_id


def test_pixel_limit_scope_restores_pillow_setting():
    before = Image.MAX_IMAGE_PIXELS
    with PixelLimit(1234).scope():
        assert Image.MAX_IMAGE_PIXELS == 1234
    assert Image.MAX_IMAGE_PIXELS == before


def test_settings_refuse_nonsense():
    for bad in ({"max_concurrent": 0}, {"max_queue": -1}, {"api_key": " "}, {"tile_quality": 0}, {"port": 70000}):
        with pytest.raises(ValueError):
            ServeSettings(**bad)
    assert ServeSettings().host == "127.0.0.1"


def test_work_queue_refuses_beyond_capacity_and_frees_slots():
    queue = WorkQueue(max_concurrent=1, max_queue=1)
    gate = threading.Event()
    try:
        running = queue.submit(gate.wait)
        waiting = queue.submit(lambda: "second")
        with pytest.raises(ApiError) as info:
            queue.submit(lambda: "third")
        assert info.value.status == 429
        assert waiting.cancel()  # a waiting job dropped by its client frees its slot
        third = queue.submit(lambda: "third")
        gate.set()
        assert running.result(timeout=5) is True and third.result(timeout=5) == "third"
        assert queue.stats()["running"] == 0
    finally:
        gate.set()
        queue.shutdown()


def test_json_output_is_valid_for_browsers():
    text = dumps({"grid": np.array([[0.5, np.nan]]), "n": np.int64(3), "inf": float("inf")})
    assert json.loads(text) == {"grid": [[0.5, None]], "n": 3, "inf": None}
