"""The main job and the terminal chat, end to end on a small SynthPath slide with the untrained tiny model."""
import io
import json
from argparse import Namespace

import numpy as np
from PIL import Image

from omnipath_lvlm.chat import run_chat
from omnipath_lvlm.cli import main


def test_demo_writes_every_output_and_prints_the_answer(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "2048", "--model", "test-tiny", "--num-regions", "2",
                 "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    assert "answer:" in printed and "truth:" in printed
    for name in ("answer.json", "regions.geojson", "overlay.png", "attention.png", "report.html"):
        path = out / "result" / name
        assert path.is_file() and path.stat().st_size > 0, name
        assert str(path) in printed
    answer = json.loads((out / "result" / "answer.json").read_text())
    assert len(answer["regions"]) == 2
    page = (out / "result" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "src=\"http" not in page  # self-contained
    geo = json.loads((out / "result" / "regions.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) >= 2


def test_chat_two_turns_keep_history_and_save_each_turn(tmp_path):
    image = tmp_path / "tile.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(120, 255, (96, 128, 3), dtype=np.uint8)).save(image)
    stdin = io.StringIO("What organ is this?\nIdentify the tissue type in this image.\n/quit\n")
    stdout = io.StringIO()
    args = Namespace(source=str(image), model="test-tiny", out=str(tmp_path / "chat"), pgfc="none", num_regions=0,
                     max_new_tokens=3)
    assert run_chat(args, stdin=stdin, stdout=stdout) == 0
    for turn in ("turn-001", "turn-002"):
        assert (tmp_path / "chat" / turn / "answer.json").is_file()
        assert (tmp_path / "chat" / turn / "report.html").is_file()
    second = json.loads((tmp_path / "chat" / "turn-002" / "answer.json").read_text())
    assert second["question"] == "Identify the tissue type in this image."
    assert second["meta"]["prompt_tokens"] > json.loads((tmp_path / "chat" / "turn-001" / "answer.json").read_text())["meta"]["prompt_tokens"]


def test_chat_refuses_a_bad_slide(tmp_path, capsys):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a slide")
    args = Namespace(source=str(bad), model="test-tiny", out=str(tmp_path / "c"), pgfc="none", num_regions=0, max_new_tokens=2)
    assert run_chat(args, stdin=io.StringIO(""), stdout=io.StringIO()) == 2
    assert "cannot read the slide" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_chat_turn_can_point_at_a_region_with_a_mask_file(tmp_path):
    image = tmp_path / "tile.png"
    Image.fromarray(np.full((64, 64, 3), 210, dtype=np.uint8)).save(image)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "region.png")
    stdin = io.StringIO(f"/mask {tmp_path / 'region.png'} Is this neural invasion?\n/mask nothing.png\n")
    stdout = io.StringIO()
    args = Namespace(source=str(image), model="test-tiny", out=str(tmp_path / "chat"), pgfc="none", num_regions=0,
                     max_new_tokens=2)
    assert run_chat(args, stdin=stdin, stdout=stdout) == 0
    answer = json.loads((tmp_path / "chat" / "turn-001" / "answer.json").read_text())
    assert answer["question"] == "Is this neural invasion? <mask>"
    assert "usage: /mask FILE.png QUESTION" in stdout.getvalue()


def test_pipeline_refuses_mask_count_mismatch():
    import pytest

    from omnipath_lvlm.wsi.pipeline import untrained_pipeline

    pipe = untrained_pipeline()
    img = Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8))
    with pytest.raises(ValueError, match="1 input masks given but the question holds 0 <mask> tokens"):
        pipe.analyze(img, "Is this MVI?", input_masks=[np.ones((8, 8), bool)], max_new_tokens=1)
