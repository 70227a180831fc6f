"""The web viewer in headless Chromium: pick a slide, ask, see overlays, export GeoJSON.

Skips without Debian's Chromium (/usr/bin/chromium) or, for the tests that need
the slide viewer, without the OpenSeadragon build (scripts/build_viewer.sh).
With OMNIPATH_UPDATE_DOCS=1 a screenshot of the viewer on the real test slide is
written to docs/img/viewer.png.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from serve_testkit import ANSWER, expected_geometry, running_server, write_pyramid_slide

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO / "src" / "omnipath_lvlm" / "serve" / "static" / "vendor" / "openseadragon" / "openseadragon.min.js"
DOCS_SHOT = REPO / "docs" / "img" / "viewer.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SLIDE = "small.tiff"
SLIDE_W, SLIDE_H = 2000, 1500

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)")
needs_vendor = pytest.mark.skipif(not VENDOR.exists(),
                                  reason=f"OpenSeadragon build missing at {VENDOR}: run scripts/build_viewer.sh")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    slides = tmp_path_factory.mktemp("viewer-slides")
    write_pyramid_slide(slides / SLIDE, SLIDE_W, SLIDE_H)
    with running_server(slides, max_concurrent=1, max_queue=2) as base:
        yield base, slides


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 860}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    context.close()


def open_viewer(page, base: str, slide_id: str) -> None:
    page.goto(base + "/")
    page.wait_for_selector(f"#slide-picker option[value='{slide_id}']", state="attached")
    page.select_option("#slide-picker", slide_id)
    page.wait_for_selector("#viewer canvas", state="attached", timeout=15_000)
    page.wait_for_load_state("networkidle")


def ask(page, question: str) -> None:
    page.fill("#question", question)
    page.click("#send")
    page.wait_for_selector("#messages li.assistant .summary", timeout=15_000)


def rect_box(page, selector: str) -> dict:
    return page.eval_on_selector(selector, "el => { const r = el.getBoundingClientRect(); "
                                           "return {x: r.x, y: r.y, w: r.width, h: r.height}; }")


@needs_vendor
def test_viewer_draws_answer_overlays_and_exports_geojson(server, page):
    base, _ = server
    open_viewer(page, base, SLIDE)
    assert "2000 × 1500" in page.inner_text("#slide-info")
    ask(page, "Where is the tumour?")

    assert page.inner_text("#messages li.assistant").startswith(ANSWER)
    assert page.locator("svg#overlay rect.detection").count() == 1
    assert page.locator("svg#overlay polygon.outline").count() == 1
    assert page.locator("svg#overlay rect.region").count() == 1

    # Box and region land where one slide-to-screen mapping puts them (level-0 pixels in, same scale and origin).
    want = expected_geometry(SLIDE_W, SLIDE_H)
    det, reg = rect_box(page, "rect.detection"), rect_box(page, "rect.region")
    scale = reg["w"] / (want["region"][2] - want["region"][0])
    assert scale > 0.05
    assert det["w"] == pytest.approx(scale * (want["box"][2] - want["box"][0]), rel=0.02)
    assert det["h"] == pytest.approx(scale * (want["box"][3] - want["box"][1]), rel=0.02)
    assert det["x"] - reg["x"] == pytest.approx(scale * (want["box"][0] - want["region"][0]), abs=1.5)
    assert det["y"] - reg["y"] == pytest.approx(scale * (want["box"][1] - want["region"][1]), abs=1.5)
    viewer = rect_box(page, "#viewer")
    assert viewer["x"] <= det["x"] and det["x"] + det["w"] <= viewer["x"] + viewer["w"]

    # Layer toggles: the attention heatmap starts hidden; boxes can be hidden.
    heat_layer = "svg#overlay g.heatmap"
    assert page.locator(f"{heat_layer} rect.heat").count() == 15  # 4x4 grid, the zero cell skipped
    assert not page.locator(heat_layer).is_visible()
    page.check("#show-heatmap")
    assert page.locator(heat_layer).is_visible()
    page.uncheck("#show-detections")
    assert not page.locator("svg#overlay rect.detection").is_visible()

    with page.expect_download() as download_info:
        page.click("#export-geojson")
    collection = json.loads(Path(download_info.value.path()).read_text())
    assert collection["type"] == "FeatureCollection"
    kinds = {f["properties"]["kind"]: f for f in collection["features"]}
    assert set(kinds) == {"box", "polygon", "pgfc_region"}
    x1, y1, x2, y2 = want["box"]
    assert kinds["box"]["geometry"] == {"type": "Polygon",
                                        "coordinates": [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]}
    ring = kinds["polygon"]["geometry"]["coordinates"][0]
    assert ring[:-1] == want["outline"] and ring[-1] == ring[0]
    assert kinds["box"]["properties"]["objectType"] == "annotation"
    assert kinds["box"]["properties"]["classification"]["name"] == "tumor"
    assert page.errors == []


@needs_vendor
def test_follow_up_question_sends_the_history(server, page):
    base, _ = server
    open_viewer(page, base, SLIDE)
    ask(page, "First question")
    page.fill("#question", "Second question")
    with page.expect_request("**/v1/chat/completions") as request_info:
        page.click("#send")
    sent = request_info.value.post_data_json
    assert sent["slide_id"] == SLIDE and sent["stream"] is True
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == ANSWER
    expect(page.locator("#messages li.assistant .summary")).to_have_count(2, timeout=15_000)
    expect(page.locator("svg#overlay rect.detection")).to_have_count(2)


def test_page_explains_a_missing_viewer_build_and_chat_still_works(server, page):
    base, _ = server
    page.route("**/static/vendor/openseadragon/**", lambda route: route.fulfill(status=404, body="missing"))
    page.goto(base + "/")
    message = page.locator("#viewer-message")
    message.wait_for(state="visible")
    assert "OpenSeadragon" in message.inner_text() and "build_viewer.sh" in message.inner_text()
    expect(page.locator("#slide-picker")).to_have_value(SLIDE)
    ask(page, "Still there?")
    assert page.inner_text("#messages li.assistant").startswith(ANSWER)
    assert page.errors == []


@needs_vendor
@pytest.mark.skipif(os.environ.get("OMNIPATH_UPDATE_DOCS") != "1", reason="set OMNIPATH_UPDATE_DOCS=1 to refresh")
def test_update_docs_screenshot(server, page, testdata):
    base, slides = server
    shutil.copy(testdata / "CMU-1-Small-Region.svs", slides / "CMU-1-Small-Region.svs")
    open_viewer(page, base, "CMU-1-Small-Region.svs")
    ask(page, "Where is the tumour? Outline it and box the densest region.")
    page.check("#show-heatmap")
    page.wait_for_load_state("networkidle")
    DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_SHOT))
    assert DOCS_SHOT.stat().st_size > 10_000
