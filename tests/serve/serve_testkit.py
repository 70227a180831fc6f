"""Test helpers for the server: a fake engine, a launcher and a small pyramid slide.

Run as a script, this module serves `create_app(FakeEngine(), ...)` with uvicorn
on 127.0.0.1 at a free port and prints ``PORT <n>`` once it listens;
`running_server` starts it as a subprocess for a test and stops it afterwards.
"""
from __future__ import annotations

import argparse
import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

MODEL = "omnipath-fake"
PIECES = ("Tumour ", "cells ", "are ", "outlined ", "in ", "the ", "upper ", "left.")
ANSWER = "".join(PIECES)
SLOW_MARK = "[slow]"  # a question containing it takes SLOW_SECONDS
FAIL_MARK = "[fail]"  # a question containing it makes the engine raise
SLOW_SECONDS = 0.6
GRID = 4
PROMPT_TOKENS = 17  # reported in meta like the real pipeline; new_tokens = pieces streamed


def expected_geometry(width: int, height: int) -> dict[str, Any]:
    """What the fake engine answers for a picture of this size (level-0 pixels)."""
    return {
        "box": [0.1 * width, 0.1 * height, 0.4 * width, 0.5 * height],
        "outline": [[0.5 * width, 0.5 * height], [0.8 * width, 0.55 * height], [0.7 * width, 0.9 * height]],
        "region": [0.25 * width, 0.0, 0.5 * width, 0.25 * height],
    }


class FakeEngine:
    """Streams a fixed answer with one box, one polygon and one PGFC region scaled to the picture."""

    model_name = MODEL

    def analyze(self, source: Any, question: str, *, history: list[tuple[str, str]], max_new_tokens: int,
                on_text: Callable[[str], None] | None = None) -> Any:
        from omnipath_lvlm.wsi.analysis import Analysis, Detection, Outline, Region

        if FAIL_MARK in question:
            raise RuntimeError("fake engine failure")
        if isinstance(source, Path):
            import openslide

            with openslide.open_slide(source) as slide:
                width, height = slide.dimensions
            kind = "slide"
        else:
            width, height = source.size
            kind = f"image:{source.mode}"
        delay = SLOW_SECONDS if SLOW_MARK in question else 0.04
        for piece in PIECES:
            time.sleep(delay / len(PIECES))
            if on_text is not None:
                on_text(piece)
        geometry = expected_geometry(width, height)
        score_grid = np.arange(GRID * GRID, dtype=np.float32).reshape(GRID, GRID) / (GRID * GRID)
        return Analysis(
            question=question,
            answer=ANSWER,
            detections=[Detection(tuple(geometry["box"]), "tumor")],
            outlines=[Outline([tuple(p) for p in geometry["outline"]], "gland")],
            regions=[Region(tuple(geometry["region"]), 0.42, (0, 1))],
            score_grid=score_grid,
            slide_size=(width, height),
            thumbnail_size=(GRID * 16, GRID * 16),
            timings={"generate": delay},
            meta={"max_new_tokens": max_new_tokens, "history": [list(turn) for turn in history],
                  "question": question, "source_kind": kind, "source_size": [width, height],
                  "source": str(source) if isinstance(source, Path) else "",  # as the real pipeline does
                  "prompt_tokens": PROMPT_TOKENS, "new_tokens": min(len(PIECES), max_new_tokens)},
        )


def write_pyramid_slide(path: Path, width: int = 2000, height: int = 1500) -> np.ndarray:
    """Write a 3-level tiled JPEG TIFF pyramid with a smooth colour gradient; returns level 0 (H, W, 3)."""
    import tifffile

    yy, xx = np.mgrid[0:height, 0:width]
    level0 = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 160)], axis=-1).astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate((level0, level0[::2, ::2], level0[::4, ::4])):
            tif.write(np.ascontiguousarray(level), tile=(256, 256), photometric="rgb", compression="jpeg",
                      resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER",
                      subfiletype=0 if index == 0 else 1)
    return level0


@contextmanager
def running_server(slides_dir: Path, **settings: Any) -> Iterator[str]:
    """Start the fake-engine server in a subprocess; yields its base URL (http://127.0.0.1:PORT)."""
    command = [sys.executable, __file__, "--slides", str(slides_dir), "--settings", json.dumps(settings)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"test server did not start (exit code {process.poll()}, said {line!r})")
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("test server never answered /health")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def _main() -> None:
    import uvicorn

    from omnipath_lvlm.serve.app import create_app
    from omnipath_lvlm.serve.limits import ServeSettings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slides", type=Path, required=True)
    parser.add_argument("--settings", default="{}", help="ServeSettings fields as JSON")
    args = parser.parse_args()
    fields = json.loads(args.settings)
    if "allowed_image_hosts" in fields:
        fields["allowed_image_hosts"] = tuple(fields["allowed_image_hosts"])
    settings = ServeSettings(**fields)
    app = create_app(FakeEngine(), args.slides, settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    server.run(sockets=[sock])


if __name__ == "__main__":
    _main()
