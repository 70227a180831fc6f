"""The whole-slide pipeline: slide or image + question -> `Analysis`.

Stages (each timed in ``Analysis.timings``)::

    open       open the slide (OpenSlide / tiffslide / Pillow), or wrap a PIL image
    thumbnail  read the whole slide at the model's input size
    encode     thumbnail -> vision tower -> projector, ONCE (reused for scoring and answering)
    score      A_last over the thumbnail tokens (first LLM layer only) and the tissue grid
    regions    choose S token cells, read them at high resolution, encode them in one batch
    generate   answer from thumbnail + regions + prompt (greedy, streamed through ``on_text``)
    parse      boxes / polygons (relative) -> level-0 slide pixels; masks -> outlines
    locate     (``locate`` regions / tiles) the question re-asked of windows at the model's patch
               scale, their boxes and outlines mapped to level-0 pixels and joined (`wsi.locate`)

`load_engine(name_or_dir)` builds the pipeline the CLI and the server use.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.generation.streamers import BaseStreamer

from omnipath_lvlm.data.dataset import describe_region
from omnipath_lvlm.model import EncodedImages
from omnipath_lvlm.wsi.analysis import Analysis, Detection, Outline, Region
from omnipath_lvlm.wsi.pgfc import (
    PGFCConfig,
    build_conversation,
    encode_regions,
    given_region,
    last_token_image_attention,
    prompt_embeddings,
    read_regions,
    region_box,
    relative_box,
    select_tokens,
)

Source = str | Path | Image.Image | Any  # a path, a PIL image or an open slide (read_region, thumbnail, dimensions)
REPO_ROOT = Path(__file__).resolve().parents[3]
NANO_DIR = REPO_ROOT / "models" / "omnipath-nano"
UNTRAINED_NOTE = "UNTRAINED random weights (seed 0): answers are meaningless, for plumbing tests only"


class ImageSlide:
    """A PIL image seen as a one-level slide (level-0 pixels are the image's pixels)."""

    def __init__(self, image: Image.Image, name: str = "<image>"):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image {name} is empty ({image.width}x{image.height})")
        self.image = image.convert("RGB")
        self.path = name
        self.backend = "image"
        self.mpp: float | None = None

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.image.size

    def read_region(
        self, location_level0: tuple[float, float], size_level0: tuple[float, float], out_size: tuple[int, int] | None = None
    ) -> Image.Image:
        x, y = (int(round(v)) for v in location_level0)
        w, h = (int(round(v)) for v in size_level0)
        canvas = Image.new("RGB", (w, h), (255, 255, 255))  # off the image: white, like glass
        inside = (max(0, -x), max(0, -y))
        box = (max(x, 0), max(y, 0), min(x + w, self.image.width), min(y + h, self.image.height))
        if box[2] > box[0] and box[3] > box[1]:
            canvas.paste(self.image.crop(box), inside)
        return canvas if out_size is None else canvas.resize(tuple(out_size), Image.Resampling.BICUBIC)

    def thumbnail(self, max_size: int = 384) -> Image.Image:
        scale = min(max_size / self.image.width, max_size / self.image.height, 1.0)
        size = (max(1, round(self.image.width * scale)), max(1, round(self.image.height * scale)))
        return self.image if size == self.image.size else self.image.resize(size, Image.Resampling.BOX)

    def close(self) -> None:
        """Nothing to release (the caller owns the image)."""


class CallbackStreamer(BaseStreamer):
    """Streams the generated text to ``on_text`` piece by piece (the prompt is skipped)."""

    def __init__(self, decode: Callable[[list[int]], str], on_text: Callable[[str], None]):
        self.decode = decode
        self.on_text = on_text
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(v) for v in value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.decode(self.ids)
        if not final:  # an incomplete multi-byte character decodes as U+FFFD: wait for the rest
            text = text.rstrip("\ufffd")
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent):])
            self.sent = text


class OmniPathPipeline:
    """Analyse a slide or image with one question (and earlier turns), using PGFC."""

    def __init__(self, model, processor, model_name: str = "omnipath", pgfc: PGFCConfig | None = None):
        self.model = model.eval()
        self.processor = processor
        self.model_name = model_name
        self.pgfc = pgfc or PGFCConfig()
        self.grid = int(model.config.vision_config.grid_size)

    # ------------------------------------------------------------------ public
    def analyze(
        self,
        source: Source,
        question: str,
        pgfc: PGFCConfig | None = None,
        history: Sequence[tuple[str, str]] = (),
        max_new_tokens: int = 256,
        on_text: Callable[[str], None] | None = None,
        input_masks: Sequence[np.ndarray] = (),
        regions: Sequence[Sequence[float]] | None = None,
        locate: str = "slide",
    ) -> Analysis:
        """Answer ``question`` about ``source`` (slide path, PIL image or open slide); see the module docstring.

        ``input_masks`` are binary masks over the whole slide/image (any resolution), one per
        ``<mask>`` token in ``question``: each points the model at a region (mask encoder).
        ``regions``: level-0 boxes (x1, y1, x2, y2) to read as the detail regions instead of
        choosing them (a pathologist's regions of interest); the PGFC mode and S are then unused,
        the other PGFC settings (pooling, read size) apply.
        ``locate``: where boxes and outlines come from (`omnipath_lvlm.wsi.locate`): "slide" (as
        written for the whole slide), "regions" (the question re-asked of a window of side
        ``pgfc.window_um`` around each detail region), "tiles" (of windows tiling the tissue) or "auto"
        ("regions" when the slide answer holds boxes, outlines or masks and regions were read).
        """
        from omnipath_lvlm.wsi.locate import LOCATE_MODES, resolved_mode

        if locate not in LOCATE_MODES:
            raise ValueError(f"locate must be one of {', '.join(LOCATE_MODES)}, got {locate!r}")
        if locate != "slide" and input_masks:
            raise ValueError(f"locate={locate!r} re-asks the question of windows, which cannot carry the "
                             f"{len(input_masks)} input masks; use locate='slide' with input masks")
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        config = pgfc or self.pgfc
        timings: dict[str, float] = {}
        started = time.perf_counter()
        with self._opened(source, timings) as slide, torch.no_grad():
            analysis = self._run(slide, question, config, list(history), max_new_tokens, on_text, timings,
                                 list(input_masks), None if regions is None else list(regions))
            mode = resolved_mode(locate, bool(analysis.regions),
                                 bool(analysis.detections or analysis.outlines or analysis.masks))
            if mode != "slide":
                self._locate(slide, analysis, mode, config, max_new_tokens)
        timings["total"] = time.perf_counter() - started
        return analysis

    # ------------------------------------------------------------------ stages
    @contextmanager
    def _opened(self, source: Source, timings: dict[str, float]) -> Iterator[Any]:
        tic = time.perf_counter()
        owned = False
        if isinstance(source, Image.Image):
            slide = ImageSlide(source)
        elif isinstance(source, (str, Path)):
            from omnipath_lvlm.wsi.slide import open_slide

            slide, owned = open_slide(source), True
        elif all(hasattr(source, n) for n in ("read_region", "thumbnail", "dimensions")):
            slide = source
        else:
            raise TypeError(f"source must be a slide path, a PIL image or an open slide, got {type(source).__name__}")
        timings["open"] = time.perf_counter() - tic
        try:
            yield slide
        finally:
            if owned:
                slide.close()

    def _run(self, slide, question, config: PGFCConfig, history, max_new_tokens, on_text, timings, input_masks,
             given) -> Analysis:
        from omnipath_lvlm.wsi.tissue import tissue_mask

        model, processor, grid = self.model, self.processor, self.grid
        slide_size = tuple(int(v) for v in slide.dimensions)

        tic = time.perf_counter()
        thumbnail = slide.thumbnail(processor.max_image_size)
        timings["thumbnail"] = time.perf_counter() - tic

        tic = time.perf_counter()
        pixels = processor.preprocess_images([thumbnail]).to(model.device)  # (1, 3, S, S)
        thumb = model.encode_images(pixels, image_pool=[1])
        timings["encode"] = time.perf_counter() - tic

        tic = time.perf_counter()
        ids, attention, mask_inputs = self._tokenise(build_conversation(question, history), [1], input_masks)
        embeds = prompt_embeddings(model, ids, thumb, mask_inputs)  # (1, L, D)
        scores = last_token_image_attention(model, ids, attention, embeds)  # (N_img,) thumbnail tokens only
        score_grid = scores.float().cpu().numpy().reshape(grid, grid)
        tissue = tissue_mask(thumbnail, (grid, grid), min_fraction=config.min_tissue)  # (G, G) bool
        timings["score"] = time.perf_counter() - tic

        tic = time.perf_counter()
        if given is None:
            tokens = select_tokens(score_grid, tissue, config)
            boxes = [region_box(t, grid, slide_size, config.region_size) for t in tokens]
        else:
            picked = [given_region(b, grid, slide_size) for b in given]  # [(level-0 box, token)]
            boxes, tokens = [box for box, _ in picked], [token for _, token in picked]
        scored = given is not None or config.mode == "attention"
        regions = [
            Region(box=tuple(float(v) for v in box), score=float(score_grid[t]) if scored else 0.0, token=t)
            for t, box in zip(tokens, boxes)
        ]
        encoded = thumb
        if tokens:
            pictures = read_regions(slide, boxes, config.read_size or processor.max_image_size)
            encoded = EncodedImages.cat([thumb, encode_regions(model, processor, pictures, config.region_pool)])
        timings["regions"] = time.perf_counter() - tic

        tic = time.perf_counter()
        texts = [describe_region(relative_box(box, slide_size)) for box in boxes]
        ids, attention, mask_inputs = self._tokenise(
            build_conversation(question, history, texts), [1] + [config.region_pool] * len(tokens), input_masks
        )
        tokenizer = processor.tokenizer
        streamer = None if on_text is None else CallbackStreamer(processor.decode, on_text)
        result = model.generate_with_masks(
            input_ids=ids, attention_mask=attention, encoded_images=encoded, max_new_tokens=max_new_tokens,
            do_sample=False, streamer=streamer, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            **mask_inputs,
        )
        answer = processor.decode(result.new_tokens[0])
        timings["generate"] = time.perf_counter() - tic

        tic = time.perf_counter()
        detections, outlines, problems = parse_answer(answer, slide_size)
        masks = [(m > 0).cpu().numpy() for m in result.masks[0]]  # (4g, 4g) bool each
        outlines += mask_outlines(masks, slide_size)
        timings["parse"] = time.perf_counter() - tic

        return Analysis(
            question=question, answer=answer, detections=detections, outlines=outlines, masks=masks,
            regions=regions, score_grid=score_grid, tissue_grid=tissue, slide_size=slide_size,
            thumbnail_size=tuple(thumbnail.size), timings=timings, parse_problems=problems,
            meta={
                "model": self.model_name, "source": str(getattr(slide, "path", "")),
                "backend": getattr(slide, "backend", None), "mpp": getattr(slide, "mpp", None),
                "grid": grid, "pgfc": asdict(config), "prompt_tokens": int(ids.shape[1]),
                "new_tokens": int(result.new_tokens.shape[1]),
            },
        )

    def _locate(self, slide, analysis: Analysis, mode: str, config: PGFCConfig, max_new_tokens: int) -> None:
        """Replace the analysis' boxes and outlines by the windows' (see `omnipath_lvlm.wsi.locate`)."""
        from omnipath_lvlm.wsi.locate import answer_text, ask_windows, combine, region_windows, tile_windows, window_side

        tic = time.perf_counter()
        side = window_side(analysis.slide_size, getattr(slide, "mpp", None), config.window_um)  # None: cells
        if mode == "regions":
            windows = region_windows([r.token for r in analysis.regions], self.grid, analysis.slide_size, side)
        else:
            windows = tile_windows(analysis.tissue_grid, analysis.slide_size, side)
        pictures = read_regions(slide, windows, config.read_size or self.processor.max_image_size)
        replies = ask_windows(self.model, self.processor, pictures, analysis.question, max_new_tokens)
        found = combine(windows, replies)
        analysis.meta["locate"] = {
            "mode": mode, "window_side": side, "windows": [list(w) for w in windows],
            "window_answers": found.answers, "slide_answer": analysis.answer,
        }
        analysis.answer = answer_text(found, analysis.slide_size)
        analysis.detections, analysis.outlines = found.detections, found.outlines
        analysis.parse_problems = analysis.parse_problems + found.problems
        analysis.timings["locate"] = time.perf_counter() - tic

    def _tokenise(self, conversation: list[dict], pools: list[int], input_masks: Sequence[np.ndarray] = ()):
        """Left-padded ids and attention mask, plus the mask-encoder inputs for user-turn <mask> tokens."""
        from omnipath_lvlm.processing import pad_batch

        enc = self.processor.encode_conversation(conversation, image_pools=pools, add_generation_prompt=True)
        batch = pad_batch([enc], self.processor.tokenizer.pad_token_id, left=True)
        device = self.model.device
        n_slots = int(batch["mask_input_positions"].sum())
        if n_slots != len(input_masks):
            raise ValueError(f"{len(input_masks)} input masks given but the question holds {n_slots} <mask> tokens")
        mask_inputs = {}
        if input_masks:
            size = self.processor.mask_input_size
            pixels = self.processor.preprocess_masks(list(input_masks), size, "input mask").unsqueeze(1)
            mask_inputs = {"mask_pixel_values": pixels.to(device),
                           "mask_input_positions": batch["mask_input_positions"].to(device)}
        return batch["input_ids"].to(device), batch["attention_mask"].to(device), mask_inputs


# --------------------------------------------------------------------------- parsing


def parse_answer(answer: str, slide_size: tuple[int, int]) -> tuple[list[Detection], list[Outline], list[str]]:
    """Boxes and polygons written in the answer, in level-0 pixels, plus the parsers' repair notes.

    Only the formats whose tags appear are parsed, so a plain-text answer has no problems.
    """
    from omnipath_lvlm.data.formats import parse_boxes, parse_detections, parse_polygons

    width, height = slide_size
    detections: list[Detection] = []
    outlines: list[Outline] = []
    problems: list[str] = []
    if "<detection_result" in answer:
        found = parse_detections(answer)
        problems += found.problems
        for label, boxes in found.items.items():
            detections += [Detection((b[0] * width, b[1] * height, b[2] * width, b[3] * height), label) for b in boxes]
    elif "<bbox" in answer:
        found = parse_boxes(answer)
        problems += found.problems
        detections += [Detection((b[0] * width, b[1] * height, b[2] * width, b[3] * height)) for b in found.items]
    if "<contour_list" in answer or "<polygon" in answer:
        found = parse_polygons(answer)
        problems += found.problems
        outlines += [Outline([(x * width, y * height) for x, y in poly]) for poly in found.items]
    return detections, outlines, problems


def mask_outlines(masks: Sequence[np.ndarray], slide_size: tuple[int, int]) -> list[Outline]:
    """Outlines (level-0 pixels, label "mask") of the components of masks drawn on the stretched thumbnail."""
    from omnipath_lvlm.data.geometry import mask_to_polygons

    width, height = slide_size
    outlines = []
    for mask in masks:
        h, w = mask.shape
        for poly in mask_to_polygons(mask):  # (K, 2) x, y in mask pixels
            outlines.append(Outline([(float(x) / w * width, float(y) / h * height) for x, y in poly], label="mask"))
    return outlines


# --------------------------------------------------------------------------- engines


def untrained_pipeline(preset: str = "test-tiny", seed: int = 0, **overrides: Any) -> OmniPathPipeline:
    """A pipeline over a randomly initialised model of a preset (weights fixed by ``seed``)."""
    from omnipath_lvlm.config import OmniPathConfig
    from omnipath_lvlm.model import OmniPathForConditionalGeneration
    from omnipath_lvlm.processing import OmniPathProcessor

    config = OmniPathConfig.from_name(preset, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OmniPathForConditionalGeneration(config)
    return OmniPathPipeline(model, OmniPathProcessor.for_config(config), model_name=f"{preset} ({UNTRAINED_NOTE})")


def model_folder(model_name_or_dir: str | Path) -> Path | None:
    """The saved-model folder a model name means ("nano": the bundled one, when present; a folder: itself)."""
    name = str(model_name_or_dir)
    if name == "nano":
        return NANO_DIR if NANO_DIR.is_dir() else None
    return Path(name) if name != "test-tiny" and Path(name).is_dir() else None


def load_engine(model_name_or_dir: str | Path) -> OmniPathPipeline:
    """The pipeline for a model name or a saved model directory.

    "test-tiny": an UNTRAINED random test-tiny model (warns). "nano": ``models/omnipath-nano/``
    in the repository when present, else the untrained test-tiny model with a loud warning.
    A directory: ``from_pretrained`` model and processor.
    """
    name = str(model_name_or_dir)
    if name == "test-tiny":
        warnings.warn(f"model 'test-tiny' has {UNTRAINED_NOTE}", stacklevel=2)
        return untrained_pipeline("test-tiny")
    folder = model_folder(name)
    if folder is not None:
        return _load_directory(folder, "nano" if name == "nano" else folder.name)
    if name == "nano":
        warnings.warn(
            f"!!! model 'nano' was asked for but {NANO_DIR} does not exist: falling back to test-tiny with "
            f"{UNTRAINED_NOTE} !!!",
            stacklevel=2,
        )
        return untrained_pipeline("test-tiny")
    raise ValueError(f"model {name!r} is neither 'test-tiny', 'nano' nor a directory holding a saved OmniPath model")


def _load_directory(path: Path, label: str) -> OmniPathPipeline:
    from omnipath_lvlm.model import OmniPathForConditionalGeneration
    from omnipath_lvlm.processing import OmniPathProcessor

    if not (path / "config.json").is_file():
        raise ValueError(f"{path} holds no saved model (config.json is missing)")
    # weights may be stored in bf16 (the shipped nano is); compute in fp32 on the CPU, bf16 on a GPU
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = OmniPathForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device)
    processor = OmniPathProcessor.from_pretrained(path)
    return OmniPathPipeline(model, processor, model_name=label, pgfc=PGFCConfig.for_model(path))
