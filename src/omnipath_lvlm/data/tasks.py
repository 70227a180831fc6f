"""Registry of OmniPath's instruction tasks and their prompts (paper appendix F).

Every task the paper trains or evaluates on is one frozen :class:`Task` in the
read-only mapping :data:`TASKS`.  A task records its biological level
(tissue / structure / cell), the image granularity it is posed on (patch,
slide or both), the appendix table its prompts come from, the answer format
(see :mod:`omnipath_lvlm.data.formats`), the answer styles a dialogue may use
and the metric it is scored with.

Prompt data
-----------
``Task.paper_prompts`` holds the prompts of the paper's tables 14-32
verbatim (typography included, e.g. the curly apostrophe in "patient’s").
``Task.prompts`` is the pool dialogues are drawn from; it equals
``paper_prompts`` for every task except one:

* Table 19 (cancer region *segmentation*) repeats table 18's *detection*
  prompts word for word in the available copy of the paper: every one of them
  asks for bounding boxes.  Training a segmentation answer on a question that
  asks for boxes would teach the model to ignore the question, so the
  ``cancer_segmentation`` task keeps table 19 verbatim in ``paper_prompts`` but
  draws its dialogues from segmentation prompts written for this project,
  modelled on tables 23 (nerve segmentation) and 28 (cancer in nerve
  segmentation).

The paper names TIL recognition, MSI detection and prognosis prediction but
gives no prompt table for them (``table=None``): TIL and MSI are yes/no
questions, prognosis is a closed-ended question over the paper's two classes.
Their prompts are written for this project.  Disease (pathological type)
recognition, seven-class gastric lesion recognition and 32-class pan-cancer
classification all use table 15.

``Task.classes`` lists the answer classes where the paper fixes them (the 21
organs of table 13, yes/no, the two prognosis classes); it is empty where the
classes depend on the dataset (subtypes, grades, nucleus and tissue types).
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

Level = Literal["tissue", "structure", "cell"]
Granularity = Literal["patch", "slide", "both"]
AnswerFormat = Literal["text", "yes_no", "boxes", "polygons", "detections"]
Style = Literal["open", "closed", "yes_no", "boxes", "polygons", "detections", "mask"]
Metric = Literal["accuracy", "detection_f1", "class_detection_f1", "dice"]

# Which answer styles can express each answer format.
_STYLES_OF_FORMAT: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "text": frozenset({"open", "closed"}),
        "yes_no": frozenset({"yes_no", "closed"}),
        "boxes": frozenset({"boxes"}),
        "polygons": frozenset({"polygons", "mask"}),
        "detections": frozenset({"detections"}),
    }
)

_OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Task:
    """One instruction task: what is asked, how it is answered and scored."""

    name: str
    title: str
    level: Level
    granularity: Granularity
    table: int | None
    prompts: tuple[str, ...]
    paper_prompts: tuple[str, ...]
    answer_format: AnswerFormat
    styles: tuple[Style, ...]
    metric: Metric
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = (
            ("level", self.level, get_args(Level)),
            ("granularity", self.granularity, get_args(Granularity)),
            ("answer_format", self.answer_format, get_args(AnswerFormat)),
            ("metric", self.metric, get_args(Metric)),
        )
        for field, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"task {self.name!r}: {field} {value!r} is not one of {allowed}")
        if not self.prompts:
            raise ValueError(f"task {self.name!r} has no prompts")
        if (self.table is None) != (not self.paper_prompts):
            raise ValueError(
                f"task {self.name!r}: paper_prompts must be given exactly when a paper table is named "
                f"(table={self.table}, {len(self.paper_prompts)} paper prompts)"
            )
        if not self.styles:
            raise ValueError(f"task {self.name!r} has no answer styles")
        allowed_styles = _STYLES_OF_FORMAT[self.answer_format]
        for style in self.styles:
            if style not in allowed_styles:
                raise ValueError(
                    f"task {self.name!r}: style {style!r} cannot express answer format "
                    f"{self.answer_format!r} (allowed: {sorted(allowed_styles)})"
                )


# ---- Prompt tables 14-32 of the paper, verbatim ----

_TABLE_14 = (
    'What kind of organ does this image show?',
    'Classify this organ sample',
    'What organ is this?',
    'Determine organ shown',
    'Identify this organ',
    'Name the organ in the image',
    'Could you specify the organ in the picture?',
    'What kind of organ is visible in this pathology image?',
    'Identify the organ presented in this histological image.',
    'Determine the organ category in this histopathological slide.',
    'Indicate the organ observed in this pathology slide.',
    'Classify the organ depicted in this pathological slide.',
    'Examine the image and identify the organ in this histological section.',
    'Discern the organ shown in this pathology photograph.',
)

_TABLE_15 = (
    'Diagnose the disease from this image.',
    'Analyze this image to determine the patient’s disease.',
    'Use this image to diagnose the patient’s illness.',
    'What disease could this pathology slide be from?',
    'What is the pathological type?',
    'Identify the pathological type.',
    'What type of pathology is shown?',
    'Can you determine the pathology type in this image?',
    'What is the specific pathological type in this picture?',
    'Please identify the pathological type depicted in the image.',
    'Can you classify the pathological type visible in this slide?',
    'Based on the image, what is the pathology type?',
    'Could you analyze the image and determine the pathology type?',
    'Please provide a detailed analysis and identify the pathological type shown in this image.',
)

_TABLE_16 = (
    'Identify the cancer subtype.',
    'What is the cancer subtype?',
    'Can you determine the cancer subtype?',
    'What cancer subtype is shown in this image?',
    'Please identify the cancer subtype in this image.',
    'Can you classify the cancer subtype visible in this slide?',
    'What is the specific cancer subtype depicted in this picture?',
    'Could you determine the cancer subtype based on this image?',
    'Analyze the image and identify the cancer subtype.',
    'Please provide a detailed analysis and identify the cancer subtype shown in this pathology image.',
    'Identify the histological subtype.',
    'What is the histological subtype?',
    'Can you determine the histological subtype?',
    'What histological subtype is shown in this image?',
    'Please identify the histological subtype in this image.',
    'Can you classify the histological subtype visible in this slide?',
    'What is the specific histological subtype depicted in this picture?',
    'Could you determine the histological subtype based on this image?',
    'Analyze the image and identify the histological subtype.',
    'Please provide a detailed analysis and identify the histological subtype shown in this pathology image.',
)

_TABLE_17 = (
    'Grade the cancer in this image.',
    'What is the grade of cancer shown in this picture?',
    'Can you determine the cancer grade in this image?',
    'Identify the grade of cancer visible in this image.',
    'Please analyze and grade the cancer depicted in this image.',
    'Could you assess and indicate the grade of cancer in this picture?',
    'Examine this image and provide the cancer grade.',
    'Can you evaluate and classify the cancer severity shown in this image?',
    'Please examine the cancer cells in this image and determine their differentiation grade.',
    'Carefully analyze the differentiation of the cancer cells in this image and provide a detailed grading based on their appearance.',
    'Identify the histological grade.',
    'What is the histological grade?',
    'Can you determine the histological grade?',
    'What histological grade is shown in this image?',
    'Please identify the histological grade in this image.',
    'Can you classify the histological grade visible in this slide?',
    'What is the specific histological grade depicted in this picture?',
    'Could you determine the histological grade based on this image?',
    'Analyze the image and identify the histological grade.',
    'Please provide a detailed analysis and identify the histological grade shown in this pathology image.',
)

_TABLE_18 = (
    'Does this image have any cancer areas? If so, provide the bounding boxes for each.',
    'Are there cancer regions in this picture? Please give bounding boxes for any cancer areas.',
    'Can you identify cancer in this image? If present, list the bounding boxes of the cancer areas.',
    'Check this image for cancer areas and give me the bounding boxes if there are any.',
    'Is cancer visible in this image? If yes, outline the cancer areas with bounding boxes.',
    'Answer yes or no: Does this pathology image have cancer? If yes, provide bounding boxes for the cancer areas.',
    'Is there cancer in this pathology image? If so, give me the bounding boxes for the cancerous regions.',
    'Can you detect cancer in this pathology image? Yes or no, and if yes, indicate the cancer areas with bounding boxes.',
    'Please confirm whether this pathology image contains cancer. Provide bounding boxes for any cancer areas.',
    'Does this pathology image show any cancer regions? If it does, outline these areas with bounding boxes.',
    'Does this pathology image contain cancer? If so, provide bounding boxes for each area in [x1, y1, x2, y2] format with coordinates normalized between 0 and 1, up to three decimal places.',
    'Is there cancer in this pathology picture? If yes, list the cancer regions’ bounding boxes as [x1, y1, x2, y2], with normalized coordinates and three decimal accuracy.',
    'Can you identify cancer areas in this pathology image? Please give their bounding boxes in the format [x1, y1, x2, y2], with normalized 0 to 1 coordinates, precise to three decimals.',
    'Check for cancer in this pathology image and provide the bounding boxes of any found, in the format [x1, y1, x2, y2], with coordinates normalized from 0 to 1 and rounded to three decimal places.',
    'Are there any cancerous regions in this pathology image? If present, outline them using bounding boxes in the format [x1, y1, x2, y2], with normalized coordinates (0 to 1 scale) and three decimal point precision.',
)

_TABLE_20 = (
    'Detect all vessels.',
    'Find every blood vessel.',
    'Identify all vessels in the image.',
    'Locate all blood vessels.',
    'Can you detect all blood vessels in this image?',
    'Could you show all the vessels in the image?',
    'Locate and mark every blood vessel in this picture.',
    'Please identify and create bounding boxes around every blood vessel visible in this image, including both large and small vessels.',
)

_TABLE_21 = (
    'Detect all lymph nodes.',
    'Find all lymph nodes in this image.',
    'Identify and mark all lymph nodes present in the pathology image.',
    'Can you detect and highlight every lymph node in this pathology slide?',
)

_TABLE_22 = (
    'Detect all nerves.',
    'Find all nerves in this image.',
    'Identify and mark all nerves present in the pathology image.',
    'Can you detect all nerves in this pathology slide?',
    'Please locate and highlight every nerve visible in this pathology image.',
)

_TABLE_23 = (
    'Segment all nerves.',
    'Can you segment the nerves in this image?',
    'Identify and segment all nerves present in the pathology image.',
    'Please detect and segment all nerves in this pathology slide.',
    'Could you locate, identify, and segment every nerve visible in this pathology image?',
)

_TABLE_24 = (
    'Is this MVI?',
    'Does this image show MVI?',
    'Can you confirm if this is an example of microvascular invasion?',
    'Based on this image, would you say this represents microvascular invasion?',
    'Considering the details in this image, could you analyze and determine whether it illustrates microvascular invasion?',
)

_TABLE_25 = (
    'Is this neural invasion?',
    'Does this image show neural invasion?',
    'Can you confirm if this image represents neural invasion?',
    'Based on this image, is it indicative of neural invasion?',
    'Could you analyze this image and determine if it depicts neural invasion?',
)

_TABLE_26 = (
    'Is this lymph node metastasis?',
    'Does this image show lymph node metastasis?',
    'Can you confirm if this image represents lymph node metastasis?',
    'Based on this image, is it indicative of lymph node metastasis?',
    'Could you analyze this image and determine if it depicts lymph node metastasis?',
)

_TABLE_27 = (
    'Please identify all cancerous nuclei in this vessel.',
    'Detect every cancerous cell nucleus present in the vessel.',
    'Identify all the cancerous nuclei within this blood vessel.',
    'Find and mark all cancerous cell nuclei in the vessel.',
    'Locate every cancerous nucleus in this blood vessel.',
    'Detect all cancerous nuclei in the vessel using bounding boxes.',
    'Identify every cancerous nucleus in the vessel and mark them with bbox.',
    'Please use bbox to outline all cancerous cell nuclei present in this vessel.',
    'Find all the cancerous nuclei in the vessel and use bounding boxes for each.',
    'Locate and mark every cancerous cell nucleus in the blood vessel with a bbox.',
)

_TABLE_28 = (
    'Segment the cancerous area in the nerve.',
    'Can you segment the cancerous region in this nerve?',
    'Please identify and segment the cancerous areas within this nerve.',
    'Could you analyze and segment all the cancerous regions in the nerve shown in this image?',
    'Can you detect and segment the specific areas of cancer within the nerve in this pathology image?',
)

_TABLE_29 = (
    'Segment the cancerous area in the lymph node.',
    'Can you segment the cancerous region in this lymph node?',
    'Please identify and segment the cancerous areas within this lymph node.',
    'Could you analyze and segment all the cancerous regions in the lymph node shown in this image?',
)

_TABLE_30 = (
    'Please identify all nuclei in this image.',
    'Detect every cell nucleus present in the picture.',
    'Identify all the nuclei within this image.',
    'Find and mark all nuclei in the image.',
    'Locate every nucleus in this picture.',
    'Detect all cell nuclei in the image using bounding boxes.',
    'Identify every nucleus in the picture and mark them with bbox.',
    'Please use bbox to outline all nuclei present in this image.',
    'Find all the cell nuclei in the image and use bounding boxes for each.',
    'Locate and mark every nucleus in the picture with a bbox.',
    'Detect all nuclei in this pathology image and output with bounding boxes in [x1, y1, x2, y2] format, normalized coordinates to 0-1, accurate to three decimals.',
    'Identify every cell nucleus in the picture, marking them with bbox in [x1, y1, x2, y2], normalize coordinates between 0 and 1, with three decimal precision.',
    'Please use bbox to indicate all nuclei in this image, with coordinates in [x1, y1, x2, y2] format, normalized to 0-1 and rounded to three decimal places.',
    'Find all nuclei in the pathology image and represent each with a bounding box, using [x1, y1, x2, y2] for normalized coordinates to a scale of 0 to 1, with three digits after the decimal.',
    'Locate every nucleus in this image, using bbox for output in [x1, y1, x2, y2] format, with coordinates normalized to 0-1, and precision up to three decimals.',
)

_TABLE_31 = (
    'Please detect and classify all nuclei in this image.',
    'Detect and classify every cell nucleus present in the picture.',
    'Detect and classify all the nuclei within this image.',
    'Detect and classify all nuclei in the image.',
    'Locate every nucleus and give its category in this picture.',
    'Detect all cell nuclei in the image using bounding boxes with labels.',
    'Detect and classify every nucleus in the picture and mark them with bbox.',
    'Please use bbox to outline all nuclei and indicate every label present in this image.',
    'Distinguish all the cell nuclei in the image and use bounding boxes for each.',
    'Detect and classify every nucleus in the picture with a bbox.',
    'Detect and classify all nuclei in this pathology image and output with bounding boxes in [x1, y1, x2, y2] format, normalized coordinates to 0-1, accurate to three decimals.',
    'Identify every cell nucleus with label in the picture, marking them with bbox in [x1, y1, x2, y2], normalize coordinates between 0 and 1, with three decimal precision.',
    'Please use bbox to detect and classify all nuclei in this image, with coordinates in [x1, y1, x2, y2] format, normalized to 0-1 and rounded to three decimal places.',
    'Find all nuclei in the pathology image and represent each with a bounding box and a category, using [x1, y1, x2, y2] for normalized coordinates to a scale of 0 to 1, with three digits after the decimal.',
    'Locate and classify every nucleus in this image, using bbox for output in [x1, y1, x2, y2] format, with coordinates normalized to 0-1, and precision up to three decimals.',
)

_TABLE_32 = (
    'Identify the tissue type in this image.',
    'What is the tissue type shown in this picture?',
    'Can you determine the tissue type in this image?',
    'Identify the type of tissue visible in this image.',
    'Please analyze and identify the tissue type depicted in this image.',
    'Could you assess and indicate the tissue type in this picture?',
    'Examine this image and provide the tissue type.',
    'Can you evaluate and classify the tissue type shown in this image?',
    'Please examine the tissue cells in this image and determine their type.',
    'Carefully analyze the tissue cells in this image and provide a detailed identification based on their appearance.',
)

# Table 19 is a word-for-word copy of table 18 in the available paper text (see the module docstring).
_TABLE_19 = _TABLE_18

# Segmentation prompts for cancer regions, written for this project after tables 23 and 28.
_CANCER_SEGMENTATION_PROMPTS = (
    "Segment all cancer regions.",
    "Can you segment the cancerous regions in this image?",
    "Identify and segment all cancer areas present in the pathology image.",
    "Please detect and segment every cancer region in this pathology slide.",
    "Could you locate, identify, and segment every cancerous area visible in this pathology image?",
    "Does this image have any cancer areas? If so, outline the boundary of each one.",
    "Is there cancer in this pathology image? If so, give me the outlines of the cancerous regions.",
    "Please segment the cancer areas in this pathology image and outline each region as a polygon.",
)

# No table in the paper: TIL and MSI are posed as yes/no questions, prognosis as a closed-ended question.
_TIL_PROMPTS = (
    "Are there tumor-infiltrating lymphocytes in this image?",
    "Does this image show tumor-infiltrating lymphocytes?",
    "Can you confirm whether tumor-infiltrating lymphocytes are present in this image?",
    "Based on this image, are tumor-infiltrating lymphocytes present?",
    "Could you analyze this image and determine if it contains tumor-infiltrating lymphocytes?",
)
_MSI_PROMPTS = (
    "Is this tumor microsatellite unstable?",
    "Does this image show microsatellite instability?",
    "Can you confirm whether this colorectal cancer shows microsatellite instability?",
    "Based on this image, is the tumor microsatellite unstable rather than microsatellite stable?",
    "Could you analyze this image and determine if it indicates microsatellite instability?",
)
_PROGNOSIS_PROMPTS = (
    "What is the prognosis of this patient?",
    "Based on this slide, which prognosis category does the patient's outcome belong to?",
    "Predict the recurrence outcome of this patient from the slide.",
    "Analyze this slide and determine the patient's prognosis category.",
    "Considering the pathological features in this slide, what outcome do you expect for this patient?",
)

# The 21 organs of table 13 (the "Unsure" column is not an organ).
_ORGANS = (
    "Liver", "Stomach", "Lung", "Breast", "Kidney", "Skin", "Colon", "Brain", "Esophagus", "Lymph Node",
    "Thyroid", "Prostate", "Uterus", "Ovary", "Head-Neck", "Pancreas", "Bladder", "Testis", "Adrenal Gland",
    "Cervix", "Bile Duct",
)
_YES_NO = ("yes", "no")
_PROGNOSIS_CLASSES = ("recurrence within two years", "no recurrence within five years")


def _from_table(table: int, prompts: tuple[str, ...], **fields: Any) -> Task:
    """A task whose dialogue prompts are exactly the paper's table."""
    return Task(table=table, prompts=prompts, paper_prompts=prompts, **fields)


def _build_registry() -> Mapping[str, Task]:
    text: dict[str, Any] = {"answer_format": "text", "styles": ("open", "closed"), "metric": "accuracy"}
    yes_no: dict[str, Any] = {"answer_format": "yes_no", "styles": ("yes_no",), "metric": "accuracy", "classes": _YES_NO}
    boxes: dict[str, Any] = {"answer_format": "boxes", "styles": ("boxes",), "metric": "detection_f1"}
    polygons: dict[str, Any] = {"answer_format": "polygons", "styles": ("polygons", "mask"), "metric": "dice"}
    tasks = (
        _from_table(14, _TABLE_14, name="organ", title="Organ classification (OC)", level="tissue",
                    granularity="both", classes=_ORGANS, **text),
        _from_table(15, _TABLE_15, name="disease", title="Disease / pathological type recognition (incl. GLR-7)",
                    level="tissue", granularity="both", **text),
        _from_table(16, _TABLE_16, name="subtype", title="Cancer subtyping (HCC-S, ICC-S, RCC-S, LUNG-S, STAD-L)",
                    level="tissue", granularity="both", **text),
        _from_table(17, _TABLE_17, name="grade", title="Cancer grading (HCC-G, ICC-G, LUNG-G, STAD-G)",
                    level="tissue", granularity="both", **text),
        _from_table(18, _TABLE_18, name="cancer_detection", title="Cancer region detection", level="tissue",
                    granularity="slide", **boxes),
        Task(name="cancer_segmentation", title="Cancer region segmentation", level="tissue", granularity="slide",
             table=19, prompts=_CANCER_SEGMENTATION_PROMPTS, paper_prompts=_TABLE_19, **polygons),
        _from_table(20, _TABLE_20, name="vessel_detection", title="Blood vessel detection (VD)", level="structure",
                    granularity="patch", **boxes),
        _from_table(21, _TABLE_21, name="lymph_node_detection", title="Lymph node detection (LD)",
                    level="structure", granularity="patch", **boxes),
        _from_table(22, _TABLE_22, name="nerve_detection", title="Nerve detection (ND)", level="structure",
                    granularity="patch", **boxes),
        _from_table(23, _TABLE_23, name="nerve_segmentation", title="Nerve segmentation (NS)", level="structure",
                    granularity="patch", **polygons),
        _from_table(24, _TABLE_24, name="mvi", title="Microvascular invasion identification (MVI)",
                    level="structure", granularity="patch", **yes_no),
        _from_table(25, _TABLE_25, name="neural_invasion", title="Neural invasion identification (NI)",
                    level="structure", granularity="patch", **yes_no),
        _from_table(26, _TABLE_26, name="lymph_node_metastasis", title="Lymph node metastasis diagnosis (LNM)",
                    level="structure", granularity="both", **yes_no),
        _from_table(27, _TABLE_27, name="cancer_nuclei_in_vessel", title="Cancerous nuclei in vessel detection",
                    level="cell", granularity="patch", **boxes),
        _from_table(28, _TABLE_28, name="cancer_in_nerve_segmentation",
                    title="Neural invasion region segmentation (NIS)", level="structure", granularity="patch",
                    **polygons),
        _from_table(29, _TABLE_29, name="cancer_in_lymph_node_segmentation",
                    title="Lymph node metastasis segmentation (LNMS)", level="structure", granularity="patch",
                    **polygons),
        _from_table(30, _TABLE_30, name="nucleus_detection", title="Nucleus detection (MoNuSeg, CoNIC, TNBC)",
                    level="cell", granularity="patch", **boxes),
        _from_table(31, _TABLE_31, name="nucleus_classification",
                    title="Nucleus detection and classification (NuCLS, PanNuke)", level="cell",
                    granularity="patch", answer_format="detections", styles=("detections",),
                    metric="class_detection_f1"),
        _from_table(32, _TABLE_32, name="tissue_type", title="Tissue type classification (TC)", level="tissue",
                    granularity="patch", **text),
        Task(name="til", title="Tumor-infiltrating lymphocyte recognition (TIL)", level="cell",
             granularity="patch", table=None, prompts=_TIL_PROMPTS, paper_prompts=(), **yes_no),
        Task(name="msi", title="Microsatellite instability detection in colorectal cancer (MSI)", level="tissue",
             granularity="patch", table=None, prompts=_MSI_PROMPTS, paper_prompts=(), **yes_no),
        _from_table(15, _TABLE_15, name="pancancer", title="32-class pan-cancer classification (PanCancer)",
                    level="tissue", granularity="patch", **text),
        Task(name="prognosis", title="Prognosis prediction (HCC-P, CRC-P)", level="tissue", granularity="slide",
             table=None, prompts=_PROGNOSIS_PROMPTS, paper_prompts=(), answer_format="text", styles=("closed",),
             metric="accuracy", classes=_PROGNOSIS_CLASSES),
    )
    registry = {task.name: task for task in tasks}
    if len(registry) != len(tasks):
        raise ValueError("two tasks share a name")
    return MappingProxyType(registry)


TASKS: Mapping[str, Task] = _build_registry()
"""Every task of the paper by name, read-only, in the paper's table order."""


def get_task(name: str) -> Task:
    """The task called ``name``; KeyError listing the known names otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def list_tasks(level: Level | None = None, granularity: Granularity | None = None) -> list[Task]:
    """All tasks in registry order, optionally only those of one level and/or posed at one granularity.

    A task with granularity "both" is listed for "patch" and for "slide".
    """
    if level is not None and level not in get_args(Level):
        raise ValueError(f"level {level!r} is not one of {get_args(Level)}")
    if granularity is not None and granularity not in get_args(Granularity):
        raise ValueError(f"granularity {granularity!r} is not one of {get_args(Granularity)}")
    chosen = []
    for task in TASKS.values():
        if level is not None and task.level != level:
            continue
        if granularity is not None and task.granularity not in (granularity, "both"):
            continue
        chosen.append(task)
    return chosen


def sample_prompt(task: Task | str, rng: random.Random, style: Style | None = None) -> str:
    """One prompt of the task, drawn uniformly with ``rng``.

    The paper draws every answer style of a task from the same prompt table
    (open- and closed-ended questions share tables 15-17), so ``style`` does
    not change the pool: it only checks that the task supports that style.
    Options of a closed-ended question are added by :func:`closed_question`.
    """
    if isinstance(task, str):
        task = get_task(task)
    if style is not None and style not in task.styles:
        raise ValueError(f"task {task.name!r} has no {style!r} style (its styles: {', '.join(task.styles)})")
    return rng.choice(task.prompts)


def closed_question(
    prompt: str, options: Sequence[str], rng: random.Random, answer: int | str = 0
) -> tuple[str, str]:
    """Append lettered options in a shuffled order and return (question, letter of the correct option).

    ``answer`` names the correct option, as its index in ``options`` (by
    default the first one) or as its text.  The question is the prompt followed
    by one line per option, ``"A. text"``; the order comes from ``rng`` alone,
    so a seeded generator gives the same question every time.
    """
    options = list(options)
    if len(options) < 2:
        raise ValueError(f"a closed-ended question needs at least 2 options, {len(options)} given")
    if len(options) > len(_OPTION_LETTERS):
        raise ValueError(f"{len(options)} options given but only {len(_OPTION_LETTERS)} letters exist")
    if len(set(options)) != len(options):
        raise ValueError(f"options repeat: {options}")
    for option in options:
        if not option.strip() or "\n" in option:
            raise ValueError(f"option {option!r} must be non-empty and on one line")
    if isinstance(answer, str):
        if answer not in options:
            raise ValueError(f"answer {answer!r} is not one of the options {options}")
        answer_index = options.index(answer)
    else:
        if not 0 <= answer < len(options):
            raise ValueError(f"answer index {answer} is outside the {len(options)} options")
        answer_index = answer
    order = list(range(len(options)))
    rng.shuffle(order)
    lines = [f"{_OPTION_LETTERS[slot]}. {options[index]}" for slot, index in enumerate(order)]
    letter = _OPTION_LETTERS[order.index(answer_index)]
    return prompt.rstrip() + "\n" + "\n".join(lines), letter
