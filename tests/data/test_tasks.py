"""Tests of the task registry against the paper's appendix F tables."""
from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import pytest

from omnipath_lvlm.data.tasks import TASKS, Task, closed_question, get_task, list_tasks, sample_prompt

PAPER_DIR = Path(__file__).resolve().parents[3] / "shared" / "paper"

# Counted by hand from the bullet lists at the end of the paper text.
PROMPTS_PER_TABLE = {
    14: 14, 15: 14, 16: 20, 17: 20, 18: 15, 19: 15, 20: 8, 21: 4, 22: 5, 23: 5,
    24: 5, 25: 5, 26: 5, 27: 10, 28: 5, 29: 4, 30: 15, 31: 15, 32: 10,
}
TABLE_OF_TASK = {
    "organ": 14, "disease": 15, "subtype": 16, "grade": 17, "cancer_detection": 18, "cancer_segmentation": 19,
    "vessel_detection": 20, "lymph_node_detection": 21, "nerve_detection": 22, "nerve_segmentation": 23,
    "mvi": 24, "neural_invasion": 25, "lymph_node_metastasis": 26, "cancer_nuclei_in_vessel": 27,
    "cancer_in_nerve_segmentation": 28, "cancer_in_lymph_node_segmentation": 29, "nucleus_detection": 30,
    "nucleus_classification": 31, "tissue_type": 32, "til": None, "msi": None, "pancancer": 15, "prognosis": None,
}


@pytest.fixture(scope="module")
def paper_text() -> str:
    files = sorted(PAPER_DIR.glob("*.txt")) if PAPER_DIR.is_dir() else []
    if not files:
        pytest.skip(f"paper text folder {PAPER_DIR} is absent")
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def test_registry_has_every_task_of_the_paper_with_its_table():
    assert {name: task.table for name, task in TASKS.items()} == TABLE_OF_TASK
    assert all(name == task.name for name, task in TASKS.items())


def test_prompt_counts_match_the_hand_counted_tables():
    for table, count in PROMPTS_PER_TABLE.items():
        holders = [task for task in TASKS.values() if task.table == table]
        assert holders, f"no task uses table {table}"
        for task in holders:
            assert len(task.paper_prompts) == count, (task.name, table)
            assert len(set(task.paper_prompts)) == count, f"{task.name} repeats a prompt"


def test_every_paper_prompt_is_a_bullet_of_the_paper(paper_text):
    for task in TASKS.values():
        for prompt in task.paper_prompts:
            # Every bullet is followed by the next bullet or the table's closing " |".
            assert f"• {prompt} " in paper_text, (task.name, prompt)


def test_paper_prompts_are_whole_tables_in_the_paper_order(paper_text):
    # The tables are the lines made of several "• prompt" bullets (the contribution list has lone "•" lines).
    bullet_lines = [line for line in paper_text.splitlines() if line.startswith("• ")]
    tables = [tuple(part.strip().rstrip("|").strip() for part in line.split("•")[1:]) for line in bullet_lines]
    assert len(tables) == 19
    for table_number, prompts in zip(range(14, 33), tables):
        for task in TASKS.values():
            if task.table == table_number:
                assert task.paper_prompts == prompts, task.name


def test_dialogue_prompts_are_the_paper_prompts_except_for_cancer_segmentation():
    for task in TASKS.values():
        if task.table is not None and task.name != "cancer_segmentation":
            assert task.prompts == task.paper_prompts, task.name


def test_cancer_segmentation_asks_for_outlines_not_boxes():
    task = get_task("cancer_segmentation")
    assert task.paper_prompts == get_task("cancer_detection").paper_prompts  # the paper's duplicated table
    assert task.answer_format == "polygons" and task.metric == "dice"
    for prompt in task.prompts:
        lowered = prompt.lower()
        assert "segment" in lowered or "outline" in lowered, prompt
        assert "bounding box" not in lowered and "bbox" not in lowered, prompt
        assert "cancer" in lowered, prompt


def test_disease_and_pancancer_share_table_15():
    assert get_task("disease").paper_prompts == get_task("pancancer").paper_prompts
    assert get_task("disease").table == get_task("pancancer").table == 15


def test_tasks_without_a_table_have_own_prompts():
    for name in ("til", "msi", "prognosis"):
        task = get_task(name)
        assert task.table is None and task.paper_prompts == ()
        assert len(task.prompts) >= 3
    assert get_task("til").answer_format == "yes_no"
    assert get_task("msi").answer_format == "yes_no"
    prognosis = get_task("prognosis")
    assert prognosis.styles == ("closed",)
    assert prognosis.classes == ("recurrence within two years", "no recurrence within five years")


def test_answer_formats_and_metrics_follow_the_paper():
    formats = Counter(task.answer_format for task in TASKS.values())
    assert formats == {"text": 7, "yes_no": 5, "boxes": 6, "polygons": 4, "detections": 1}
    assert get_task("nucleus_classification").metric == "class_detection_f1"
    assert {t.name for t in TASKS.values() if t.metric == "dice"} == {
        "cancer_segmentation", "nerve_segmentation", "cancer_in_nerve_segmentation",
        "cancer_in_lymph_node_segmentation",
    }
    assert len(get_task("organ").classes) == 21
    assert get_task("cancer_detection").granularity == "slide"


def test_registry_and_tasks_are_immutable():
    with pytest.raises(TypeError):
        TASKS["new"] = get_task("organ")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_task("organ").name = "other"  # type: ignore[misc]


def test_get_task_names_the_known_tasks_when_unknown():
    with pytest.raises(KeyError, match="organ"):
        get_task("orgn")


def test_list_tasks_filters_by_level_and_granularity():
    assert [t.name for t in list_tasks()] == list(TASKS)
    assert {t.name for t in list_tasks(level="cell")} == {
        "cancer_nuclei_in_vessel", "nucleus_detection", "nucleus_classification", "til",
    }
    slide = {t.name for t in list_tasks(granularity="slide")}
    assert {"cancer_detection", "prognosis", "organ", "lymph_node_metastasis"} <= slide
    assert "nucleus_detection" not in slide
    with pytest.raises(ValueError, match="level"):
        list_tasks(level="organ")  # type: ignore[arg-type]


def test_task_rejects_inconsistent_definitions():
    base = dict(name="t", title="T", level="tissue", granularity="patch", table=None, prompts=("q?",),
                paper_prompts=(), answer_format="text", styles=("open",), metric="accuracy")
    Task(**base)  # the base is valid
    with pytest.raises(ValueError, match="level"):
        Task(**{**base, "level": "organ"})
    with pytest.raises(ValueError, match="style 'boxes'"):
        Task(**{**base, "styles": ("boxes",)})
    with pytest.raises(ValueError, match="no prompts"):
        Task(**{**base, "prompts": ()})
    with pytest.raises(ValueError, match="paper_prompts"):
        Task(**{**base, "table": 99})


def test_sample_prompt_is_seeded_and_covers_the_pool():
    task = get_task("organ")
    first = [sample_prompt(task, random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1
    rng = random.Random(0)
    drawn = Counter(sample_prompt("organ", rng) for _ in range(2000))
    assert set(drawn) == set(task.prompts)
    assert min(drawn.values()) > 2000 / 14 / 2  # roughly uniform


def test_sample_prompt_checks_the_style():
    assert sample_prompt("subtype", random.Random(1), style="closed") in get_task("subtype").prompts
    assert sample_prompt("cancer_segmentation", random.Random(1), style="mask") in (
        get_task("cancer_segmentation").prompts
    )
    with pytest.raises(ValueError, match="no 'boxes' style"):
        sample_prompt("organ", random.Random(1), style="boxes")
    with pytest.raises(KeyError):
        sample_prompt("nope", random.Random(1))


def test_closed_question_lists_lettered_options_and_the_right_letter():
    options = ["Hepatocellular carcinoma", "Cholangiocarcinoma", "Metastasis", "Normal liver"]
    question, letter = closed_question("What is the cancer subtype?", options, random.Random(3), answer=1)
    lines = question.split("\n")
    assert lines[0] == "What is the cancer subtype?"
    assert [line[:3] for line in lines[1:]] == ["A. ", "B. ", "C. ", "D. "]
    assert sorted(line[3:] for line in lines[1:]) == sorted(options)
    assert lines[1 + "ABCD".index(letter)] == f"{letter}. Cholangiocarcinoma"
    assert closed_question("What is the cancer subtype?", options, random.Random(3), answer=1) == (question, letter)
    by_text = closed_question("Q", options, random.Random(3), answer="Cholangiocarcinoma")
    assert by_text[1] == letter


def test_closed_question_shuffles_the_correct_letter_across_seeds():
    options = ["a1", "b2", "c3", "d4"]
    letters = Counter(closed_question("Q", options, random.Random(seed))[1] for seed in range(400))
    assert set(letters) == {"A", "B", "C", "D"}
    assert min(letters.values()) > 50


def test_closed_question_rejects_bad_options():
    with pytest.raises(ValueError, match="at least 2"):
        closed_question("Q", ["only"], random.Random(0))
    with pytest.raises(ValueError, match="repeat"):
        closed_question("Q", ["x", "x"], random.Random(0))
    with pytest.raises(ValueError, match="not one of the options"):
        closed_question("Q", ["x", "y"], random.Random(0), answer="z")
    with pytest.raises(ValueError, match="outside"):
        closed_question("Q", ["x", "y"], random.Random(0), answer=2)
