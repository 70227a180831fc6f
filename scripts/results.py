"""Write docs/RESULTS.md and the nano model card from the runs of scripts/reproduce.py.

Everything here is read from runs/repro/ (eval summaries, training metrics, the commands log);
nothing is typed in by hand except the notes in docs/results_notes.md, included verbatim.

    .venv/bin/python scripts/results.py
"""
from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import yaml

from omnipath_lvlm.eval.report import build_tables, table6_pgfc
from omnipath_lvlm.eval.runner import load_summaries

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "repro"
MODES = ("none", "random", "attention", "record")  # PGFC modes of slide items, in table order
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
            if " train " in line and f"output_dir={run} " in line and lines[i + 1].startswith("#"):
                facts["wall_min"] = float(lines[i + 1].split()[1])
                facts["wall_note"] = lines[i + 1].split(" min", 1)[1].strip()  # e.g. "(beside other jobs)"
    return facts


def minutes(facts: dict | None) -> str:
    """A run's wall time as "N min", or "not measured here" when its run or time is missing."""
    if not facts or "wall_min" not in facts:
        return "not measured here"
    return f"{facts['wall_min']:.0f} min" + (f" {facts['wall_note']}" if facts.get("wall_note") else "")


def mixture_shares(config_yaml: str, tasks: tuple[str, ...] = ("grade", "subtype")) -> dict[str, float]:
    """Weighted shares of slide records and of `tasks`' records in a training config's mixture
    (honouring each file's own task filter, as the training dataset does)."""
    total = slides = asked = 0.0
    for entry in yaml.safe_load(config_yaml)["data"]["train"]:
        path = Path(entry["path"]) if Path(entry["path"]).is_absolute() else ROOT / entry["path"]
        weight, kept = entry.get("weight", 1.0), set(entry.get("tasks") or [])
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if kept and rec["task"] not in kept:
                continue
            total += weight
            slides += weight * ("slide" in rec)
            asked += weight * (rec["task"] in tasks)
    return {"records": total, "slide": slides / max(total, 1), "asked": asked / max(total, 1)}


CARRIED = "> Carried over from the previous docs/RESULTS.md:"


def carried_section(previous: str, heading: str, runs: list[str]) -> list[str]:
    """`heading`'s section of an earlier RESULTS.md text, for runs no longer in runs/repro/.

    The section (up to the next "## " heading) is kept verbatim, with the commands that made
    `runs` and their wall times from that file's commands block. Empty when the earlier text has
    no such section, or only its "Not run yet" placeholder.
    """
    lines = previous.splitlines()
    if heading not in lines:
        return []
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = lines[start:end]
    if not any(line.startswith("|") for line in section):
        return []
    if any(line.startswith(CARRIED) for line in section):  # carried before: already annotated
        return section
    commands, keep = [], False
    for line in lines[:start]:
        if line.startswith("#   "):
            if keep:
                commands.append(line)
            continue
        tokens = line.split()  # a run's training (output_dir=...) and evaluation (--out ...) commands
        keep = any(f"output_dir=runs/repro/{name}" in tokens or f"runs/repro/eval-{name}" in tokens for name in runs)
        if keep:
            commands.append(line)
    while section and not section[-1].strip():
        section.pop()
    note = [f"{CARRIED} runs/repro/ held none of its runs",
            f"> ({', '.join(runs)}) when this file was regenerated. Their data (data/synthpath, base",
            "> seed 0) and commands are unchanged; they were:", "", "```", *commands, "```"]
    return [*section[:1], "", *note, *section[1:], ""]


def _level(rec: dict) -> str:
    return "slide" if rec.get("slide") else "patch"


def _reference_answers(records: list[dict]) -> dict[tuple[str, str, str], Counter]:
    """(level, task, style) -> how often each reference answer occurs, for yes/no and open records."""
    answers: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for rec in records:
        if rec.get("answer_style") in ("yes_no", "open"):
            key = (_level(rec), rec["task"], rec["answer_style"])
            answers[key][rec["conversations"][-1]["value"].strip().lower()] += 1
    return answers


def chance_table(test_jsonl: Path) -> str:
    """What guessing scores on the same records: 1/options for closed questions, the best constant answer for the rest."""
    if not test_jsonl.is_file():
        return ""
    records = [json.loads(line) for line in test_jsonl.read_text().splitlines()]
    closed = defaultdict(list)
    for rec in records:
        if rec.get("answer_style") == "closed" and rec.get("options"):
            closed[(_level(rec), f"{rec['task']} (closed)")].append(1 / len(rec["options"]))
    constant = {(level, task if style == "yes_no" else f"{task} (open)"): counts
                for (level, task, style), counts in _reference_answers(records).items()}
    rows = ["Chance levels on the same test records: closed questions, a uniform guess among the options (mean",
            "1/number of options); yes/no and open questions, the best constant answer (always giving the",
            "commonest reference answer of these very records, an upper bound on guessing).", "",
            "| Level | Task | n | chance (%) | guess |", "|---|---|---|---|---|"]
    for (level, task), values in sorted(closed.items()):
        rows.append(f"| {level} | {task} | {len(values)} | {100 * statistics.mean(values):.1f} | uniform |")
    for (level, task), counts in sorted(constant.items()):
        answer, top = counts.most_common(1)[0]
        rows.append(f"| {level} | {task} | {sum(counts.values())} | {100 * top / sum(counts.values()):.1f} | \"{answer}\" |")
    return "\n".join(rows)


def item_correct(predictions: Path, test_jsonl: Path) -> dict[tuple[str, str | None], bool]:
    """(record id, PGFC variant) -> whether the answer is right, for the closed, yes/no and open items."""
    from omnipath_lvlm.eval.metrics import score_closed, score_open, score_yes_no

    records = {r["id"]: r for r in map(json.loads, test_jsonl.read_text().splitlines())}
    out = {}
    for line in predictions.read_text().splitlines():
        pred = json.loads(line)
        rec = records.get(pred["id"])
        if rec is None or rec.get("answer_style") not in ("closed", "yes_no", "open"):
            continue
        reference = rec["conversations"][-1]["value"]
        if rec["answer_style"] == "closed":
            right = score_closed(pred["prediction"], rec["options"], rec["options"].index(rec["gt"]["label"])).correct
        elif rec["answer_style"] == "yes_no":
            right = score_yes_no(pred["prediction"], reference).correct
        else:
            right = score_open(pred["prediction"], rec["gt"].get("label", reference)).exact
        out[(pred["id"], pred.get("variant"))] = bool(right)
    return out


def chance_probabilities(test_jsonl: Path) -> dict[str, float]:
    """Record id -> probability that guessing answers it right (closed: 1/options; yes/no and open: the
    share of the commonest reference answer among the same level's records of that task and style)."""
    records = [json.loads(l) for l in test_jsonl.read_text().splitlines()]
    answers = _reference_answers(records)
    out = {}
    for rec in records:
        style = rec.get("answer_style")
        if style == "closed" and rec.get("options"):
            out[rec["id"]] = 1 / len(rec["options"])
        elif style in ("yes_no", "open"):
            counts = answers[(_level(rec), rec["task"], style)]
            out[rec["id"]] = counts.most_common(1)[0][1] / sum(counts.values())
    return out


def at_least(k: int, probabilities: list[float]) -> float:
    """P(X >= k) for X the number of successes of independent trials with these probabilities (Poisson binomial)."""
    dist = [1.0]
    for p in probabilities:
        dist = [a * (1 - p) + b * p for a, b in zip([*dist, 0.0], [0.0, *dist])]
    return float(min(1.0, sum(dist[k:])))


def above_chance_table(predictions: Path, test_jsonl: Path, tasks: tuple[str, ...] = ("grade", "subtype")) -> str:
    """Are `tasks` answered right more often than guessing? Per PGFC mode: right answers against the
    number guessing is expected to get (chance_probabilities), with the one-sided exact p-value."""
    if not predictions.is_file():
        return ""
    chance = chance_probabilities(test_jsonl)
    task_of = {r["id"]: r["task"] for r in map(json.loads, test_jsonl.read_text().splitlines())}
    correct = item_correct(predictions, test_jsonl)
    lines = ["| PGFC | Questions | n | right | expected by guessing | one-sided p (exact) |", "|---|---|---|---|---|---|"]
    for variant in [m for m in MODES if any(v == m for _, v in correct)]:
        for group in (*[(t,) for t in tasks], tasks):
            ids = [i for (i, v) in correct if v == variant and task_of.get(i) in group and i in chance]
            if not ids:
                continue
            k = sum(correct[(i, variant)] for i in ids)
            probs = [chance[i] for i in ids]
            name = " + ".join(group) if len(group) > 1 else group[0]
            lines.append(f"| {variant or '–'} | {name} | {len(ids)} | {k} | {sum(probs):.1f} | {at_least(k, probs):.3g} |")
    return "\n".join(lines)


def region_hit_table(predictions: list[Path], test_jsonl: Path, tasks: tuple[str, ...] = ("grade", "subtype")) -> str:
    """Do the detail regions land on a tumour, and are `tasks` answered better when they do?

    Per PGFC mode: the share of slide questions with at least one region overlapping a true tumour
    box (IoU > 0), and the accuracy on `tasks` split by whether a region landed on a tumour.
    """
    from omnipath_lvlm.eval.metrics import best_iou

    records = {r["id"]: r for r in map(json.loads, test_jsonl.read_text().splitlines())}
    hits: dict[str, list[bool]] = defaultdict(list)
    right: dict[tuple[str, bool], list[bool]] = defaultdict(list)
    for path in predictions:
        if not path.is_file():
            continue
        correct = item_correct(path, test_jsonl)
        for pred in map(json.loads, path.read_text().splitlines()):
            rec, variant = records.get(pred["id"]), pred.get("variant")
            if rec is None or variant in (None, "none") or (pred["id"], variant) not in correct:
                continue
            hit = bool(pred.get("regions")) and bool((best_iou(pred["regions"], rec["gt"].get("tumour_boxes", [])) > 0).any())
            hits[variant].append(hit)
            if rec["task"] in tasks:
                right[(variant, hit)].append(correct[(pred["id"], variant)])
    if not hits:
        return ""

    def acc(values: list[bool]) -> str:
        return f"{100 * sum(values) / len(values):.1f} (n = {len(values)})" if values else "–"

    name = " + ".join(tasks)
    lines = [f"| PGFC | questions | a region on tumour (%) | {name} right, a region on tumour (%) | "
             f"{name} right, none on tumour (%) |", "|---|---|---|---|---|"]
    for variant, values in hits.items():
        lines.append(f"| {variant} | {len(values)} | {100 * sum(values) / len(values):.1f} | "
                     f"{acc(right[(variant, True)])} | {acc(right[(variant, False)])} |")
    return "\n".join(lines)


def pgfc_paired_table(predictions: list[Path], test_jsonl: Path) -> str:
    """All slide questions pooled: accuracy per PGFC mode with a 95 % Wilson interval, and exact McNemar tests.

    `predictions`: the eval runs' predictions files (their modes are merged by question id).
    """
    from scipy.stats import binomtest

    correct = {k: v for path in predictions if path.is_file() for k, v in item_correct(path, test_jsonl).items()}
    modes = [m for m in MODES if any(v == m for _, v in correct)]
    ids = sorted({i for i, _ in correct if all((i, m) in correct for m in modes)})
    if not ids:
        return ""
    lines = ["| PGFC | questions | right | accuracy (%) | 95 % interval |", "|---|---|---|---|---|"]
    for m in modes:
        k = sum(correct[(i, m)] for i in ids)
        ci = binomtest(k, len(ids)).proportion_ci(method="wilson")
        lines.append(f"| {m} | {len(ids)} | {k} | {100 * k / len(ids):.1f} | {100 * ci.low:.1f}–{100 * ci.high:.1f} |")
    lines += ["", "| Pair | only the first right | only the second right | exact McNemar p |", "|---|---|---|---|"]
    for a, b in (("attention", "random"), ("attention", "none"), ("random", "none"), ("record", "attention")):
        if a in modes and b in modes:
            only_a = sum(correct[(i, a)] and not correct[(i, b)] for i in ids)
            only_b = sum(correct[(i, b)] and not correct[(i, a)] for i in ids)
            p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
            lines.append(f"| {a} vs {b} | {only_a} | {only_b} | {p:.3g} |")
    return "\n".join(lines)


def closed_text_table(runs: list[tuple[Path, Path]]) -> str:
    """Closed answers of (predictions, test JSONL) runs scored two ways: the strict rule and the option text alone."""
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])  # n, strict right, option text right
    for predictions, test_jsonl in runs:
        closed_text_counts(predictions, test_jsonl, counts)
    lines = ["| Level | Task | PGFC | n | strict (%) | option text only (%) |", "|---|---|---|---|---|---|"]
    for (level, task, variant), (n, right, text) in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0]))):
        lines.append(f"| {level} | {task} | {variant or '–'} | {n} | {100 * right / n:.1f} | {100 * text / n:.1f} |")
    return "\n".join(lines)


def closed_text_counts(predictions: Path, test_jsonl: Path, counts: dict[tuple, list[int]]) -> None:
    """Add (level, task, variant) -> [n, strict right, option text right] of one run's closed answers to `counts`."""
    from omnipath_lvlm.data.formats import normalize_answer

    records = {r["id"]: r for r in map(json.loads, test_jsonl.read_text().splitlines())}
    strict = item_correct(predictions, test_jsonl)
    for line in predictions.read_text().splitlines():
        pred = json.loads(line)
        rec = records.get(pred["id"])
        if rec is None or rec.get("answer_style") != "closed":
            continue
        text = normalize_answer(re.sub(r"^\s*\(?[A-Z][.)]\s*", "", pred["prediction"]))
        key = ("slide" if rec.get("slide") else "patch", rec["task"], pred.get("variant"))
        counts[key][0] += 1
        counts[key][1] += strict[(pred["id"], pred.get("variant"))]
        counts[key][2] += text == normalize_answer(rec["gt"]["label"])


def detection_overlap_table(predictions: Path) -> str:
    """Do the predicted boxes land on true objects? Against a control: the same boxes scored on another image.

    Per detection task: the share of predicted boxes that overlap a true box of their own image
    (IoU > 0) and their mean best IoU, next to the same numbers when each image's predictions are
    scored against the true boxes of the next image of the same task (what box placement alone,
    without looking at the image, would give).
    """
    import numpy as np

    from omnipath_lvlm.data.formats import parse_boxes, parse_detections
    from omnipath_lvlm.eval.metrics import best_iou

    def boxes(text: str, kind: str) -> tuple[list, bool]:
        if kind == "detections":
            parsed = parse_detections(text)
            return [b for group in parsed.items.values() for b in group], parsed.ok
        parsed = parse_boxes(text)
        return list(parsed.items), parsed.ok

    per_task = defaultdict(list)
    for line in predictions.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") in ("boxes", "detections"):
            pred, ok = boxes(rec["prediction"], rec["kind"])
            per_task[rec["task"]].append((pred, boxes(rec["reference"], rec["kind"])[0], ok))
    lines = ["| Task | images | predicted boxes | answers read with repairs | boxes on a true object | control | "
             "mean best IoU | control |", "|---|---|---|---|---|---|---|---|"]
    for task, items in sorted(per_task.items()):
        own = np.concatenate([best_iou(p, g) for p, g, _ in items] or [np.zeros(0)])
        other = np.concatenate([best_iou(p, items[(i + 1) % len(items)][1]) for i, (p, _, _) in enumerate(items)] or [np.zeros(0)])
        repaired = sum(not ok for _, _, ok in items)
        share = (lambda v: pct(float((v > 0).mean())) if len(v) else "–")
        mean = (lambda v: pct(float(v.mean())) if len(v) else "–")
        lines.append(f"| {task} | {len(items)} | {len(own)} | {repaired} | {share(own)} | {share(other)} | {mean(own)} | {mean(other)} |")
    return "\n".join(lines)


def metrics_table(summaries: dict[str, dict], variants: tuple[str | None, ...] = (None, "attention")) -> str:
    """One row per task (level, n, metric, value) for the model card; slide rows use PGFC attention."""
    lines = ["| Level | Task | n | Metric | Value (%) | Parse failures |", "|---|---|---|---|---|---|"]
    for s in sorted(summaries.values(), key=lambda s: (s["level"], s["task"])):
        if s.get("variant") not in variants:
            continue
        metric = next((m for m in ("accuracy", "f1", "dice") if s.get(m) is not None), None)
        if metric is None:
            continue
        name = {"accuracy": "accuracy", "f1": "F1 at IoU 0.5", "dice": "Dice"}[metric]
        lines.append(f"| {s['level']} | {s['task']} | {s['n']} | {name} | {pct(s[metric])} | {s['parse_failures']} |")
    return "\n".join(lines)


def variant_table(summaries: dict[str, dict]) -> str:
    """Accuracy (%) of each classification task (rows) under each PGFC variant (columns) present."""
    variants = [v for v in MODES if any(s.get("variant") == v for s in summaries.values())]
    cells = {(s["task"], s["variant"]): s for s in summaries.values() if s.get("accuracy") is not None}
    lines = ["| Task | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for task in sorted({t for t, _ in cells}):
        lines.append(f"| {task} | " + " | ".join(pct(cells[(task, v)]["accuracy"]) if (task, v) in cells else "–"
                                                 for v in variants) + " |")
    return "\n".join(lines)


def runs_table(runs: dict[str, dict], variant: str | None = None) -> str:
    """Accuracy (%) of each classification task (rows) in each run (columns, by name); only
    `variant`'s rows (a PGFC mode) when given."""
    runs = {name: {k: s for k, s in r.items() if variant is None or s.get("variant") == variant}
            for name, r in runs.items()}
    tasks = sorted({s["task"] for r in runs.values() for s in r.values() if s.get("accuracy") is not None})
    lines = ["| Task | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for task in tasks:
        cells = [next((pct(s["accuracy"]) for s in r.values() if s["task"] == task and s.get("accuracy") is not None), "–")
                 for r in runs.values()]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def feature_probe_table(results: dict[str, dict], names: dict[str, str]) -> str:
    """Held-out linear-probe accuracy (%) per feature source and view (rows) and label (columns), with the constant guess."""
    labels = sorted({label for views in results.values() for probes in views.values() for label in probes})
    lines = ["| Features | View | " + " | ".join(labels) + " | Slides (fit / scored) |", "|---|---|" + "---|" * (len(labels) + 1)]
    for source, views in results.items():
        for view, probes in views.items():
            cells = [f"{pct(probes[l]['accuracy'])} (constant {pct(probes[l]['constant'])})" if l in probes else "–" for l in labels]
            first = next(iter(probes.values()))
            lines.append(f"| {names.get(source, source)} | {view} | " + " | ".join(cells) + f" | {first['n_fit']} / {first['n_score']} |")
    return "\n".join(lines)


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


def nano_stages() -> tuple[tuple[str, str], ...]:
    """(run name, config path) of nano's training stages, as scripts/reproduce.py runs them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("omnipath_reproduce_stages", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.NANO_STAGES)


def stage_description(config_yaml: str) -> list[str]:
    """A training config in card lines: optimiser, data mixture, and the settings that differ from plain training."""
    config = yaml.safe_load(config_yaml)
    optim, train, data = config.get("optim", {}), config.get("train", {}), config.get("data", {})
    filtered = [e for e in data["train"] if e.get("tasks")]
    tasks = tuple(sorted({t for e in filtered for t in e["tasks"]})) or ("grade", "subtype")
    shares = mixture_shares(config_yaml, tasks=tasks)
    replay = [e.get("weight", 1.0) for e in data["train"] if not e.get("tasks") and Path(e["path"]).name == "train-patch.jsonl"]
    asked = f"{', '.join(tasks)} questions (slides and patches)" if filtered else "grade and subtype questions"
    lines = [f"global batch {train.get('global_batch_size')}, AdamW lr {optim.get('lr'):g} {optim.get('schedule', '')}, "
             f"{train.get('precision', 'auto')} on CPU, seed {train.get('seed')}",
             f"{shares['records']:.0f} records per pass; slide records {pct(shares['slide'])} %, {asked} {pct(shares['asked'])} %"
             + (f"; patch records replayed at weight {replay[0]:g}" if replay and replay[0] != 1 else "")]
    if optim.get("freeze"):
        lines.append("frozen: " + ", ".join(optim["freeze"])
                     + ("; the vision tower's features cached" if data.get("cache_vision_features") else ""))
    if train.get("focus_loss_weight"):
        lines.append(f"focus loss weight {train['focus_loss_weight']:g} (first-layer attention towards each slide's "
                     f"{data.get('focus_boxes')})")
    if data.get("closed_answers") == "text":
        lines.append("closed-ended answers trained as the option text alone (asked a closed question, nano answers "
                     "with the option's text)")
    return lines


def window_words(side: float | None) -> str:
    """A `--locate` window side (``window_um``) in words: "192 um", or "one thumbnail token cell" for None."""
    return "one thumbnail token cell" if side is None else f"{side:g} um"


def read_pgfc(model_dir: Path) -> dict | None:
    """A model folder's PGFC settings (its pgfc.json), or None when it has none."""
    path = model_dir / "pgfc.json"
    return json.loads(path.read_text()) if path.is_file() else None


def model_card(order: tuple[tuple[str, str], ...], stages: dict[str, dict], card_metrics: str,
               pgfc: dict | None = None) -> str:
    """models/omnipath-nano/README.md: data, each stage's config, steps and wall time, PGFC settings, test metrics.

    ``order``: (run name, config path) of every stage (`nano_stages`); ``stages``: the facts of those
    whose run folder exists (`training_facts`); ``pgfc``: the shipped pgfc.json, if any."""
    earlier = "run by an earlier session, its run folder not in runs/repro/ (docs/RESULTS.md)"
    text = ["# omnipath-nano", "",
            "OmniPath at CPU size (preset `nano`: SigLIP-style 192 px/16 + UNI-style ViT, scales (1, 2), a 6-layer",
            "384-wide Llama, ResNet mask encoder, SAM-style decoder; 22.5 M parameters, bf16 weights), trained",
            "from scratch on SynthPath only. It knows nothing of real tissue: it exists so that every interface",
            "works without a download, and to test the paper's claims in miniature.", "",
            "- Data (the `omnipath synth patches` commands in docs/RESULTS.md): the train split of",
            "  data/synthpath (base seed 0: 720 patches, 48 slides) and the train splits of base seeds 1 and 2",
            "  (240 more slides). Test metrics use base seed 0's test block; no test seed is a training seed."]
    configs = []
    for k, (name, path) in enumerate(order, start=1):
        facts = stages.get(name)
        config_yaml = facts["config"] if facts and facts["config"] else (ROOT / path).read_text()
        configs.append((k, config_yaml))
        steps = f"{facts['steps']} steps" if facts else earlier
        start = "from scratch" if k == 1 else f"from stage {k - 1}"
        text.append(f"- Stage {k} ({path}): {steps} {start}, {minutes(facts)} on 2 CPU cores;")
        text += [f"  {line};" for line in stage_description(config_yaml)]
    if pgfc:
        pool = pgfc["region_pool"]
        text.append(f"- PGFC (pgfc.json): S = {pgfc['num_regions']} detail regions, each pooled {pool}x{pool}; "
                    f"`--locate` windows of {window_words(pgfc.get('window_um'))} (chosen on validation slides, "
                    "docs/RESULTS.md).")
    text += ["- Test metrics below (held-out seeds; chance levels, the PGFC ablation and caveats in docs/RESULTS.md).",
             "- Rebuild: `make nano`.", "", "## Test metrics", "", card_metrics, "",
             "Slide rows use PGFC attention with 4 regions. Trained with `segmentation_output: mask`, the model",
             "answers outline prompts with `<mask>` too; the `(polygons)` rows score those answers by their masks.",
             "", "## Training configuration"]
    for k, config_yaml in configs:
        text += ["", f"Stage {k}:", "", "```yaml", config_yaml.strip(), "```"]
    return "\n".join(text) + "\n"


def main() -> None:
    out = ["# Results: the paper's claims in miniature on SynthPath", "",
           "Produced by `scripts/reproduce.py` then `scripts/results.py`; every number below is read from",
           "`runs/repro/`. Test records use SynthPath seeds never used for training (the exporter's split",
           "seed blocks), and nothing was tuned on them.", ""]
    nano_settings = read_pgfc(ROOT / "models" / "omnipath-nano")  # the shipped PGFC settings: captions and card
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
    nano_eval, slide_eval, full_eval = RUNS / "eval-nano", RUNS / "eval-nano-slides", RUNS / "eval-full"
    slide_test = ROOT / "data" / "synthpath-slides" / "test-questions.jsonl"
    if (slide_eval / "summary.json").is_file():
        n_slides = len({json.loads(l)["slide"] for l in slide_test.read_text().splitlines()}) if slide_test.is_file() else "?"
        out += ["## PGFC ablation (table 6 analogue)", "",
                f"Slide-level questions about {n_slides} held-out SynthPath slides (test seed block), answered by the",
                "shipped nano through the WSI pipeline (`omnipath analyze`'s code path) with the same number of",
                "detail regions in every column. The tumour grade is invisible in the thumbnail.", "",
                table6_pgfc(load_summaries(slide_eval)).to_markdown(), "",
                chance_table(slide_test), "",
                "All slide questions pooled (the same questions under each mode), with exact McNemar tests on",
                "the questions where two modes disagree:", "",
                pgfc_paired_table([slide_eval / "predictions.jsonl", RUNS / "eval-nano-slides-record" / "predictions.jsonl"],
                                  slide_test), "",
                "`record` is a diagnostic, not a PGFC mode: it reads the 4 regions each test record lists, placed as",
                "in training (2 on tumour, 2 on other annotated tissue). It asks whether better-placed regions would",
                "help this model at all.", "",
                "### Grade and subtype against guessing", "",
                "The must-show: on fresh slides, are grade and subtype answered right more often than chance? Right",
                "answers against the number a guesser is expected to get (a uniform guess for closed questions, the",
                "best constant answer on these very records for open ones, as in the chance table), with the exact",
                "one-sided p-value of getting at least that many right by guessing:", "",
                above_chance_table(slide_eval / "predictions.jsonl", slide_test), "",
                "Where the detail regions fell: the share of questions with at least one region overlapping a true",
                "tumour box, and grade/subtype accuracy split by whether one did:", "",
                region_hit_table([slide_eval / "predictions.jsonl", RUNS / "eval-nano-slides-record" / "predictions.jsonl"],
                                 slide_test), ""]
    base_runs = {"slide questions, PGFC attention": (RUNS / "eval-nano-base-slides", RUNS / "eval-nano-slides", "attention"),
                 "patch questions": (RUNS / "eval-nano-base", nano_eval, "none")}
    for title, (base_eval, nano_run, variant) in base_runs.items():
        if (base_eval / "summary.json").is_file() and (nano_run / "summary.json").is_file():
            out += [f"### The later stages, {title} (held-out seeds)", "",
                    "nano-base is nano after its first stage (patch records); nano adds the second (slide questions,",
                    "vision tower frozen; the model card lists them).",
                    "Accuracy (%) on the same test records:", "",
                    runs_table({"nano-base": load_summaries(base_eval), "nano": load_summaries(nano_run)}, variant), ""]
    val_eval, val_questions = RUNS / "eval-nano-val-slides", ROOT / "data" / "synthpath-val-slides" / "val-questions.jsonl"
    if (val_eval / "summary.json").is_file() and val_questions.is_file():
        n_val = len({json.loads(l)["slide"] for l in val_questions.read_text().splitlines()})
        out += ["### Validation slides (optional stage `val`)", "",
                f"The same kinds of question about {n_val} validation slides (base seed 1's val block, disjoint from",
                "every training and test block), looked at before the test slides above:", "",
                above_chance_table(val_eval / "predictions.jsonl", val_questions), "",
                "Per task, accuracy (%):", "", variant_table(load_summaries(val_eval)), ""]
    probe_json = RUNS / "feature_probe.json"
    if probe_json.is_file():
        names = {"runs/repro/untrained-nano": "untrained nano", "runs/repro/nano/final": "nano"}
        data = {source.replace(str(ROOT) + "/", ""): views for source, views in json.loads(probe_json.read_text()).items()}
        out += ["### Is the answer in what the LLM is shown? (linear probes, `scripts/feature_probe.py`)", "",
                "Per slide, the view is encoded as the LLM receives it (vision tower, multi-scale fusion, projector;",
                "detail crops pooled like training's regions) and its tokens averaged. A logistic regression is fit",
                "on the training slides of base seed 1 and scored on the held-out test slides. `detail0` is the",
                "first detail crop of the slide's records, centred on a tumour. Pixels: channel means and spreads",
                "and the share of dark pixels. Accuracy (%), with the commonest training label's accuracy:", "",
                feature_probe_table(data, names), ""]
    if (nano_eval / "summary.json").is_file():
        summaries = load_summaries(nano_eval)
        out += ["## nano on its test split, per task", "", chance_table(ROOT / "data" / "synthpath" / "test-patch.jsonl"), ""]
        for table in build_tables(summaries, method="OmniPath nano"):
            if table.name != "table6_pgfc":
                out += [table.to_markdown(), ""]
        out += ["### Do the boxes land on the objects?", "",
                "F1 above counts a box only at IoU >= 0.5. Here: the share of predicted boxes that overlap a true",
                "object of their own image at all, and their mean best IoU, against a control that scores the",
                "same boxes on the next test image of the same task.", "",
                detection_overlap_table(nano_eval / "predictions.jsonl"), ""]
        slide_boxes = RUNS / "eval-nano-slide-boxes" / "predictions.jsonl"
        if slide_boxes.is_file():
            out += ["The same on whole slides (`cancer_detection` on the held-out slides through the WSI pipeline,",
                    "PGFC attention; boxes relative to the slide):", "", detection_overlap_table(slide_boxes), ""]
        located = RUNS / "eval-nano-slide-boxes-regions" / "predictions.jsonl"
        if located.is_file():
            out += ["And found in windows (`--locate regions`: the question re-asked of a window of nano's locate side,",
                    f"{window_words((nano_settings or {}).get('window_um'))} in its pgfc.json, around each PGFC region, "
                    "boxes joined across windows):", "",
                    detection_overlap_table(located), ""]
        out += ["### Closed questions: letter and text", "",
                "A closed answer counts only when its letter and its option text name the same option (the rule",
                "fixed before training). Scoring the option text alone shows what the model knows but labels with",
                "the wrong letter:", "",
                closed_text_table([(nano_eval / "predictions.jsonl", ROOT / "data" / "synthpath" / "test-patch.jsonl"),
                                   *([(slide_eval / "predictions.jsonl", slide_test)] if slide_eval.is_dir() else [])]), ""]
    ablations = {n: load_summaries(RUNS / f"eval-{n}") for n in VARIANTS if n != "full" and (RUNS / f"eval-{n}" / "summary.json").is_file()}
    if ablations and (full_eval / "summary.json").is_file():
        runs = {"full": {k: v for k, v in load_summaries(full_eval).items() if v["level"] == "patch"}, **ablations}
        out += ["## UNI and MSFF ablation (tables 9 and 10 analogue)", "",
                "Same data (the patch records of the train split), same steps, same seed; patch-level test",
                "records. The baseline here is `full`, trained like the ablations, not the shipped nano.", "",
                ablation_table(runs), ""]
    else:
        heading = "## UNI and MSFF ablation (tables 9 and 10 analogue)"
        previous = (ROOT / "docs" / "RESULTS.md").read_text() if (ROOT / "docs" / "RESULTS.md").is_file() else ""
        out += carried_section(previous, heading, list(VARIANTS)) or [
            heading, "", "Not run yet (stage `ablations` of scripts/reproduce.py).", ""]
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
    order = nano_stages()
    stages = {name: training_facts(RUNS / name) for name, _ in order if (RUNS / name / "metrics.jsonl").is_file()}
    if stages:
        out += ["## Training of the shipped nano", ""]
        for name, f in stages.items():
            out += [f"- {name}: {f['steps']} optimiser steps; training loss {f['first_loss']:.3f} at the first log, "
                    f"{f['last_loss']:.3f} at the last" + (f"; {f['wall_min']:.0f} min wall time." if 'wall_min' in f else ".")]
        out.append("")
    notes = ROOT / "docs" / "results_notes.md"
    if notes.is_file():
        out += [notes.read_text()]
    (ROOT / "docs" / "RESULTS.md").write_text("\n".join(out) + "\n")
    card = ROOT / "models" / "omnipath-nano"
    card_metrics = metrics_table({**(load_summaries(nano_eval) if (nano_eval / "summary.json").is_file() else {}),
                                  **(load_summaries(slide_eval) if (slide_eval / "summary.json").is_file() else {})})
    if card.is_dir() and order[-1][0] in stages:
        (card / "README.md").write_text(model_card(order, stages, card_metrics, nano_settings))
    print("wrote docs/RESULTS.md" + (" and models/omnipath-nano/README.md" if card.is_dir() else ""))


if __name__ == "__main__":
    main()
