"""Reproduce the paper's claims in miniature on SynthPath: train nano, evaluate, ablate.

Every stage runs an `omnipath` command (printed before it runs) or a few lines of library
code, writes into runs/repro/, and is skipped when its output already exists, so a stopped
run resumes. Budget knobs (environment variables, defaults sized for a 2-core CPU):

    REPRO_PATCHES=900 REPRO_SLIDES=60 REPRO_TEST_SLIDES=36 REPRO_EXTRA_SLIDES=240 REPRO_SLIDE_SIZE=6144
    REPRO_STEPS=600 REPRO_ABLATION_STEPS=250 REPRO_VAL_SLIDES=30 REPRO_SLIDE_WINDOWS=0
    (REPRO_SLIDE_WINDOWS=K: K patch-level cancer-box windows per slide of data/synthpath, written to
    data/synthpath/{train,val,test}-window.jsonl; no shipped config trains on them, see docs/RESULTS.md)
    REPRO_STAGES=data,before,nano,ablations,eval,after,results     (any subset; run in this order;
                 "after" also measures where A_last falls (scripts/attention_stats.py) and probes
                 the image features for slide labels (scripts/feature_probe.py);
                 add "val" to evaluate on validation slides (base seed 1's val block) and "compare"
                 to evaluate nano's first stage on the test questions too, about 7 min)

    .venv/bin/python scripts/reproduce.py

Data: data/synthpath (patches and slides, base seed 0), data/synthpath-slides (REPRO_TEST_SLIDES
held-out slides of base seed 0's test block, for the PGFC ablation) and data/synthpath-train-slides-1,
-2 (REPRO_EXTRA_SLIDES more training slides, half from base seed 1's train block and half from base
seed 2's, generated in two parallel processes: slide-level questions need many slides).

Runs:
- `nano`: the shipped model, in two stages (NANO_STAGES). `nano-base`: configs/train/nano-synthpath.yaml
  as it is (data/synthpath's patch records), REPRO_STEPS steps. `nano`: configs/train/nano-synthpath-slides.yaml
  from nano-base (the training slides' grade, subtype and organ questions and a quarter of the patch
  records, four passes, vision tower frozen and cached, focus loss on the slides' tumours,
  closed-ended answers trained as the option text alone). Evaluated on the patch test records and,
  for the PGFC ablation, on REPRO_TEST_SLIDES held-out slides (SynthPath's test seed block).
- `full`, `no-uni`, `no-msff`, `no-uni-no-msff`: the UNI/MSFF ablation, all with nano's first-stage
  config (the patch records of data/synthpath's train split; the tables are patch-level) and
  REPRO_ABLATION_STEPS steps,
  evaluated on the patch test records.

nano's stages run one after another in one process using every core. The four ablation models
then train in two lanes side by side, one thread per process, about equal work per lane (on 2 cores
two lanes do 1.02-1.07x the work of one process; lanes of unequal length would leave a core idle at
the end), as do the evaluations of stage eval. No run computes a validation loss (no table reads it).

Test data use seeds never used for training (SynthPath's split seed blocks); nothing is tuned on
the test split. The final nano is copied to models/omnipath-nano/ (bf16 weights) with its card.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "repro"
DATA = ROOT / "data" / "synthpath"
SLIDE_TEST = ROOT / "data" / "synthpath-slides"  # more held-out slides for the PGFC ablation
SLIDE_VAL = ROOT / "data" / "synthpath-val-slides"  # validation slides (base seed 1's val block), stage "val"
EXTRA_SEEDS = (1, 2)  # base seeds of the extra training slides (their train blocks; see synth.export.split_seeds)
OMNIPATH = [sys.executable, "-m", "omnipath_lvlm.cli"]
ENV = {k: int(os.environ.get(k, v)) for k, v in {
    "REPRO_PATCHES": 900, "REPRO_SLIDES": 60, "REPRO_TEST_SLIDES": 36, "REPRO_EXTRA_SLIDES": 240, "REPRO_SLIDE_SIZE": 6144, "REPRO_STEPS": 600,
    "REPRO_ABLATION_STEPS": 250, "REPRO_MAX_NEW_TOKENS": 320, "REPRO_NUM_REGIONS": 4,
    "REPRO_VAL_SLIDES": 30, "REPRO_SLIDE_WINDOWS": 0}.items()}
STAGES = os.environ.get("REPRO_STAGES", "data,before,nano,ablations,eval,after,results").split(",")
QUESTION_STYLES = ("closed", "open", "yes_no")
NANO_CONFIG = "configs/train/nano-synthpath.yaml"  # nano's first stage (and the ablations')
SLIDE_STAGE_CONFIG = "configs/train/nano-synthpath-slides.yaml"  # nano's second and last stage
NANO_STAGES = (  # (run name, config): nano's stages in order, each from the one before; the last is shipped
    ("nano-base", NANO_CONFIG),  # REPRO_STEPS steps; the others their config's epochs or max_steps
    ("nano", SLIDE_STAGE_CONFIG),
)
ABLATIONS = {  # name -> OmniPathConfig.from_name overrides; "full" is their baseline. Two lanes take every
    "full": None,  # other one (full, no-uni-no-msff | no-msff, no-uni): seconds per sample 0.37 + 0.22 against
    "no-msff": {"scales": [1]},  # 0.25 + 0.30 (docs/BENCHMARKS.md), about equal work per lane
    "no-uni-no-msff": {"use_uni": False, "scales": [1]},
    "no-uni": {"use_uni": False},
}
# Side of nano's --locate windows: 192 um, half the patch records' 384 um field of view. Chosen on the
# validation slides among cells (128 um), 192, 256 and 384, confirmed on base seed 4's test block by a
# rule written before (docs/RESULTS.md, session 12): nano's patch detector boxes most of any window, so
# a window near the size of a slide's tumour (120-170 um) boxes it best.
NANO_LOCATE_UM = 192.0
LOG = RUNS / "commands.log"


def shown(args: list[str]) -> str:
    """A command as the log shows it (`omnipath ...` for the CLI)."""
    return " ".join(shlex.quote(a) for a in args).replace(sys.executable + " -m omnipath_lvlm.cli", "omnipath")


def run(*commands: list[str]) -> None:
    """Run the commands side by side (one process each), logging them and their common wall time."""
    lines = [shown(args) for args in commands]
    RUNS.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as log:
        for line in lines:
            print(f"$ {line}", flush=True)
            log.write(line + ("  &\n" if len(lines) > 1 else "\n"))
    tic = time.time()
    processes = [subprocess.Popen(args, cwd=ROOT) for args in commands]
    failed = [line for line, p in zip(lines, processes) if p.wait() != 0]
    if failed:
        raise RuntimeError(f"failed: {failed}")
    seconds = time.time() - tic
    print(f"  ({seconds:.0f}s)", flush=True)
    with LOG.open("a") as log:
        log.write(f"#   {seconds / 60:.1f} min" + (" (side by side)\n" if len(lines) > 1 else "\n"))


def run_lanes(jobs: list[list[list[str] | None]], lanes: int = 2) -> None:
    """Run `jobs` (each a list of commands, run in order; None: nothing to do) in up to `lanes` lanes side by side.

    With more than one lane each process gets one thread (OMP_NUM_THREADS=1): on this 2-core
    machine two one-thread training processes do 1.02-1.07x the work of one two-thread process in
    steady training, more where start-ups overlap (benchmarks/train_throughput.py --lanes). Each
    command is logged when it ends, with its own wall time, marked as run in a lane.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    jobs = [job for job in ([c for c in job if c] for job in jobs) if job]
    if not jobs:
        return
    lanes = min(lanes, len(jobs))
    RUNS.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if lanes > 1 else None
    note = f" (in one of {lanes} lanes side by side)" if lanes > 1 else ""

    def lane(job: list[list[str]]) -> None:
        for args in job:
            line = shown(args)
            print(f"$ {line}{note}", flush=True)
            tic = time.time()
            if subprocess.run(args, cwd=ROOT, env=env).returncode != 0:
                raise RuntimeError(f"failed: {line}")
            with lock, LOG.open("a") as log:
                log.write(f"{line}\n#   {(time.time() - tic) / 60:.1f} min{note}\n")

    tic = time.time()
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        for future in [pool.submit(lane, job) for job in jobs]:
            future.result()
    if lanes > 1:
        with LOG.open("a") as log:
            log.write(f"# the {lanes} lanes above took {(time.time() - tic) / 60:.1f} min together\n")


def stage_data() -> None:
    commands = [] if (DATA / "test.jsonl").is_file() else [main_export_command()]
    commands += [extra_slides_command(seed) for seed in EXTRA_SEEDS if not (extra_slides_dir(seed) / "train.jsonl").is_file()]
    if not (SLIDE_TEST / "test.jsonl").is_file():
        # 10 % of n_slides go to the test split; only that split is written
        commands.append([*OMNIPATH, "synth", "patches", "--n", "0", "--slides", str(10 * ENV["REPRO_TEST_SLIDES"]),
                         "--split", "test", "--slide-size", str(ENV["REPRO_SLIDE_SIZE"]), "--size", "192",
                         "--out", "data/synthpath-slides"])
    if commands:  # independent generators, side by side
        run(*commands)
    for split in ("train", "val", "test"):
        split_by_level(DATA / f"{split}.jsonl", DATA / f"{split}-patch.jsonl", DATA / f"{split}-slide.jsonl",
                       DATA / f"{split}-window.jsonl")
    # the PGFC table's question kinds; cancer boxes on whole slides
    with_styles(SLIDE_TEST / "test.jsonl", SLIDE_TEST / "test-questions.jsonl", QUESTION_STYLES)
    with_styles(SLIDE_TEST / "test.jsonl", SLIDE_TEST / "test-boxes.jsonl", ("boxes",))


def with_styles(path: Path, out: Path, styles: tuple[str, ...]) -> Path:
    """Write the records of `path` whose answer style is one of `styles` to `out` (beside it), unless it exists."""
    if not out.is_file():
        lines = path.read_text().splitlines()
        out.write_text("\n".join(l for l in lines if json.loads(l).get("answer_style") in styles) + "\n")
    return out


def extra_slides_dir(seed: int) -> Path:
    """Where the extra training slides of base seed `seed` are exported."""
    return ROOT / "data" / f"synthpath-train-slides-{seed}"


def extra_slides_command(seed: int) -> list[str]:
    """Export only the train split of base seed `seed`: REPRO_EXTRA_SLIDES / len(EXTRA_SEEDS) slides."""
    from omnipath_lvlm.synth.export import split_counts

    wanted = ENV["REPRO_EXTRA_SLIDES"] // len(EXTRA_SEEDS)
    n = next(n for n in range(wanted, 2 * wanted + 3) if split_counts(n)["train"] >= wanted)
    return [*OMNIPATH, "synth", "patches", "--n", "0", "--slides", str(n), "--split", "train", "--seed", str(seed),
            "--slide-size", str(ENV["REPRO_SLIDE_SIZE"]), "--size", "192", "--out", str(extra_slides_dir(seed).relative_to(ROOT))]


def split_by_level(path: Path, patch: Path, slide: Path, window: Path) -> None:
    """Write the patch-level, slide-level and slide-window records of `path` to three files.

    Windows (patch-level cancer boxes cut from the slides, `synth patches --slide-windows`) are kept
    apart so that the patch tables stay comparable and stage 1 can weight them.
    """
    if patch.is_file() and slide.is_file() and window.is_file():
        return
    lines = path.read_text().splitlines()
    windows = [l for l in lines if "-window" in json.loads(l)["id"]]
    cut = set(windows)
    patch.write_text("\n".join(l for l in lines if '"slide"' not in l and l not in cut) + "\n")
    slide.write_text("\n".join(l for l in lines if '"slide"' in l) + "\n")
    window.write_text("\n".join(windows) + "\n")


def main_export_command() -> list[str]:
    """Patches and slides of base seed 0, all three splits (the ablations' data; nano's patch records)."""
    return [*OMNIPATH, "synth", "patches", "--n", str(ENV["REPRO_PATCHES"]), "--slides", str(ENV["REPRO_SLIDES"]),
            "--seed", "0", "--slide-size", str(ENV["REPRO_SLIDE_SIZE"]), "--size", "192", "--max-boxes", "16",
            *(["--slide-windows", str(ENV["REPRO_SLIDE_WINDOWS"])] if ENV["REPRO_SLIDE_WINDOWS"] else []),
            "--out", "data/synthpath"]


def slide_training_files() -> list[Path]:
    """The JSONL files of every training slide's records (nano's second stage)."""
    return [DATA / "train-slide.jsonl", *(extra_slides_dir(seed) / "train.jsonl" for seed in EXTRA_SEEDS)]


def val_questions() -> Path:
    """The slide questions of REPRO_VAL_SLIDES validation slides (generated if missing): look here before the test slides."""
    if not (SLIDE_VAL / "val.jsonl").is_file():
        run([*OMNIPATH, "synth", "patches", "--n", "0", "--slides", str(10 * ENV["REPRO_VAL_SLIDES"]), "--split", "val",
             "--seed", str(EXTRA_SEEDS[0]), "--slide-size", str(ENV["REPRO_SLIDE_SIZE"]), "--size", "192",
             "--out", str(SLIDE_VAL.relative_to(ROOT))])
    return with_styles(SLIDE_VAL / "val.jsonl", SLIDE_VAL / "val-questions.jsonl", QUESTION_STYLES)


def first_test_slide() -> Path:
    rec = json.loads((SLIDE_TEST / "test.jsonl").read_text().splitlines()[0])
    return (SLIDE_TEST / rec["slide"]).resolve()


def untrained_nano() -> Path:
    out = RUNS / "untrained-nano"
    if not (out / "config.json").is_file():
        import torch

        from omnipath_lvlm.config import OmniPathConfig
        from omnipath_lvlm.model import OmniPathForConditionalGeneration
        from omnipath_lvlm.processing import OmniPathProcessor

        torch.manual_seed(0)
        config = OmniPathConfig.from_name("nano")
        OmniPathForConditionalGeneration(config).save_pretrained(out)
        OmniPathProcessor.for_config(config).save_pretrained(out)
    return out


def attention(model: Path, name: str) -> None:
    target = ROOT / "docs" / "img" / f"attention_{name}.png"
    run([*OMNIPATH, "attention", str(first_test_slide()), "-q", "What cancer subtype is shown in this image?",
         "--model", str(model), "--out", str(target)])


def train_command(name: str, steps: int | None, overrides: dict | None = None, extra: tuple[str, ...] = (),
                  config: str = NANO_CONFIG) -> list[str] | None:
    """The command that trains `config` into runs/repro/`name` (`steps` optimiser steps; None: the
    config's epochs), resuming from its checkpoints; None when its final model exists."""
    out = RUNS / name
    if (out / "final" / "config.json").is_file():
        return None
    # no validation loss during training (no table reads it; stage 1 spent about 3 min on it)
    args = [*OMNIPATH, "train", config, f"output_dir={out}", *([] if steps is None else [f"train.max_steps={steps}"]),
            "logging.progress=false", "data.max_length=640", "data.eval=[]", "logging.eval_every=null", *extra]
    if overrides:
        args.append("model.overrides=" + json.dumps(overrides))
    if (out / "checkpoints").is_dir():
        args.append("--resume")
    return args


def train(name: str, steps: int | None, overrides: dict | None = None, extra: tuple[str, ...] = (),
          config: str = NANO_CONFIG) -> Path:
    """Train (see `train_command`) and return the final model's folder."""
    command = train_command(name, steps, overrides, extra, config)
    if command:
        run(command)
    return RUNS / name / "final"


def evaluate_command(model: Path, data: Path, out: Path, pgfc: list[str], locate: str = "slide") -> list[str] | None:
    """The `omnipath eval` command writing into `out`; None when its summary exists."""
    if (out / "summary.json").is_file():
        return None
    return [*OMNIPATH, "eval", "--model", str(model), "--data", str(data), "--out", str(out),
            "--pgfc", *pgfc, "--num-regions", str(ENV["REPRO_NUM_REGIONS"]),
            "--max-new-tokens", str(ENV["REPRO_MAX_NEW_TOKENS"]), "--batch-size", "4",
            *(["--locate", locate] if locate != "slide" else [])]


def evaluate(model: Path, data: Path, out: Path, pgfc: list[str]) -> None:
    command = evaluate_command(model, data, out, pgfc)
    if command:
        run(command)


def ablation_lanes() -> list[list[list[str] | None]]:
    """The ablation models' train-then-evaluate commands in two lanes of about equal work.

    ABLATIONS alternate between the lanes (full, no-uni-no-msff | no-msff, no-uni): the costliest
    model shares a lane with the cheapest. Each trains nano's first-stage config (the patch records;
    the tables are patch-level) and is scored on the patch test records.
    """
    jobs = [[train_command(name, ENV["REPRO_ABLATION_STEPS"], overrides),
             evaluate_command(RUNS / name / "final", DATA / "test-patch.jsonl", RUNS / f"eval-{name}", ["none"])]
            for name, overrides in ABLATIONS.items()]
    return [sum(jobs[0::2], []), sum(jobs[1::2], [])]


def nano_pgfc(final: Path):
    """The PGFC settings nano is trained and evaluated with, saved beside its weights as pgfc.json.

    The regions of its last stage's config, and the window side at which `--locate` re-asks box
    and outline questions (NANO_LOCATE_UM). Written into the trained run's `final` too, so that
    the evaluations (which read the fp32 run, not the shipped copy) use the same windows.
    """
    from omnipath_lvlm.train.config import load_config
    from omnipath_lvlm.wsi.pgfc import PGFCConfig

    trained = load_config(ROOT / NANO_STAGES[-1][1], [f"model.checkpoint={final}"])
    return PGFCConfig(num_regions=ENV["REPRO_NUM_REGIONS"], region_pool=trained.data.region_pool,
                      window_um=NANO_LOCATE_UM)


def ship(final: Path) -> None:
    """Copy the trained nano into models/omnipath-nano (bf16 safetensors, under 50 MB) with its card."""
    import torch

    from omnipath_lvlm.model import OmniPathForConditionalGeneration
    from omnipath_lvlm.processing import OmniPathProcessor

    dest = ROOT / "models" / "omnipath-nano"
    tmp = dest.with_name(".omnipath-nano.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = OmniPathForConditionalGeneration.from_pretrained(final, dtype=torch.bfloat16)
    model.save_pretrained(tmp)
    OmniPathProcessor.from_pretrained(final).save_pretrained(tmp)
    nano_pgfc(final).save(tmp)  # so that analyze, chat and serve default to the settings it was evaluated with
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) / 2**20
    if size > 50:
        raise RuntimeError(f"the nano export is {size:.1f} MB, over the 50 MB budget")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(f"shipped {dest} ({size:.1f} MB)")


def main() -> int:
    started = time.time()
    if "data" in STAGES:
        stage_data()
    if "before" in STAGES:
        attention(untrained_nano(), "before")
    nano = RUNS / NANO_STAGES[-1][0] / "final"
    if "nano" in STAGES:  # one process with every core: nano's stages depend on each other
        previous = None
        for name, config in NANO_STAGES:
            train(name, ENV["REPRO_STEPS"] if previous is None else None, config=config,
                  extra=() if previous is None else (f"model.checkpoint={RUNS / previous / 'final'}",))
            previous = name
        ship(nano)
    if nano.is_dir():  # the shipped settings (its locate windows above all) beside the run the evaluations read
        nano_pgfc(nano).save(nano)
    if "ablations" in STAGES:
        run_lanes(ablation_lanes())
    if "val" in STAGES:  # optional: validation slides, looked at before the test slides
        evaluate(nano, val_questions(), RUNS / "eval-nano-val-slides", ["none", "attention", "record"])
    if "eval" in STAGES:  # two lanes: the patch test records beside the slide questions
        run_lanes([[evaluate_command(nano, DATA / "test-patch.jsonl", RUNS / "eval-nano", ["none"])], [
            evaluate_command(nano, SLIDE_TEST / "test-questions.jsonl", RUNS / "eval-nano-slides", ["none", "random", "attention"]),
            evaluate_command(nano, SLIDE_TEST / "test-boxes.jsonl", RUNS / "eval-nano-slide-boxes", ["attention"]),
            # the same boxes found in windows at the patch scale around the regions (omnipath_lvlm.wsi.locate)
            evaluate_command(nano, SLIDE_TEST / "test-boxes.jsonl", RUNS / "eval-nano-slide-boxes-regions", ["attention"],
                             locate="regions"),
            # diagnostic: the regions the records list (2 on tumour, 2 on other tissue, as in training)
            evaluate_command(nano, SLIDE_TEST / "test-questions.jsonl", RUNS / "eval-nano-slides-record", ["record"])]])
    if "after" in STAGES:
        attention(nano, "after")
        run([sys.executable, "scripts/attention_stats.py", str(untrained_nano()), str(nano),
             "--data", str(SLIDE_TEST / "test-questions.jsonl"), "--out", str(RUNS / "attention_stats.json")])
        # are organ, grade and architecture in the features the LLM is shown? (fit on training slides, scored on test slides)
        run([sys.executable, "scripts/feature_probe.py", str(untrained_nano()), str(nano),
             "--fit", str(extra_slides_dir(EXTRA_SEEDS[0]).relative_to(ROOT)), "--score", str(SLIDE_TEST.relative_to(ROOT)),
             "--out", str(RUNS / "feature_probe.json")])
    if "compare" in STAGES:  # optional: what the later stages changed (the first stage on the same questions)
        base = RUNS / "nano-base" / "final"
        evaluate(base, DATA / "test-patch.jsonl", RUNS / "eval-nano-base", ["none"])
        evaluate(base, SLIDE_TEST / "test-questions.jsonl", RUNS / "eval-nano-base-slides", ["attention"])
    if "results" in STAGES:
        run([sys.executable, "scripts/results.py"])
    print(f"reproduction stages {STAGES} done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
