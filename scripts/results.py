"""Write docs/RESULTS.md and the nano model card from the runs of scripts/reproduce.py.

Everything here is read from runs/repro/ (eval summaries, training metrics, the commands log);
nothing is typed in by hand except the notes in docs/results_notes.md, included verbatim.

    .venv/bin/python scripts/results.py
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from omnipath_lvlm.eval.report import build_tables, table6_pgfc
from omnipath_lvlm.eval.runner import load_summaries

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "repro"
VARIANTS = {"full": "OmniPath nano (UNI + MSFF)", "no-msff": "w/o MSFF", "no-uni": "w/o UNI", "no-uni-no-msff": "w/o UNI and MSFF"}


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def training_facts(run: Path) -> dict:
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    config = config.replace(str(ROOT) + "/", "")
    facts = {"steps": train[-1]["step"] if train else 0, "first_loss": train[0]["loss"] if train else None,
             "last_loss": train[-1]["loss"] if train else None, "config": config}
    log = RUNS / "commands.log"
    if log.is_file():  # the minutes line that follows this run's `omnipath train` command
        lines = log.read_text().splitlines()
        for i, line in enumerate(lines[:-1]):
            if " train " in line and f"output_dir={run}" in line and lines[i + 1].startswith("#"):
                facts["wall_min"] = float(lines[i + 1].split()[1])
    return facts


def chance_table(test_jsonl: Path) -> str:
    """What guessing scores on the same test records: 1/options for closed questions, the majority answer for yes/no."""
    if not test_jsonl.is_file():
        return ""
    from collections import Counter, defaultdict

    closed, yes_no = defaultdict(list), defaultdict(list)
    for line in test_jsonl.read_text().splitlines():
        rec = json.loads(line)
        level = "slide" if rec.get("slide") else "patch"
        if rec.get("answer_style") == "closed" and rec.get("options"):
            closed[(level, rec["task"])].append(1 / len(rec["options"]))
        elif rec.get("answer_style") == "yes_no":
            yes_no[(level, rec["task"])].append(rec["conversations"][-1]["value"].strip().lower())
    rows = ["Chance levels on the same test records (closed: mean 1/number of options; yes/no: always giving the",
            "majority answer); open-ended answers have no chance level worth the name.", "",
            "| Level | Task | n | chance (%) |", "|---|---|---|---|"]
    for (level, task), values in sorted(closed.items()):
        rows.append(f"| {level} | {task} (closed) | {len(values)} | {100 * statistics.mean(values):.1f} |")
    for (level, task), answers in sorted(yes_no.items()):
        top = Counter(answers).most_common(1)[0][1]
        rows.append(f"| {level} | {task} | {len(answers)} | {100 * top / len(answers):.1f} |")
    return "\n".join(rows)


def ablation_table(runs: dict[str, dict]) -> str:
    """Rows: model variants; columns: patch-level accuracy tasks (mean), detection F1 / IoU per task."""
    acc_tasks = sorted({s["task"] for r in runs.values() for s in r.values()
                        if s["level"] == "patch" and s.get("accuracy") is not None and s["kind"] in ("closed", "open", "yes_no")})
    det_tasks = sorted({s["task"] for r in runs.values() for s in r.values() if s["level"] == "patch" and s.get("f1") is not None})
    head = ["Model", "Mean accuracy", *[f"{t} F1 / IoU" for t in det_tasks], "Parse failures"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, summaries in runs.items():
        by_task = {s["task"]: s for s in summaries.values() if s["level"] == "patch"}
        accs = [by_task[t]["accuracy"] for t in acc_tasks if t in by_task]
        cells = [VARIANTS.get(name, name), pct(statistics.mean(accs)) if accs else "–"]
        for t in det_tasks:
            s = by_task.get(t)
            cells.append("–" if s is None else f"{pct(s['f1'])} / {pct(s.get('iou'))}")
        fails = sum(s["parse_failures"] for s in by_task.values())
        total = sum(s["n"] for s in by_task.values())
        cells.append(f"{fails}/{total}")
        lines.append("| " + " | ".join(cells) + " |")
    detail = ["", "Per-task accuracy (%):", "", "| Task | " + " | ".join(VARIANTS.get(n, n) for n in runs) + " |",
              "|---|" + "---|" * len(runs)]
    for t in acc_tasks:
        row = [t]
        for summaries in runs.values():
            s = next((x for x in summaries.values() if x["level"] == "patch" and x["task"] == t), None)
            row.append("–" if s is None else pct(s["accuracy"]))
        detail.append("| " + " | ".join(row) + " |")
    return "\n".join(lines + detail)


def main() -> None:
    out = ["# Results: the paper's claims in miniature on SynthPath", "",
           "Produced by `scripts/reproduce.py` then `scripts/results.py`; every number below is read from",
           "`runs/repro/`. Test records use SynthPath seeds never used for training (the exporter's split",
           "seed blocks), and nothing was tuned on them.", ""]
    log = RUNS / "commands.log"
    if log.is_file():
        lines, seen, kept = [], set(), True
        for line in log.read_text().replace(str(ROOT) + "/", "").splitlines():
            if line.startswith("#"):  # the wall time of the command above it
                if kept:
                    lines.append(line)
                continue
            kept = line not in seen  # a rerun of an unchanged command is listed once
            if kept:
                lines.append(line)
                seen.add(line)
        out += ["## Commands (with their wall time on 2 CPU cores)", "", "```", *lines, "```", ""]
    full_eval = RUNS / "eval-full"
    if (full_eval / "summary.json").is_file():
        summaries = load_summaries(full_eval)
        out += ["## PGFC ablation (table 6 analogue)", "",
                "Slide-level questions about SynthPath slides whose tumour grade is invisible in the thumbnail.", "",
                table6_pgfc(summaries).to_markdown(), ""]
        out += ["## nano on its test split, per task", "", chance_table(ROOT / "data" / "synthpath" / "test.jsonl"), ""]
        for table in build_tables(summaries, method="OmniPath nano"):
            if table.name != "table6_pgfc":
                out += [table.to_markdown(), ""]
    ablations = {n: load_summaries(RUNS / f"eval-{n}") for n in VARIANTS if n != "full" and (RUNS / f"eval-{n}" / "summary.json").is_file()}
    if ablations and (full_eval / "summary.json").is_file():
        runs = {"full": {k: v for k, v in load_summaries(full_eval).items() if v["level"] == "patch"}, **ablations}
        out += ["## UNI and MSFF ablation (tables 9 and 10 analogue)", "",
                "Same data, same steps, same seed; patch-level test records.", "", ablation_table(runs), ""]
    else:
        out += ["## UNI and MSFF ablation (tables 9 and 10 analogue)", "", "Not run yet (stage `ablations` of scripts/reproduce.py).", ""]
    stats = RUNS / "attention_stats.json"
    if stats.is_file():
        data = json.loads(stats.read_text())
        out += ["## Where the last prompt token looks (figure 2 analogue, quantified)", "",
                "Share of the first layer's last-token attention over thumbnail tokens (A_last) that falls on tissue",
                "and on tumour cells of the test slides, against those cells' share of the grid (uniform attention).",
                "Question: \"What cancer subtype is shown in this image?\".", "",
                "| Model | A_last on tissue | tissue share of grid | A_last on tumour | tumour share of grid | tumour enrichment |",
                "|---|---|---|---|---|---|"]
        for name, entry in data.items():
            m = entry["mean"]
            out.append(f"| {name} | {pct(m['tissue_share_of_attention'])} | {pct(m['tissue_share_of_grid'])} | "
                       f"{pct(m['tumour_share_of_attention'])} | {pct(m['tumour_share_of_grid'])} | "
                       f"{m['tumour_share_of_attention'] / max(m['tumour_share_of_grid'], 1e-9):.2f}x |")
        out.append("")
    for name, title in (("before", "before training"), ("after", "after training")):
        if (ROOT / "docs" / "img" / f"attention_{name}.png").is_file():
            out += [f"### Attention {title} (figure 2 analogue)", "", f"![attention {title}](img/attention_{name}.png)", ""]
    facts = training_facts(RUNS / "full") if (RUNS / "full" / "metrics.jsonl").is_file() else None
    if facts:
        out += ["## Training of the shipped nano", "",
                f"{facts['steps']} optimiser steps; training loss {facts['first_loss']:.3f} at the first log, "
                f"{facts['last_loss']:.3f} at the last" + (f"; {facts['wall_min']:.0f} min wall time." if 'wall_min' in facts else "."), ""]
    notes = ROOT / "docs" / "results_notes.md"
    if notes.is_file():
        out += [notes.read_text()]
    (ROOT / "docs" / "RESULTS.md").write_text("\n".join(out) + "\n")
    card = ROOT / "models" / "omnipath-nano"
    if card.is_dir() and facts:
        text = ["# omnipath-nano", "",
                "OmniPath at CPU size (preset `nano`: SigLIP-style 192 px/16 + UNI-style ViT, scales (1, 2), a 6-layer",
                "384-wide Llama, ResNet mask encoder, SAM-style decoder; 22.5 M parameters, bf16 weights), trained",
                "from scratch on SynthPath only. It knows nothing of real tissue: it exists so that every interface",
                "works without a download, and to test the paper's claims in miniature.", "",
                "- Data: `export_dataset(data/synthpath, seed=0, ...)` (see docs/RESULTS.md for the exact call); train split seeds",
                "  are SynthPath's train block of base seed 0, test metrics use the test block.",
                f"- Steps: {facts['steps']} (global batch 16, AdamW lr 3e-4 cosine, fp32 on CPU, seed 0)",
                f"- Wall time: {facts.get('wall_min', float('nan')):.0f} min on 2 CPU cores",
                "- Test metrics: docs/RESULTS.md (tables 1, 2, 4, 5, 6 analogues).",
                "- Rebuild: `make nano`.", "", "Training configuration:", "", "```yaml", facts["config"].strip(), "```"]
        (card / "README.md").write_text("\n".join(text) + "\n")
    print("wrote docs/RESULTS.md" + (" and models/omnipath-nano/README.md" if card.is_dir() else ""))


if __name__ == "__main__":
    main()
