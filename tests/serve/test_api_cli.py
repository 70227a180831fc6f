"""`omnipath serve` argument parsing (the engine itself is loaded only when serving)."""
from __future__ import annotations

import argparse

from omnipath_lvlm.serve import cli


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_defaults_bind_loopback_without_remote_images(tmp_path):
    args = parse(["serve", "--slides", str(tmp_path), "--model", "m"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.allow_image_host == []
    assert args.func is cli.run


def test_limits_are_parsed(tmp_path):
    args = parse(["serve", "--slides", str(tmp_path), "--model", "m", "--max-concurrent", "3", "--max-queue", "5",
                  "--max-tokens", "99", "--api-key", "k", "--allow-image-host", "a.org", "--allow-image-host", "b.org"])
    assert (args.max_concurrent, args.max_queue, args.max_tokens, args.api_key) == (3, 5, 99, "k")
    assert args.allow_image_host == ["a.org", "b.org"]


def test_missing_slide_folder_or_bad_limits_exit_2_before_loading_a_model(tmp_path, capsys):
    assert cli.run(parse(["serve", "--slides", str(tmp_path / "nope"), "--model", "m"])) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli.run(parse(["serve", "--slides", str(tmp_path), "--model", "m", "--max-concurrent", "0"])) == 2
    assert "max_concurrent" in capsys.readouterr().err
