"""The shipped nano model loads through `--model nano` and answers a question about a SynthPath slide."""
import warnings
from pathlib import Path

import pytest

from omnipath_lvlm.wsi.pipeline import NANO_DIR, load_engine

pytestmark = pytest.mark.skipif(not (Path(NANO_DIR) / "config.json").is_file(),
                                reason=f"{NANO_DIR} is not shipped in this checkout (run `make nano`)")


def test_shipped_nano_is_small_and_answers(tmp_path):
    size = sum(p.stat().st_size for p in Path(NANO_DIR).rglob("*") if p.is_file())
    assert size <= 50 * 2**20
    from omnipath_lvlm.synth.slide import write_slide

    slide = tmp_path / "s.tiff"
    write_slide(slide, size=2048, seed=123456)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the real nano must not fall back to the untrained model
        engine = load_engine("nano")
    assert engine.model_name == "nano"
    assert engine.model.config.preset == "nano"
    # it ships the PGFC settings it was trained and evaluated with (scripts/reproduce.py's REPRO_NUM_REGIONS)
    assert (engine.pgfc.num_regions, engine.pgfc.region_pool) == (4, 3)
    analysis = engine.analyze(slide, "What organ is this?", max_new_tokens=12)
    assert len(analysis.regions) == 4
    assert analysis.answer.strip() != ""
    assert analysis.meta["new_tokens"] >= 1
