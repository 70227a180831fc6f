"""Whole-slide access, tissue masks and prompt-guided detail feature completion (PGFC)."""

# the --num-regions help of analyze, chat and demo (here: importing wsi.pgfc would load torch for --help)
NUM_REGIONS_HELP = "S, detail regions per answer (default: the model's, from its pgfc.json; else 8)"

WINDOW_CELLS = "cells"  # --window-um value for windows of one thumbnail token cell
WINDOW_UM_HELP = ("side of the windows --locate re-asks the question of, in micrometres of the slide (its mpp "
                  f"converts them), or {WINDOW_CELLS!r} for one thumbnail token cell around each region "
                  "(default: the model's window_um, from its pgfc.json)")


def parse_window_um(value: float | str) -> float | None:
    """A locate window side from a command line or file: positive micrometres, or ``"cells"`` -> None
    (one thumbnail token cell around each region). ValueError names the accepted values."""
    if isinstance(value, str):
        if value.strip().lower() == WINDOW_CELLS:
            return None
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"a locate window is a side in micrometres or {WINDOW_CELLS!r}, got {value!r}") from None
    if not value > 0:  # also refuses NaN
        raise ValueError(f"a locate window side must be positive micrometres, got {value}")
    return float(value)


def window_um_value(value: float | str) -> float | str:
    """A checked locate window as given on a command line or in a run's identity: micrometres (float)
    or ``"cells"``; ValueError as :func:`parse_window_um`."""
    side = parse_window_um(value)
    return WINDOW_CELLS if side is None else side


def window_um_argument(value: str) -> float | str:
    """argparse ``type`` of ``--window-um`` (:func:`window_um_value`), checked before any model loads."""
    import argparse

    try:
        return window_um_value(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
