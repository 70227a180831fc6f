"""The HTTP server against a real uvicorn process with a fake engine: API, limits, tiles."""
from __future__ import annotations

import base64
import io
import shutil
import struct
import time
import xml.etree.ElementTree as ET
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from serve_testkit import (ANSWER, FAIL_MARK, MODEL, PIECES, PROMPT_TOKENS, SLOW_MARK, expected_geometry, running_server,
                           write_pyramid_slide)

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
SETTINGS = dict(api_key=KEY, max_body_bytes=1_000_000, max_image_pixels=1_000_000, max_tokens=64,
                default_max_tokens=32, max_concurrent=2, max_queue=4, tile_size=254, tile_overlap=1)
SLIDE = "small.tiff"
SLIDE_W, SLIDE_H = 2000, 1500


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve")
    slides = root / "slides"
    slides.mkdir()
    level0 = write_pyramid_slide(slides / SLIDE, SLIDE_W, SLIDE_H)
    outside = root / "outside.tiff"
    write_pyramid_slide(outside, 300, 200)
    (slides / "escape.tiff").symlink_to(outside)  # a link leaving the slide folder
    with running_server(slides, **SETTINGS) as base:
        yield {"base": base, "slides": slides, "level0": level0}


@pytest.fixture()
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["base"] + "/v1", api_key=KEY, max_retries=0, timeout=30)


def post_chat(base: str, body: dict, headers: dict | None = None, **kwargs) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=AUTH if headers is None else headers,
                      timeout=30, **kwargs)


def ask_slide(question: str = "Where is the tumour?", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "slide_id": SLIDE, **extra}


def image_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# ---- the OpenAI API ---------------------------------------------------------

def test_health_needs_no_key_and_reports_the_queue(served):
    body = httpx.get(served["base"] + "/health").json()
    assert body["status"] == "ok" and body["model"] == MODEL
    assert body["max_concurrent"] == SETTINGS["max_concurrent"] and body["max_queue"] == SETTINGS["max_queue"]


def test_models_list_with_openai_client(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_completion_about_a_slide_with_openai_client(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Where is the tumour?"}], extra_body={"slide_id": SLIDE})
    assert response.object == "chat.completion"
    assert response.choices[0].message.content == ANSWER
    assert response.choices[0].finish_reason == "stop"
    ext = response.model_extra["omnipath"]
    want = expected_geometry(SLIDE_W, SLIDE_H)  # the fake engine scales its answer to the slide it opened
    assert ext["meta"]["source_kind"] == "slide" and ext["meta"]["source_size"] == [SLIDE_W, SLIDE_H]
    assert ext["slide_size"] == [SLIDE_W, SLIDE_H]
    assert ext["detections"] == [{"box": want["box"], "label": "tumor"}]
    assert ext["outlines"][0]["points"] == want["outline"]
    assert ext["regions"][0]["box"] == want["region"] and ext["regions"][0]["token"] == [0, 1]
    assert np.asarray(ext["score_grid"]).shape == (4, 4)
    assert ext["slide_id"] == SLIDE
    assert ext["meta"]["source"] == SLIDE  # the slide's path on the server is not revealed
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (PROMPT_TOKENS, len(PIECES))
    assert ext["timings"]["serve_total"] >= ext["timings"]["serve_queue"] >= 0


def test_stream_with_openai_client(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe it"}], stream=True,
        extra_body={"slide_id": SLIDE})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == ANSWER
    assert len([c for c in chunks if c.choices[0].delta.content]) > 1  # really streamed in pieces
    with_ext = [i for i, c in enumerate(chunks) if "omnipath" in (c.model_extra or {})]
    assert with_ext == [len(chunks) - 1]
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["omnipath"]["answer"] == ANSWER
    assert last.model_extra["omnipath"]["detections"][0]["box"] == expected_geometry(SLIDE_W, SLIDE_H)["box"]


def test_stream_ends_with_done_event(served):
    response = post_chat(served["base"], ask_slide(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    assert '"omnipath"' in events[-2] and '"omnipath"' not in "".join(events[:-2])


def test_history_and_question_reach_the_engine(served):
    body = {"model": MODEL, "slide_id": SLIDE, "messages": [
        {"role": "system", "content": "You are a pathologist."},
        {"role": "user", "content": [{"type": "text", "text": "What organ?"}]},
        {"role": "assistant", "content": "Liver."},
        {"role": "user", "content": "Any tumour?"},
    ]}
    meta = post_chat(served["base"], body).json()["omnipath"]["meta"]
    assert meta["history"] == [["What organ?", "Liver."]]
    assert meta["question"] == "Any tumour?"


def test_inline_image_is_decoded_for_the_engine(served):
    image = Image.new("RGBA", (64, 48), (200, 120, 180, 255))
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image_data_url(image)}}]}]}
    response = post_chat(served["base"], body)
    assert response.status_code == 200, response.text
    meta = response.json()["omnipath"]["meta"]
    assert meta["source_kind"] == "image:RGB" and meta["source_size"] == [64, 48]


def test_max_tokens_capped_to_the_server_limit(served):
    base = served["base"]
    asked_too_many = post_chat(base, ask_slide(max_tokens=100_000)).json()["omnipath"]["meta"]
    assert asked_too_many["max_new_tokens"] == SETTINGS["max_tokens"]
    asked_few = post_chat(base, ask_slide(max_completion_tokens=10)).json()["omnipath"]["meta"]
    assert asked_few["max_new_tokens"] == 10
    default = post_chat(base, ask_slide()).json()["omnipath"]["meta"]
    assert default["max_new_tokens"] == SETTINGS["default_max_tokens"]


def test_answer_cut_by_max_tokens_finishes_with_length(served):
    short = post_chat(served["base"], ask_slide(max_tokens=3)).json()
    assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 3
    full = post_chat(served["base"], ask_slide(max_tokens=len(PIECES) + 1)).json()
    assert full["choices"][0]["finish_reason"] == "stop"


# ---- limits and safety ------------------------------------------------------

def test_api_key_missing_or_wrong_is_401(served, client):
    base = served["base"]
    assert_error(post_chat(base, ask_slide(), headers={}), 401, "missing_api_key")
    assert_error(post_chat(base, ask_slide(), headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")
    assert_error(httpx.get(f"{base}/slides/{SLIDE}.dzi"), 401)
    assert_error(httpx.get(f"{base}/v1/slides"), 401)
    wrong = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_oversize_body_is_413(served):
    big = ask_slide(question="x" * 1_200_000)
    error = assert_error(post_chat(served["base"], big), 413, "request_too_large")
    assert error["type"] == "invalid_request_error"


def test_oversize_chunked_body_without_length_is_413(served):
    def pieces():
        for _ in range(30):
            yield b"x" * 50_000

    response = httpx.post(served["base"] + "/v1/chat/completions", content=pieces(),
                          headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_error(response, 413, "request_too_large")


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("pixels", [(100_000, 100_000), (1_200, 1_000)], ids=["bomb-header", "just-over-limit"])
def test_images_over_the_pixel_limit_are_refused(served, pixels):
    if pixels == (1_200, 1_000):
        data = io.BytesIO()
        Image.new("RGB", pixels, (10, 20, 30)).save(data, "PNG")
        payload = data.getvalue()
    else:
        payload = png_bomb(*pixels)
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    error = assert_error(post_chat(served["base"], body), 413, "image_too_large")
    assert "pixels" in error["message"]
    assert httpx.get(served["base"] + "/health").json()["running"] == 0  # refused before reaching the engine


def test_not_an_image_is_400(served):
    url = "data:image/png;base64," + base64.b64encode(b"this is not a png").decode()
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    assert_error(post_chat(served["base"], body), 400, "invalid_image")


@pytest.mark.parametrize("url, code", [
    ("https://example.org/slide.png", "remote_url_not_allowed"),
    ("http://127.0.0.1:1/x.png", "remote_url_not_allowed"),
    ("file:///etc/passwd", "unsupported_image_url"),
])
def test_remote_and_file_urls_are_refused(served, url, code):
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    assert_error(post_chat(served["base"], body), 400, code)


@pytest.mark.parametrize("slide_id, status", [
    ("../outside.tiff", 400), ("/etc/passwd", 400), ("..", 400), ("sub\\..\\x.tiff", 400),
    ("escape.tiff", 404), ("missing.svs", 404), (".hidden.svs", 404),
])
def test_slide_ids_outside_the_folder_are_refused(served, slide_id, status):
    assert_error(post_chat(served["base"], ask_slide(slide_id=slide_id)), status)
    assert httpx.get(f"{served['base']}/v1/slides/{slide_id}", headers=AUTH).status_code in (400, 404)


def test_slide_paths_in_tile_urls_cannot_escape(served):
    base = served["base"]
    for path in ("/slides/..%2Foutside.tiff.dzi", "/slides/escape.tiff.dzi", "/slides/%2E%2E.dzi",
                 "/slides/escape.tiff_files/0/0_0.jpeg"):
        response = httpx.get(base + path, headers=AUTH)
        assert response.status_code in (400, 404), path
        assert "error" in response.json()


def test_request_errors_are_openai_style(served):
    base = served["base"]
    assert_error(post_chat(base, {**ask_slide(), "model": "gpt-4"}), 404, "model_not_found")
    assert_error(httpx.post(base + "/v1/chat/completions", content=b"{not json", headers=AUTH), 400, "invalid_json")
    assert_error(post_chat(base, {"model": MODEL, "messages": []}), 400)
    assert_error(post_chat(base, {**ask_slide(), "n": 2}), 400, "unsupported_parameter")
    assert_error(post_chat(base, {"model": MODEL, "messages": [{"role": "user", "content": "no picture"}]}), 400,
                 "missing_image")
    two_users = {"model": MODEL, "slide_id": SLIDE, "messages": [{"role": "user", "content": "a"},
                                                                 {"role": "user", "content": "b"}]}
    assert_error(post_chat(base, two_users), 400, "invalid_messages")
    assert_error(httpx.get(base + "/v1/nothing-here", headers=AUTH), 404)
    assert_error(httpx.delete(base + "/v1/models", headers=AUTH), 405)


def test_engine_failure_is_500_with_error_body(served, client):
    assert_error(post_chat(served["base"], ask_slide(question=f"{FAIL_MARK} please")), 500, "engine_error")
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": FAIL_MARK}],
                                            stream=True, extra_body={"slide_id": SLIDE}))


def wait_for_queue(base: str, running: int, waiting: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = httpx.get(base + "/health").json()
        if stats["running"] == running and stats["waiting"] == waiting:
            return
        time.sleep(0.02)
    raise AssertionError(f"queue never reached {running} running / {waiting} waiting: {stats}")


def test_full_queue_answers_429_at_once(served):
    base = served["base"]
    capacity = SETTINGS["max_concurrent"] + SETTINGS["max_queue"]
    with ThreadPoolExecutor(capacity) as pool:
        slow = [pool.submit(post_chat, base, ask_slide(question=f"{SLOW_MARK} {i}")) for i in range(capacity)]
        wait_for_queue(base, SETTINGS["max_concurrent"], SETTINGS["max_queue"])
        started = time.monotonic()
        refused = post_chat(base, ask_slide())
        assert time.monotonic() - started < 0.5  # refused, not queued
        error = assert_error(refused, 429, "queue_full")
        assert error["type"] == "rate_limit_error" and refused.headers["retry-after"] == "1"
        assert all(f.result().status_code == 200 for f in slow)
    assert httpx.get(base + "/health").json()["running"] == 0


def test_fifty_concurrent_requests_complete_or_get_429(served):
    base = served["base"]

    def one(i: int) -> tuple[int, httpx.Response]:
        return i, post_chat(base, ask_slide(question=f"q{i}", stream=i % 2 == 0))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(50), timeout=60))
    statuses = [response.status_code for _, response in results]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= SETTINGS["max_concurrent"] + SETTINGS["max_queue"]
    for i, response in results:
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "queue_full"
        elif i % 2 == 0:
            assert response.text.rstrip().endswith("data: [DONE]") and '"finish_reason":"stop"' in response.text
        else:
            assert response.json()["choices"][0]["message"]["content"] == ANSWER
    wait_for_queue(base, 0, 0)


# ---- slides and Deep Zoom ---------------------------------------------------

def test_slide_list_reports_size_levels_and_mpp(served):
    data = httpx.get(served["base"] + "/v1/slides", headers=AUTH).json()["data"]
    by_id = {entry["id"]: entry for entry in data}
    assert "escape.tiff" not in by_id  # the link leaving the folder is not listed
    entry = by_id[SLIDE]
    assert (entry["width"], entry["height"], entry["level_count"]) == (SLIDE_W, SLIDE_H, 3)
    assert entry["level_dimensions"] == [[2000, 1500], [1000, 750], [500, 375]]
    assert entry["mpp_x"] == pytest.approx(0.5) and entry["mpp_y"] == pytest.approx(0.5)


def test_dzi_and_tiles_match_the_slide(served):
    base = served["base"]
    response = httpx.get(f"{base}/slides/{SLIDE}.dzi", headers=AUTH)
    assert response.status_code == 200 and "xml" in response.headers["content-type"]
    root = ET.fromstring(response.text)
    ns = {"dz": "http://schemas.microsoft.com/deepzoom/2008"}
    size = root.find("dz:Size", ns)
    assert (int(size.get("Width")), int(size.get("Height"))) == (SLIDE_W, SLIDE_H)
    tile_size, overlap = int(root.get("TileSize")), int(root.get("Overlap"))
    top = int(np.ceil(np.log2(max(SLIDE_W, SLIDE_H))))  # Deep Zoom level with the full resolution

    tile = httpx.get(f"{base}/slides/{SLIDE}_files/{top}/1_2.jpeg", headers=AUTH)
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    pixels = np.asarray(Image.open(io.BytesIO(tile.content)).convert("RGB")).astype(int)
    x0, y0 = tile_size - overlap, 2 * tile_size - overlap  # a middle tile has overlap on every side
    assert pixels.shape == (tile_size + 2 * overlap, tile_size + 2 * overlap, 3)
    expected = served["level0"][y0:y0 + pixels.shape[0], x0:x0 + pixels.shape[1]].astype(int)
    assert np.abs(pixels - expected).mean() < 4  # JPEG twice, smooth gradient

    small = httpx.get(f"{base}/slides/{SLIDE}_files/{top - 3}/0_0.jpeg", headers=AUTH)
    assert Image.open(io.BytesIO(small.content)).size == (SLIDE_W // 8, int(np.ceil(SLIDE_H / 8)))
    assert_error(httpx.get(f"{base}/slides/{SLIDE}_files/{top}/99_0.jpeg", headers=AUTH), 404, "tile_not_found")
    assert_error(httpx.get(f"{base}/slides/{SLIDE}_files/{top + 1}/0_0.jpeg", headers=AUTH), 404, "tile_not_found")
    assert_error(httpx.get(f"{base}/slides/{SLIDE}_files/{top}/0_0.png", headers=AUTH), 404)


def test_plain_image_in_the_folder_is_a_one_level_slide(served):
    Image.new("RGB", (320, 200), (90, 40, 120)).save(served["slides"] / "plain.png")
    entry = httpx.get(served["base"] + "/v1/slides/plain.png", headers=AUTH).json()
    assert (entry["width"], entry["height"], entry["level_count"], entry["mpp_x"]) == (320, 200, 1, None)
    assert httpx.get(served["base"] + "/slides/plain.png.dzi", headers=AUTH).status_code == 200
    meta = post_chat(served["base"], ask_slide(slide_id="plain.png")).json()["omnipath"]["meta"]
    assert meta["source_kind"] == "slide" and meta["source_size"] == [320, 200]


def test_unreadable_slide_is_listed_with_an_error_and_refused(served):
    (served["slides"] / "broken.svs").write_bytes(b"not a slide at all")
    data = httpx.get(served["base"] + "/v1/slides", headers=AUTH).json()["data"]
    broken = next(entry for entry in data if entry["id"] == "broken.svs")
    assert "error" in broken and "width" not in broken
    assert_error(post_chat(served["base"], ask_slide(slide_id="broken.svs")), 422, "slide_unreadable")
    assert_error(httpx.get(served["base"] + "/slides/broken.svs.dzi", headers=AUTH), 422, "slide_unreadable")


def test_real_svs_slide_is_listed_with_its_mpp(served, testdata: Path):
    shutil.copy(testdata / "CMU-1-Small-Region.svs", served["slides"] / "cmu.svs")
    entry = httpx.get(served["base"] + "/v1/slides/cmu.svs", headers=AUTH).json()
    assert (entry["width"], entry["height"]) == (2220, 2967)
    assert entry["mpp_x"] == pytest.approx(0.499) and entry["vendor"] == "aperio"
    root = ET.fromstring(httpx.get(served["base"] + "/slides/cmu.svs.dzi", headers=AUTH).text)
    assert root.get("Format") == "jpeg"


def test_viewer_page_is_served_without_key(served):
    page = httpx.get(served["base"] + "/")
    assert page.status_code == 200 and "slide-picker" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(served["base"] + "/static/viewer.js").status_code == 200
