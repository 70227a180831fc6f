"""Report tables in the layouts of the OmniPath paper, as Markdown and CSV.

Input is one run's per-task summaries, as returned by
`omnipath_lvlm.eval.metrics.TaskScores.summary` (key -> dict with ``task``,
``kind``, ``level``, ``group``, ``variant``, ``n``, ``parse_failures`` and the
metrics ``accuracy`` / ``f1`` / ``iou`` / ``dice`` as fractions in 0..1).
Several runs (e.g. baselines next to OmniPath) are passed as a mapping
method label -> summaries, and become one row each, as in the paper.

Tables (numbers are percentages with two decimals; "–" where absent):

* ``table1_patch``: patch-level diagnostic accuracy; rows = methods, columns =
  classification tasks (closed / yes-no / open; level "patch" or unset).
* ``table2_slide``: slide-level diagnostic accuracy (level "slide"); only the
  full model is shown: variant unset, else the PGFC variant "attention".
* ``table4_segmentation``: Dice per segmentation task (polygons or masks).
* ``table5_detection``: two rows per method, "F1-Score (%)" and "IoU (%)".
* ``table6_pgfc``: the PGFC ablation for the main run only; rows = slide-level
  classification tasks, columns = variants "none" / "random" / "attention"
  (w/o PGFC, Random, w/ PGFC), plus an Average row (the mean over the tasks
  that have a value in that column).

Known paper task labels (e.g. "HCC-S", "MoNuSeg") come first in the paper's
column order, any other task follows in the order it was scored. A ``Group``
column (dataset or organ) appears when any summary of the table has a group.
Every table ends with a "Parse failures" column: unreadable answers over
samples ("3/120"), summed across the tasks of the row.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnipath_lvlm.eval.metrics import CLASSIFICATION_KINDS, DETECTION_KINDS, SEGMENTATION_KINDS
from omnipath_lvlm.fileio import atomic_write_text

Summary = Mapping[str, Any]
Summaries = Mapping[str, Summary]
Cell = str | float | int | None

# Column orders of the paper's tables.
PATCH_TASKS = (
    "HCC-S", "HCC-G", "ICC-S", "ICC-G", "RCC-S", "LUNG-S", "LUNG-G", "STAD-L", "STAD-G",
    "MVI", "NI", "PanCancer", "OC", "TC", "TIL", "MSI", "GLR-7",
)
SLIDE_TASKS = (
    "HCC-S", "HCC-G", "ICC-S", "ICC-G", "RCC-S", "LUNG-S", "LUNG-G", "STAD-L", "STAD-G",
    "LNM", "HCC-P", "CRC-P",
)
SEGMENTATION_TASKS = ("HCC", "ICC", "RCC", "GBM", "LUAD", "BC", "NS", "NIS", "LNMS")
DETECTION_TASKS = ("HCC", "ICC", "RCC", "GBM", "LUAD", "BC", "LD", "VD", "ND", "MoNuSeg", "NuCLS", "PanNuke")
# PGFC ablation variants (summary "variant") and their column headers in table 6.
PGFC_VARIANTS = (("none", "w/o PGFC"), ("random", "Random"), ("attention", "w/ PGFC"))
PARSE_FAILURES = "Parse failures"


@dataclass(frozen=True)
class Table:
    """One report table: a file stem, a title, column headers and rows of cells."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def to_markdown(self) -> str:
        """GitHub-flavoured Markdown; numbers with two decimals, missing values as '–'."""
        lines = [_md_row(self.columns), "|" + "---|" * len(self.columns)]
        lines += [_md_row(_format_cell(cell, "–") for cell in row) for row in self.rows]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV text with a header row; numbers with two decimals, missing values empty."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([_format_cell(cell, "") for cell in row] for row in self.rows)
        return buffer.getvalue()


def _format_cell(cell: Cell, missing: str) -> str:
    if cell is None:
        return missing
    if isinstance(cell, float):
        return f"{cell:.2f}"
    return str(cell)


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _percent(value: Any) -> float | None:
    return None if value is None else 100.0 * float(value)


# --------------------------------------------------------------------------- #
# Selecting summaries
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Entry:
    """One summary placed in a table: which method/group row and which task column."""

    method: str
    group: str | None
    task: str
    summary: Summary


def _field(key: str, summary: Summary, name: str) -> Any:
    if name == "task":
        return summary.get("task", key)
    if name == "kind" and "kind" not in summary:
        raise ValueError(f"summary {key!r} has no 'kind'; cannot place it in a table")
    return summary.get(name)


def _select(runs: Mapping[str, Summaries], kinds: Sequence[str], levels: Sequence[str | None],
            variants: Sequence[str | None]) -> list[_Entry]:
    """Entries of the given kinds/levels/variants; earlier variants win over later ones per cell."""
    chosen: dict[tuple[str, str | None, str], tuple[int, str, _Entry]] = {}
    for method, summaries in runs.items():
        for key, summary in summaries.items():
            if _field(key, summary, "kind") not in kinds or summary.get("level") not in levels:
                continue
            variant = summary.get("variant")
            if variant not in variants:
                continue
            entry = _Entry(method, summary.get("group"), _field(key, summary, "task"), summary)
            cell = (method, entry.group, entry.task)
            rank = variants.index(variant)
            previous = chosen.get(cell)
            if previous is not None and previous[0] == rank:
                raise ValueError(f"summaries {previous[1]!r} and {key!r} of {method!r} both fill the {entry.task!r} cell")
            if previous is None or rank < previous[0]:
                chosen[cell] = (rank, key, entry)
    return [entry for _, _, entry in chosen.values()]


def _ordered(names: Iterable[str], paper_order: Sequence[str]) -> list[str]:
    """Paper labels first in the paper's order, then the others in first-seen order."""
    seen = list(dict.fromkeys(names))
    return [n for n in paper_order if n in seen] + [n for n in seen if n not in paper_order]


def _row_keys(entries: list[_Entry]) -> list[tuple[str, str | None]]:
    return list(dict.fromkeys((e.method, e.group) for e in entries))


def _failures(summaries: Iterable[Summary]) -> str:
    summaries = list(summaries)
    failed = sum(int(s.get("parse_failures") or 0) for s in summaries)
    total = sum(int(s.get("n") or 0) for s in summaries)
    return f"{failed}/{total}"


def _metric_table(name: str, title: str, entries: list[_Entry], paper_order: Sequence[str],
                  metrics: Sequence[tuple[str | None, str]]) -> Table:
    """Rows = (method, group[, metric]), columns = tasks; cells = metric in percent.

    metrics: (row label or None for a single unlabeled metric, summary field).
    """
    tasks = _ordered((e.task for e in entries), paper_order)
    has_group = any(e.group is not None for e in entries)
    labelled = metrics[0][0] is not None
    columns = ("Method",) + (("Group",) if has_group else ()) + (("Metric",) if labelled else ())
    columns += tuple(tasks) + (PARSE_FAILURES,)
    cells = {(e.method, e.group, e.task): e.summary for e in entries}
    rows = []
    for method, group in _row_keys(entries):
        row_summaries = [cells[(method, group, t)] for t in tasks if (method, group, t) in cells]
        for label, metric in metrics:
            row: list[Cell] = [method] + ([group] if has_group else []) + ([label] if labelled else [])
            row += [_percent(cells[(method, group, t)].get(metric)) if (method, group, t) in cells else None
                    for t in tasks]
            row.append(_failures(row_summaries))
            rows.append(tuple(row))
    return Table(name=name, title=title, columns=columns, rows=tuple(rows))


# --------------------------------------------------------------------------- #
# The paper's tables
# --------------------------------------------------------------------------- #


def table1_patch(runs: Mapping[str, Summaries]) -> Table:
    """Patch-level diagnostic accuracy (paper table 1)."""
    entries = _select(runs, CLASSIFICATION_KINDS, ("patch", None), (None,))
    return _metric_table("table1_patch", "Table 1: patch-level diagnostic accuracy (%)", entries,
                         PATCH_TASKS, ((None, "accuracy"),))


def table2_slide(runs: Mapping[str, Summaries]) -> Table:
    """Slide-level diagnostic accuracy of the full model (paper table 2)."""
    entries = _select(runs, CLASSIFICATION_KINDS, ("slide",), (None, "attention"))
    return _metric_table("table2_slide", "Table 2: slide-level diagnostic accuracy (%)", entries,
                         SLIDE_TASKS, ((None, "accuracy"),))


def table4_segmentation(runs: Mapping[str, Summaries]) -> Table:
    """Segmentation Dice (paper table 4)."""
    entries = _select(runs, SEGMENTATION_KINDS, ("patch", "slide", None), (None, "attention"))
    return _metric_table("table4_segmentation", "Table 4: segmentation Dice (%)", entries,
                         SEGMENTATION_TASKS, ((None, "dice"),))


def table5_detection(runs: Mapping[str, Summaries]) -> Table:
    """Detection F1-score and IoU, two rows per method (paper table 5)."""
    entries = _select(runs, DETECTION_KINDS, ("patch", "slide", None), (None, "attention"))
    return _metric_table("table5_detection", "Table 5: detection F1-score and IoU (%)", entries,
                         DETECTION_TASKS, (("F1-Score (%)", "f1"), ("IoU (%)", "iou")))


def table6_pgfc(summaries: Summaries) -> Table:
    """PGFC ablation (paper table 6): rows = slide-level tasks, columns = none / random / attention."""
    variants = tuple(v for v, _ in PGFC_VARIANTS)
    cells: dict[tuple[str | None, str, str], Summary] = {}
    for key, summary in summaries.items():
        variant = summary.get("variant")
        if _field(key, summary, "kind") not in CLASSIFICATION_KINDS or variant not in variants:
            continue
        cell = (summary.get("group"), _field(key, summary, "task"), variant)
        if cell in cells:
            raise ValueError(f"two summaries fill the PGFC ablation cell {cell}; the second is {key!r}")
        cells[cell] = summary
    has_group = any(group is not None for group, _, _ in cells)
    tasks = _ordered((task for _, task, _ in cells), SLIDE_TASKS)
    groups = list(dict.fromkeys(group for group, _, _ in cells))
    columns = ("Task",) + (("Group",) if has_group else ()) + tuple(h for _, h in PGFC_VARIANTS) + (PARSE_FAILURES,)
    rows: list[tuple[Cell, ...]] = []
    column_values: dict[str, list[float]] = {v: [] for v in variants}
    for task in tasks:
        for group in groups:
            present = {v: cells[(group, task, v)] for v in variants if (group, task, v) in cells}
            if not present:
                continue
            values = {v: _percent(s.get("accuracy")) for v, s in present.items()}
            for v, value in values.items():
                if value is not None:
                    column_values[v].append(value)
            rows.append((task,) + ((group,) if has_group else ()) + tuple(values.get(v) for v in variants)
                        + (_failures(present.values()),))
    if rows:
        averages = tuple(sum(vals) / len(vals) if vals else None for vals in column_values.values())
        rows.append(("Average",) + (("",) if has_group else ()) + averages + (_failures(cells.values()),))
    return Table(name="table6_pgfc", title="Table 6: PGFC ablation, slide-level accuracy (%)",
                 columns=columns, rows=tuple(rows))


def build_tables(summaries: Summaries, *, method: str = "OmniPath",
                 baselines: Mapping[str, Summaries] | None = None) -> list[Table]:
    """All paper tables that have at least one row; baselines are rows above the main method."""
    runs = dict(baselines or {})
    if method in runs:
        raise ValueError(f"method label {method!r} is also a baseline label")
    runs[method] = summaries
    tables = [table1_patch(runs), table2_slide(runs), table4_segmentation(runs),
              table5_detection(runs), table6_pgfc(summaries)]
    return [table for table in tables if table.rows]


# --------------------------------------------------------------------------- #
# Comparing two runs
# --------------------------------------------------------------------------- #


def _metrics_of(kind: str) -> tuple[tuple[str, str], ...]:
    if kind in CLASSIFICATION_KINDS:
        return (("Accuracy (%)", "accuracy"),)
    if kind in DETECTION_KINDS:
        return (("F1-Score (%)", "f1"), ("IoU (%)", "iou"))
    if kind in SEGMENTATION_KINDS:
        return (("Dice (%)", "dice"),)
    raise ValueError(f"unknown summary kind {kind!r}")


def compare_runs(summary_a: Summaries, summary_b: Summaries, labels: tuple[str, str] = ("A", "B")) -> str:
    """Markdown table of two runs side by side with the difference B − A in percentage points."""
    label_a, label_b = labels
    columns = ("Task", "Metric", label_a, label_b, f"Δ ({label_b} − {label_a})",
               f"{PARSE_FAILURES} {label_a}", f"{PARSE_FAILURES} {label_b}")
    rows: list[tuple[Cell, ...]] = []
    for key in dict.fromkeys([*summary_a, *summary_b]):
        a, b = summary_a.get(key), summary_b.get(key)
        kinds = {_field(key, s, "kind") for s in (a, b) if s is not None}
        if len(kinds) > 1:
            raise ValueError(f"task {key!r} is scored as {sorted(kinds)} in the two runs; cannot compare")
        for label, metric in _metrics_of(kinds.pop()):
            value_a = _percent(a.get(metric)) if a is not None else None
            value_b = _percent(b.get(metric)) if b is not None else None
            delta = f"{value_b - value_a:+.2f}" if value_a is not None and value_b is not None else None
            rows.append((key, label, value_a, value_b, delta,
                         _failures([a]) if a is not None else None, _failures([b]) if b is not None else None))
    table = Table(name="comparison", title=f"{label_a} vs {label_b}", columns=columns, rows=tuple(rows))
    return table.to_markdown()


# --------------------------------------------------------------------------- #
# Writing files
# --------------------------------------------------------------------------- #


def render_markdown(tables: Sequence[Table]) -> str:
    """All tables as one Markdown document, one section per table."""
    parts = ["# Evaluation report\n"]
    for table in tables:
        parts.append(f"\n## {table.title}\n\n{table.to_markdown()}")
    if not tables:
        parts.append("\nNo scored tasks.\n")
    return "".join(parts)


def write_reports(summaries: Summaries, out_dir: str | os.PathLike[str], *, method: str = "OmniPath",
                  baselines: Mapping[str, Summaries] | None = None) -> dict[str, Path]:
    """Write ``tables.md`` and one ``<table name>.csv`` per non-empty table; returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(summaries, method=method, baselines=baselines)
    written: dict[str, Path] = {}
    for table in tables:
        path = out / f"{table.name}.csv"
        atomic_write_text(path, table.to_csv())
        written[table.name] = path
    markdown = out / "tables.md"
    atomic_write_text(markdown, render_markdown(tables))
    written["tables"] = markdown
    return written
