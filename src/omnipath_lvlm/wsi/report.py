"""`report.html`: one self-contained page (images inlined) showing an analysis.

The slide thumbnail with every overlay, the attention heatmap, the PGFC regions read at high
resolution with their scores and positions, the answer, parse problems and the timings.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from omnipath_lvlm.wsi.analysis import Analysis
from omnipath_lvlm.wsi.outputs import png_bytes

REPORT_FILE = "report.html"


def _img(image: Image.Image, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(png_bytes(image)).decode("ascii")
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{w}>'


def render_report(
    analysis: Analysis,
    overlay: Image.Image,
    attention: Image.Image | None,
    region_images: Sequence[Image.Image] = (),
    title: str = "OmniPath analysis",
) -> str:
    """The report page as a string (no external resources)."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(stage)}</td><td>{seconds:.3f}</td></tr>" for stage, seconds in analysis.timings.items()
    )
    regions = "".join(
        f"<figure>{_img(img, f'region {i + 1}', 192)}<figcaption>#{i + 1} score {r.score:.4f}<br>"
        f"x {r.box[0]:.0f}-{r.box[2]:.0f}, y {r.box[1]:.0f}-{r.box[3]:.0f}</figcaption></figure>"
        for i, (r, img) in enumerate(zip(analysis.regions, region_images))
    ) or "<p>No detail regions were read (thumbnail only).</p>"
    problems = "".join(f"<li>{e(p)}</li>" for p in analysis.parse_problems) or "<li>none</li>"
    model = e(str(analysis.meta.get("model", "")))
    attention_html = _img(attention, "attention heatmap", 480) if attention is not None else "<p>no attention grid</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
.row {{ display: flex; gap: 1.5rem; flex-wrap: wrap; }}
figure {{ margin: 0; display: inline-block; text-align: center; font-size: 0.8rem; }}
pre {{ background: #f5f5f5; padding: 0.8rem; white-space: pre-wrap; }}
table {{ border-collapse: collapse; }} td {{ border: 1px solid #ccc; padding: 2px 8px; }}
</style></head><body>
<h1>{e(title)}</h1>
<p><b>Model:</b> {model} &nbsp; <b>Slide:</b> {analysis.slide_size[0]} x {analysis.slide_size[1]} px (level 0)</p>
<h2>Question</h2><pre>{e(analysis.question)}</pre>
<h2>Answer</h2><pre>{e(analysis.answer)}</pre>
<p>{len(analysis.detections)} boxes, {len(analysis.outlines)} outlines, {len(analysis.masks)} masks.
Parse problems:</p><ul>{problems}</ul>
<div class="row">
<figure>{_img(overlay, "thumbnail with overlays", 480)}<figcaption>thumbnail with the answer's boxes and outlines and the numbered PGFC regions</figcaption></figure>
<figure>{attention_html}<figcaption>last prompt token's first-layer attention over the thumbnail tokens</figcaption></figure>
</div>
<h2>Detail regions read at high resolution</h2><div class="row">{regions}</div>
<h2>Timings (s)</h2><table>{rows}</table>
</body></html>
"""


def write_report(analysis: Analysis, slide, out_dir, display_size: int = 1024) -> Path:
    """Render and atomically write ``report.html`` for an analysis of an open slide."""
    from omnipath_lvlm.fileio import atomic_write_text
    from omnipath_lvlm.wsi.outputs import draw_attention, draw_overlay

    thumbnail = slide.thumbnail(display_size)
    overlay = draw_overlay(thumbnail, analysis)
    attention = draw_attention(thumbnail, analysis) if analysis.score_grid is not None else None
    crops = []
    for region in analysis.regions:
        x1, y1, x2, y2 = region.box
        crops.append(slide.read_region((int(x1), int(y1)), (max(1, int(x2 - x1)), max(1, int(y2 - y1))), out_size=(256, 256)))
    page = render_report(analysis, overlay, attention, crops)
    return atomic_write_text(Path(out_dir) / REPORT_FILE, page)
