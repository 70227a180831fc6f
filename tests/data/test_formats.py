"""Tests of the answer formats: exact writing, round trips, tolerant reading, short answers."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnipath_lvlm.data.formats import (
    OptionMatch,
    ParseResult,
    format_boxes,
    format_detections,
    format_polygons,
    match_option,
    normalize_answer,
    parse_boxes,
    parse_detections,
    parse_polygons,
    parse_yes_no,
)

# ---------------------------------------------------------------- strategies

coordinate = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_infinity=False)


@st.composite
def boxes_strategy(draw: st.DrawFn) -> tuple[float, float, float, float]:
    xa, ya, xb, yb = draw(st.tuples(coordinate, coordinate, coordinate, coordinate))
    return (min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


box_lists = st.lists(boxes_strategy(), max_size=8)
polygon_lists = st.lists(st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=12), max_size=5)
class_names = st.text(
    alphabet=st.characters(blacklist_characters='"<>', blacklist_categories=("Cs",)), min_size=1, max_size=12
).filter(lambda name: name == name.strip() and name != "")
detection_dicts = st.dictionaries(class_names, box_lists, max_size=5)


def rounded(value: float) -> float:
    """What three decimals keep of a value, computed independently of the formatter."""
    return float(f"{value:.3f}")


# ---------------------------------------------------------------- exact writing


def test_format_boxes_writes_the_paper_format():
    assert format_boxes([(0.12, 0.34, 0.56, 0.78)]) == "<bbox_list><bbox>0.120, 0.340, 0.560, 0.780</bbox></bbox_list>"
    assert format_boxes([]) == "<bbox_list></bbox_list>"
    assert format_boxes([(0, 0, 1, 1), (0.12345, 0.5, 0.9996, 1)]) == (
        "<bbox_list><bbox>0.000, 0.000, 1.000, 1.000</bbox><bbox>0.123, 0.500, 1.000, 1.000</bbox></bbox_list>"
    )
    assert format_boxes([(-0.0, 0, 0, 0)]) == "<bbox_list><bbox>0.000, 0.000, 0.000, 0.000</bbox></bbox_list>"


def test_format_polygons_and_detections_write_the_paper_format():
    assert format_polygons([[(0.1, 0.2), (0.3, 0.4), (0.5, 0.6)]]) == (
        "<contour_list><polygon>[0.100, 0.200], [0.300, 0.400], [0.500, 0.600]</polygon></contour_list>"
    )
    assert format_polygons([]) == "<contour_list></contour_list>"
    assert format_detections({"tumor": [(0.1, 0.2, 0.3, 0.4)], "lymphocyte": []}) == (
        '<detection_result><bbox_list class="tumor"><bbox>0.100, 0.200, 0.300, 0.400</bbox></bbox_list>'
        '<bbox_list class="lymphocyte"></bbox_list></detection_result>'
    )


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(0.1, 0.2, 0.3)], "box 0 .* has 3 numbers"),
        ([(0.1, 0.2, 0.3, 0.4), (0.1, math.nan, 0.3, 0.4)], "box 1 .*non-finite"),
        ([(0.1, 0.2, math.inf, 0.4)], "non-finite"),
        ([(0.1, 0.2, 1.3, 0.4)], "outside the relative range"),
        ([(0.5, 0.2, 0.3, 0.4)], "x1 > x2"),
        (["0.1, 0.2, 0.3, 0.4"], "is text"),
        ([None], "not a sequence"),
    ],
)
def test_format_boxes_rejects_bad_boxes_by_name(boxes, message):
    with pytest.raises(ValueError, match=message):
        format_boxes(boxes)


def test_format_polygons_and_detections_reject_bad_input():
    with pytest.raises(ValueError, match="polygon 0 has 2 vertices"):
        format_polygons([[(0.1, 0.1), (0.2, 0.2)]])
    with pytest.raises(ValueError, match="vertex 1 of polygon 0"):
        format_polygons([[(0.1, 0.1), (0.2, 0.2, 0.3), (0.4, 0.4)]])
    for bad in ("", ' tumor', 'a"b', "<b>"):
        with pytest.raises(ValueError, match="class name"):
            format_detections({bad: []})
    with pytest.raises(ValueError, match="box 0 of class 'tumor'"):
        format_detections({"tumor": [(0.1, 0.2, 0.3, 2.0)]})


# ---------------------------------------------------------------- round trips


@settings(max_examples=300, deadline=None)
@given(box_lists)
def test_boxes_round_trip(boxes):
    result = parse_boxes(format_boxes(boxes))
    assert result.problems == []
    assert result.ok
    assert result.items == [tuple(rounded(v) for v in box) for box in boxes]


@settings(max_examples=300, deadline=None)
@given(polygon_lists)
def test_polygons_round_trip(polygons):
    result = parse_polygons(format_polygons(polygons))
    assert result.problems == []
    assert result.items == [[(rounded(x), rounded(y)) for x, y in polygon] for polygon in polygons]


@settings(max_examples=300, deadline=None)
@given(detection_dicts)
def test_detections_round_trip(detections):
    result = parse_detections(format_detections(detections))
    assert result.problems == []
    assert result.items == {name: [tuple(rounded(v) for v in box) for box in boxes] for name, boxes in detections.items()}
    assert list(result.items) == list(detections)


# ---------------------------------------------------------------- tolerant reading, by hand


def test_parse_boxes_accepts_spaces_newlines_and_integers():
    result = parse_boxes("<bbox_list>\n  <bbox> 0.1 ,0.2,\n0.3 , 0.4 </bbox>\n<bbox>0, 0, 1, 1</bbox>\n</bbox_list>")
    assert result.items == [(0.1, 0.2, 0.3, 0.4), (0.0, 0.0, 1.0, 1.0)]
    assert result.ok


def test_parse_boxes_ignores_text_outside_the_list():
    result = parse_boxes("Yes. <bbox_list><bbox>0.1, 0.2, 0.3, 0.4</bbox></bbox_list> These are the regions.")
    assert result.items == [(0.1, 0.2, 0.3, 0.4)]
    assert result.ok


def test_parse_boxes_repairs_missing_closing_tags():
    result = parse_boxes("<bbox_list><bbox>0.1, 0.2, 0.3, 0.4<bbox>0.5, 0.5, 0.6, 0.7")
    assert result.items == [(0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.6, 0.7)]
    assert any("</bbox_list>" in p for p in result.problems)
    assert any("</bbox>" in p for p in result.problems)


def test_parse_boxes_clips_out_of_range_and_notes_it():
    result = parse_boxes("<bbox_list><bbox>-0.2, 0.1, 1.5, 0.9</bbox></bbox_list>")
    assert result.items == [(0.0, 0.1, 1.0, 0.9)]
    assert len(result.problems) == 1 and "clipped" in result.problems[0]


def test_parse_boxes_orders_swapped_corners():
    result = parse_boxes("<bbox_list><bbox>0.6, 0.8, 0.2, 0.1</bbox></bbox_list>")
    assert result.items == [(0.2, 0.1, 0.6, 0.8)]
    assert len(result.problems) == 1 and "swapped" in result.problems[0]


def test_parse_boxes_skips_junk_between_tags():
    result = parse_boxes("<bbox_list><bbox>0.1, 0.2, 0.3, 0.4</bbox> and also <bbox>0.5, 0.5, 0.6, 0.7</bbox></bbox_list>")
    assert result.items == [(0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.6, 0.7)]
    assert len(result.problems) == 1 and "and also" in result.problems[0]


def test_parse_boxes_accepts_bare_lists_and_notes_them():
    result = parse_boxes("[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]")
    assert result.items == [(0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.6, 0.7)]
    assert any("bare" in p for p in result.problems)
    assert any("no <bbox_list>" in p for p in result.problems)


def test_parse_boxes_does_not_rescale_thousand_scaled_integers():
    result = parse_boxes("<bbox_list><bbox>120, 340, 560, 780</bbox></bbox_list>")
    assert result.items == [(1.0, 1.0, 1.0, 1.0)]  # clipped, not (0.12, 0.34, 0.56, 0.78)
    assert any("0..1000" in p and "not rescaled" in p for p in result.problems)


def test_parse_boxes_skips_unreadable_boxes_with_a_problem_each():
    text = "<bbox_list><bbox>0.1, 0.2, 0.3</bbox><bbox>0.1, 0.2, 0.3, 0.4</bbox><bbox>1e999, 0, 0, 0</bbox></bbox_list>"
    result = parse_boxes(text)
    assert result.items == [(0.1, 0.2, 0.3, 0.4)]
    assert any("bbox 0 has 3 numbers" in p for p in result.problems)
    assert any("bbox 2" in p and "non-finite" in p for p in result.problems)


def test_parse_boxes_reports_a_missing_list():
    for text in ("", "No cancer is present.", "<bbox_list>garbage</bbox_list>"):
        result = parse_boxes(text)
        assert result.items == []
        assert not result.ok
    assert parse_boxes("<bbox_list></bbox_list>").ok


def test_parse_polygons_tolerances():
    result = parse_polygons(
        "<contour_list>\n<polygon>[0.1, 0.2], [0.3,0.4],\n [0.5, 0.6]</polygon>"
        "<polygon>[0.1, 0.1], [0.2, 0.2]</polygon>"  # too few vertices
        "<polygon>[0, 0], [2, 0], [1, 1]"  # missing closing tags, out of range
    )
    assert result.items == [[(0.1, 0.2), (0.3, 0.4), (0.5, 0.6)], [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)]]
    assert any("polygon 1" in p and "needs 3" in p for p in result.problems)
    assert any("clipped" in p for p in result.problems)
    assert any("</contour_list>" in p for p in result.problems)
    bare = parse_polygons("[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]")
    assert bare.items == [[(0.1, 0.2), (0.3, 0.4), (0.5, 0.6)]]
    assert any("bare" in p for p in bare.problems)
    loose = parse_polygons("<contour_list><polygon>0.1 0.2 0.3 0.4 0.5 0.6 0.7</polygon></contour_list>")
    assert loose.items == [[(0.1, 0.2), (0.3, 0.4), (0.5, 0.6)]]
    assert any("brackets" in p for p in loose.problems) and any("odd" in p for p in loose.problems)


def test_parse_detections_tolerances():
    text = (
        "<detection_result>\n<bbox_list class='tumor'><bbox>0.6, 0.2, 0.3, 0.4</bbox></bbox_list>"
        "<bbox_list><bbox>0.1, 0.1, 0.2, 0.2</bbox></bbox_list>"  # no class
        '<bbox_list class="tumor"><bbox>0.1, 0.1, 0.2, 0.2</bbox>'  # repeated class, unclosed
    )
    result = parse_detections(text)
    assert result.items == {"tumor": [(0.3, 0.2, 0.6, 0.4), (0.1, 0.1, 0.2, 0.2)]}
    problems = " | ".join(result.problems)
    for expected in ("swapped", "no class", "merged", "</detection_result>", "</bbox_list>"):
        assert expected in problems


@pytest.mark.parametrize("value", [None, 3, b"<bbox_list></bbox_list>", ["x"]])
def test_parsers_report_non_text_instead_of_raising(value):
    for parser in (parse_boxes, parse_polygons, parse_detections, parse_yes_no):
        result = parser(value)  # type: ignore[arg-type]
        assert not result.ok and "expected a str" in result.problems[0]
    assert match_option(value, ["x", "y"]).index is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- malformed strings never break the parsers


TAGS = ("<bbox_list>", "</bbox_list>", "<bbox>", "</bbox>", "<polygon>", "</polygon>", "<contour_list>",
        "</contour_list>", "<detection_result>", "</detection_result>", 'class="', "[", "]", ",")
SMALL_BOXES = st.lists(boxes_strategy(), max_size=3)
SMALL_POLYGONS = st.lists(st.lists(st.tuples(coordinate, coordinate), min_size=3, max_size=5), max_size=2)
JUNK = st.one_of(
    st.text(max_size=20),
    st.sampled_from(TAGS),
    st.integers(-10, 2000).map(str),
    st.floats(-2.0, 1200.0).map(lambda v: f"{v:.4f}"),
)
# (kind, where as a fraction of the length, inserted text, deleted length, tag to drop)
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["truncate", "insert", "delete", "drop_tag", "duplicate", "replace"]),
        st.floats(0.0, 1.0),
        JUNK,
        st.integers(1, 12),
        st.sampled_from(TAGS),
    ),
    min_size=1,
    max_size=4,
)
VARIANTS = 4  # damaged strings made from each generated answer


def damaged(text: str, mutations: list[tuple[str, float, str, int, str]]) -> str:
    """A valid answer after a few edits: truncation, inserted junk, deletions, dropped tags, repeats."""
    for kind, where, junk, length, tag in mutations:
        at = int(where * len(text))
        if kind == "truncate":
            text = text[:at]
        elif kind == "insert":
            text = text[:at] + junk + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + length:]
        elif kind == "drop_tag":
            text = text.replace(tag, "", 1)
        elif kind == "duplicate":
            text = text[:at] + text[max(0, at - length):at] + text[at:]
        else:
            text = text[:at] + junk[:1] + text[at + 1:]
    return text


def damaged_variants(answers: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """VARIANTS independently damaged copies of one valid answer."""
    edits = st.lists(MUTATIONS, min_size=VARIANTS, max_size=VARIANTS)
    return st.builds(lambda text, all_edits: [damaged(text, e) for e in all_edits], answers, edits)


def check_boxes(boxes: object) -> None:
    assert isinstance(boxes, list)
    for box in boxes:
        assert isinstance(box, tuple) and len(box) == 4
        x1, y1, x2, y2 = box
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in box)
        assert x1 <= x2 and y1 <= y2


def check_result(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    assert isinstance(result.problems, list) and all(isinstance(p, str) and p for p in result.problems)
    assert result.ok == (not result.problems)


def check_every_parser(text: str) -> None:
    """Every parser reads the text without raising and returns only valid, writable items."""
    boxes = parse_boxes(text)
    check_result(boxes)
    check_boxes(boxes.items)
    assert parse_boxes(format_boxes(boxes.items)).items == [tuple(rounded(v) for v in b) for b in boxes.items]

    polygons = parse_polygons(text)
    check_result(polygons)
    for polygon in polygons.items:
        assert len(polygon) >= 3
        assert all(0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 for x, y in polygon)
    format_polygons(polygons.items)  # whatever was read is valid to write

    detections = parse_detections(text)
    check_result(detections)
    assert isinstance(detections.items, dict)
    for boxes_of_class in detections.items.values():
        check_boxes(boxes_of_class)
    format_detections(detections.items)

    yes_no = parse_yes_no(text)
    check_result(yes_no)
    assert yes_no.items in ("yes", "no", None)
    assert (yes_no.items is None) == (not yes_no.ok)

    options = ["Hepatocellular carcinoma", "bbox", "0.5", "Normal"]
    match = match_option(text, options)
    assert (match.index is None) == (match.problem is not None)
    assert match.index is None or 0 <= match.index < len(options)
    assert isinstance(normalize_answer(text), str)


# 4 tests x 625 examples x 4 strings = 10,000 malformed strings, each read by every parser.
FUZZ = settings(max_examples=625, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(damaged_variants(SMALL_BOXES.map(format_boxes)))
def test_parsers_survive_damaged_box_answers(texts):
    for text in texts:
        check_every_parser(text)


@FUZZ
@given(damaged_variants(SMALL_POLYGONS.map(format_polygons)))
def test_parsers_survive_damaged_polygon_answers(texts):
    for text in texts:
        check_every_parser(text)


@FUZZ
@given(damaged_variants(st.dictionaries(class_names, SMALL_BOXES, max_size=2).map(format_detections)))
def test_parsers_survive_damaged_detection_answers(texts):
    for text in texts:
        check_every_parser(text)


@FUZZ
@given(st.lists(st.text(max_size=80), min_size=VARIANTS, max_size=VARIANTS))
def test_parsers_survive_random_unicode(texts):
    for text in texts:
        check_every_parser(text)


# ---------------------------------------------------------------- yes / no


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"), ("no", "no"), ("Yes.", "yes"), ("NO!", "no"),
        ("No, there is no microvascular invasion.", "no"),
        ("Yes, no doubt about it.", "yes"),
        ("Answer: yes", "yes"),
        ("Answer yes or no: no", "no"),
        ("The image shows neural invasion, so yes.", "yes"),
        ("Yes/No", None), ("yes and no", None), ("maybe", None), ("", None), ("nobody knows", None),
    ],
)
def test_parse_yes_no(text, expected):
    result = parse_yes_no(text)
    assert result.items == expected
    assert result.ok == (expected is not None)


def test_parse_yes_no_names_ambiguity():
    assert "ambiguous" in parse_yes_no("Yes/No").problems[0]


# ---------------------------------------------------------------- closed-ended options

OPTIONS = ["Hepatocellular carcinoma", "Cholangiocarcinoma", "Combined hepatocellular-cholangiocarcinoma", "Normal"]


@pytest.mark.parametrize(
    ("answer", "index"),
    [
        ("B", 1), ("B.", 1), ("(B)", 1), ("b", 1), ("Answer: B", 1), ("The answer is C.", 2),
        ("B. Cholangiocarcinoma", 1), ("cholangiocarcinoma", 1), ("  HEPATOCELLULAR   carcinoma ", 0),
        ("This is combined hepatocellular-cholangiocarcinoma.", 2),  # longer option wins over its parts
        ("I believe it is normal tissue.", 3),
        ("Answer: A tumour of the liver, hepatocellular carcinoma", 0),
        ("A. Hepatocellular carcinoma", 0), ("A normal liver", 3),  # the article A names no option
    ],
)
def test_match_option_recognises_letters_and_text(answer, index):
    assert match_option(answer, OPTIONS) == OptionMatch(index, None)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("A or C", "ambiguous: matches A and C"),
        ("B. Hepatocellular carcinoma", "ambiguous: matches A and B"),
        ("A. Cholangiocarcinoma", "ambiguous: matches A and B"),  # "A." is a letter, not an article
        ("(A) Normal", "ambiguous: matches A and D"),
        ("Either cholangiocarcinoma or normal", "ambiguous: matches B and D"),
        ("I am not sure", "no option recognised"),
        ("", "no option recognised"),
        ("F", "letter F is not one of the 4 options"),
    ],
)
def test_match_option_reports_ambiguous_or_missing_answers(answer, problem):
    assert match_option(answer, OPTIONS) == OptionMatch(None, problem)


def test_normalize_answer():
    assert normalize_answer("The  Well-differentiated, HCC!") == "well differentiated hcc"
    assert normalize_answer("An adenocarcinoma.") == "adenocarcinoma"
    assert normalize_answer("A") == ""
    assert normalize_answer("Patient’s  TUMOR\n") == "patients tumor"


def test_text_modules_do_not_import_torch():
    code = "import sys, omnipath_lvlm.data.formats, omnipath_lvlm.data.tasks; print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
