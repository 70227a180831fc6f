"""Answer formats of OmniPath's dialogues: writing them exactly, reading them tolerantly.

The paper (appendix F) fixes three XML-like formats for spatial answers, all
with coordinates relative to the image (0..1) written with three decimals:

* boxes:      ``<bbox_list><bbox>x1, y1, x2, y2</bbox>...</bbox_list>``
* polygons:   ``<contour_list><polygon>[x1, y1], [x2, y2], ...</polygon>...</contour_list>``
* detections: ``<detection_result><bbox_list class="NAME"><bbox>...</bbox>...</bbox_list>...</detection_result>``

``format_*`` functions write these strings exactly and reject invalid input
with a ValueError naming the offending item.  ``parse_*`` functions read what
a model wrote; they never raise on a string and return a :class:`ParseResult`
whose ``problems`` list says what had to be repaired or was skipped:

* spaces and newlines anywhere, integers, ``[...]`` around box numbers: fine;
* a missing closing tag: the element ends at the next opening tag or the end;
* text between tags inside the list: ignored, noted (text outside the list,
  such as a leading "Yes." before the boxes, is not a problem);
* a bare ``[x1, y1, x2, y2]`` list without tags: accepted, noted;
* coordinates outside 0..1: clipped, noted; integers in 0..1000 (another
  convention) are clipped too, never silently rescaled, with a note saying so;
* swapped corners: reordered, noted;
* anything unreadable (wrong count of numbers, infinite values, too few
  polygon vertices, a class-less group): skipped, noted.

Short answers: :func:`parse_yes_no` for yes/no questions, :func:`match_option`
for closed-ended questions with lettered options, :func:`normalize_answer` for
comparing open-ended answers.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Box = tuple[float, float, float, float]
Point = tuple[float, float]

T = TypeVar("T")

_NUMBER = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_BARE_POLYGON = re.compile(r"\[\s*(?:\[[^\[\]]*\][\s,;]*)+\]")
_SEPARATORS = re.compile(r"[\s,;()\[\]]+")
_CLASS_ATTRIBUTE = re.compile(r"""class\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'<>]+))""", re.IGNORECASE)
_SNIPPET_LENGTH = 40


@dataclass
class ParseResult(Generic[T]):
    """What a parser read (``items``) and every repair or skip it made (``problems``)."""

    items: T
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the text was read exactly as written, with nothing repaired or skipped."""
        return not self.problems


@dataclass(frozen=True)
class OptionMatch:
    """The option an answer picked (``index`` into the options) or why none could be chosen."""

    index: int | None
    problem: str | None = None


# ---------------------------------------------------------------- writing


def _coordinate_text(value: float) -> str:
    return f"{value + 0.0:.3f}"  # + 0.0 turns -0.0 into 0.0


def _checked_numbers(item: object, count: int, what: str) -> list[float]:
    """The ``count`` finite numbers in 0..1 of one box or vertex, or a ValueError naming it."""
    if isinstance(item, (str, bytes)):
        raise ValueError(f"{what} {item!r} is text, expected a sequence of {count} numbers")
    try:
        values = [float(v) for v in item]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {item!r} is not a sequence of {count} numbers") from None
    if len(values) != count:
        raise ValueError(f"{what} {item!r} has {len(values)} numbers, expected {count}")
    for value in values:
        if not math.isfinite(value):
            raise ValueError(f"{what} {item!r} has a non-finite coordinate")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{what} {item!r} has a coordinate outside the relative range 0..1")
    return values


def _box_text(box: object, what: str) -> str:
    x1, y1, x2, y2 = _checked_numbers(box, 4, what)
    if x1 > x2 or y1 > y2:
        raise ValueError(f"{what} {box!r} has x1 > x2 or y1 > y2 (corners must be top-left, bottom-right)")
    return "<bbox>" + ", ".join(_coordinate_text(v) for v in (x1, y1, x2, y2)) + "</bbox>"


def format_boxes(boxes: Iterable[Sequence[float]]) -> str:
    """``<bbox_list><bbox>x1, y1, x2, y2</bbox>...</bbox_list>`` with relative coordinates, 3 decimals."""
    parts = [_box_text(box, f"box {i}") for i, box in enumerate(boxes)]
    return "<bbox_list>" + "".join(parts) + "</bbox_list>"


def format_polygons(polygons: Iterable[Iterable[Sequence[float]]]) -> str:
    """``<contour_list><polygon>[x1, y1], [x2, y2], ...</polygon>...</contour_list>``, 3 decimals.

    Each polygon is a sequence of at least 3 (x, y) vertices in 0..1.
    """
    parts = []
    for i, polygon in enumerate(polygons):
        vertices = [_checked_numbers(vertex, 2, f"vertex {j} of polygon {i}") for j, vertex in enumerate(polygon)]
        if len(vertices) < 3:
            raise ValueError(f"polygon {i} has {len(vertices)} vertices, a polygon needs at least 3")
        points = ", ".join(f"[{_coordinate_text(x)}, {_coordinate_text(y)}]" for x, y in vertices)
        parts.append(f"<polygon>{points}</polygon>")
    return "<contour_list>" + "".join(parts) + "</contour_list>"


def format_detections(detections: Mapping[str, Iterable[Sequence[float]]]) -> str:
    """``<detection_result><bbox_list class="NAME"><bbox>...</bbox>...</bbox_list>...</detection_result>``.

    One ``bbox_list`` per class, in the mapping's order; a class with no boxes
    gets an empty list.  Class names must be non-empty, without surrounding
    spaces and without the characters ``" < >``.
    """
    parts = []
    for name, boxes in detections.items():
        if not isinstance(name, str) or not name or name != name.strip() or any(c in name for c in '"<>'):
            raise ValueError(f"class name {name!r} must be a non-empty string without surrounding spaces or \" < >")
        texts = [_box_text(box, f"box {i} of class {name!r}") for i, box in enumerate(boxes)]
        parts.append(f'<bbox_list class="{name}">' + "".join(texts) + "</bbox_list>")
    return "<detection_result>" + "".join(parts) + "</detection_result>"


# ---------------------------------------------------------------- reading: tags


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _SNIPPET_LENGTH:
        text = text[: _SNIPPET_LENGTH - 3] + "..."
    return repr(text)


def _open_tag(name: str, attributes: bool = False) -> re.Pattern[str]:
    tail = r"(?:\s[^<>]*)?>" if attributes else r"\s*>"
    return re.compile(r"<\s*" + name + tail, re.IGNORECASE)


def _close_tag(name: str) -> re.Pattern[str]:
    return re.compile(r"<\s*/\s*" + name + r"\s*>", re.IGNORECASE)


def _container(text: str, name: str, problems: list[str]) -> tuple[str, bool]:
    """The inside of the first ``<name>...</name>`` and True; the whole text and False without that tag."""
    opening = _open_tag(name, attributes=True).search(text)
    if opening is None:
        problems.append(f"no <{name}> tag")
        return text, False
    closing = _close_tag(name).search(text, opening.end())
    if closing is None:
        problems.append(f"missing </{name}>")
        return text[opening.end():], True
    if _open_tag(name, attributes=True).search(text, closing.end()):
        problems.append(f"a second <{name}> was ignored")
    return text[opening.end():closing.start()], True


def _elements(
    region: str, name: str, problems: list[str], attributes: bool = False
) -> tuple[list[tuple[str, str]], str]:
    """Every ``<name ...>content</name>`` in region as (opening tag, content), and the text outside them.

    An element without its closing tag ends where the next one opens (or at
    the end of the region), which is noted.
    """
    openings = list(_open_tag(name, attributes).finditer(region))
    close = _close_tag(name)
    found: list[tuple[str, str]] = []
    outside: list[str] = []
    position = 0
    for i, opening in enumerate(openings):
        outside.append(region[position:opening.start()])
        limit = openings[i + 1].start() if i + 1 < len(openings) else len(region)
        closing = close.search(region, opening.end(), limit)
        if closing is None:
            problems.append(f"<{name}> {i} has no </{name}>")
            found.append((opening.group(0), region[opening.end():limit]))
            position = limit
        else:
            found.append((opening.group(0), region[opening.end():closing.start()]))
            position = closing.end()
    outside.append(region[position:])
    return found, "".join(outside)


def _note_junk(junk: str, where: str, problems: list[str]) -> None:
    if junk.strip():
        problems.append(f"ignored text {where}: {_snippet(junk)}")


# ---------------------------------------------------------------- reading: numbers


def _relative_values(raw: list[str], label: str, problems: list[str]) -> list[float] | None:
    """Numbers as floats clipped to 0..1 (noted), or None when one is not finite."""
    values = [float(text) for text in raw]
    if not all(math.isfinite(v) for v in values):
        problems.append(f"{label} has a non-finite number: {', '.join(raw)}")
        return None
    if any(not 0.0 <= v <= 1.0 for v in values):
        note = f"{label} has coordinates outside 0..1, clipped: {', '.join(raw)}"
        integers = all(re.fullmatch(r"[-+]?[0-9]+", text) for text in raw)
        if integers and all(0.0 <= v <= 1000.0 for v in values):
            note += " (they look like 0..1000 integer coordinates; not rescaled)"
        problems.append(note)
        values = [min(max(v, 0.0), 1.0) for v in values]
    return [v + 0.0 for v in values]


def _read_box(content: str, label: str, problems: list[str]) -> Box | None:
    raw = _NUMBER.findall(content)
    _note_junk(_SEPARATORS.sub(" ", _NUMBER.sub(" ", content)), f"in {label}", problems)
    if len(raw) != 4:
        problems.append(f"{label} has {len(raw)} numbers instead of 4: {_snippet(content)}")
        return None
    values = _relative_values(raw, label, problems)
    if values is None:
        return None
    x1, y1, x2, y2 = values
    if x1 > x2 or y1 > y2:
        problems.append(f"{label} has swapped corners, reordered: {', '.join(raw)}")
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
    return (x1, y1, x2, y2)


def _read_boxes(region: str, where: str, problems: list[str], tagged: bool) -> list[Box]:
    """Boxes of ``<bbox>`` elements in region; bare ``[x1, y1, x2, y2]`` lists when there are no tags.

    Stray text is noted when the region is the inside of a list tag
    (``tagged``) or held bare boxes; untagged prose without boxes is left to
    the caller's "no tag" problem.
    """
    elements, outside = _elements(region, "bbox", problems)
    boxes: list[Box] = []
    if elements:
        _note_junk(outside, f"between tags{where}", problems)
        for i, (_, content) in enumerate(elements):
            box = _read_box(content, f"bbox {i}{where}", problems)
            if box is not None:
                boxes.append(box)
        return boxes
    bares = list(_BRACKETED.finditer(region))
    for i, bare in enumerate(bares):
        problems.append(f"box {i}{where} given as a bare list without <bbox> tags: {_snippet(bare.group(0))}")
        box = _read_box(bare.group(1), f"bare box {i}{where}", problems)
        if box is not None:
            boxes.append(box)
    if tagged or bares:
        _note_junk(_BRACKETED.sub(" ", region).replace(",", " "), f"between boxes{where}", problems)
    return boxes


def _read_polygon(content: str, label: str, problems: list[str]) -> list[Point] | None:
    vertex_texts = _BRACKETED.findall(content)
    if vertex_texts:
        _note_junk(_SEPARATORS.sub(" ", _BRACKETED.sub(" ", content)), f"in {label}", problems)
        raw_pairs = [_NUMBER.findall(text) for text in vertex_texts]
        for j, (pair, text) in enumerate(zip(raw_pairs, vertex_texts)):
            junk = _SEPARATORS.sub(" ", _NUMBER.sub(" ", text))
            if len(pair) != 2 or junk.strip():
                problems.append(f"vertex {j} of {label} is not two numbers, skipped: {_snippet(text)}")
        raw_pairs = [pair for pair, text in zip(raw_pairs, vertex_texts) if len(pair) == 2]
    else:
        numbers = _NUMBER.findall(content)
        _note_junk(_SEPARATORS.sub(" ", _NUMBER.sub(" ", content)), f"in {label}", problems)
        if numbers:
            problems.append(f"{label} lists numbers without [x, y] brackets")
        if len(numbers) % 2:
            problems.append(f"{label} has an odd count of numbers ({len(numbers)}); the last one is dropped")
        raw_pairs = [numbers[k:k + 2] for k in range(0, len(numbers) - 1, 2)]
    vertices: list[Point] = []
    for pair in raw_pairs:
        values = _relative_values(pair, label, problems)
        if values is not None:
            vertices.append((values[0], values[1]))
    if len(vertices) < 3:
        problems.append(f"{label} has {len(vertices)} readable vertices, a polygon needs 3; skipped")
        return None
    return vertices


# ---------------------------------------------------------------- reading: public parsers


def _not_text(text: object) -> str | None:
    return None if isinstance(text, str) else f"expected a str answer, got {type(text).__name__}"


def parse_boxes(text: str) -> ParseResult[list[Box]]:
    """Read a ``<bbox_list>`` answer into (x1, y1, x2, y2) tuples; never raises (see module docstring)."""
    if (wrong := _not_text(text)) is not None:
        return ParseResult([], [wrong])
    problems: list[str] = []
    region, tagged = _container(text, "bbox_list", problems)
    return ParseResult(_read_boxes(region, "", problems, tagged), problems)


def parse_polygons(text: str) -> ParseResult[list[list[Point]]]:
    """Read a ``<contour_list>`` answer into lists of (x, y) vertices; never raises."""
    if (wrong := _not_text(text)) is not None:
        return ParseResult([], [wrong])
    problems: list[str] = []
    region, tagged = _container(text, "contour_list", problems)
    elements, outside = _elements(region, "polygon", problems)
    polygons: list[list[Point]] = []
    if elements:
        _note_junk(outside, "between tags", problems)
        for i, (_, content) in enumerate(elements):
            polygon = _read_polygon(content, f"polygon {i}", problems)
            if polygon is not None:
                polygons.append(polygon)
        return ParseResult(polygons, problems)
    bares = list(_BARE_POLYGON.finditer(region))
    for i, bare in enumerate(bares):
        problems.append(f"polygon {i} given as a bare list without <polygon> tags")
        polygon = _read_polygon(bare.group(0)[1:-1], f"bare polygon {i}", problems)
        if polygon is not None:
            polygons.append(polygon)
    if tagged or bares:
        _note_junk(_BARE_POLYGON.sub(" ", region).replace(",", " "), "between polygons", problems)
    return ParseResult(polygons, problems)


def parse_detections(text: str) -> ParseResult[dict[str, list[Box]]]:
    """Read a ``<detection_result>`` answer into {class name: boxes}; never raises.

    A class listed twice has its boxes merged (noted); a ``bbox_list`` without
    a class attribute is skipped (noted).
    """
    if (wrong := _not_text(text)) is not None:
        return ParseResult({}, [wrong])
    problems: list[str] = []
    region, _ = _container(text, "detection_result", problems)
    groups, outside = _elements(region, "bbox_list", problems, attributes=True)
    _note_junk(outside, "between class lists", problems)
    detections: dict[str, list[Box]] = {}
    for i, (opening, content) in enumerate(groups):
        attribute = _CLASS_ATTRIBUTE.search(opening)
        if attribute is None:
            problems.append(f"bbox_list {i} has no class attribute, skipped: {_snippet(opening)}")
            continue
        name = next(g for g in attribute.groups() if g is not None).strip()
        if not name or '"' in name:
            problems.append(f"bbox_list {i} has an empty class name or one with a double quote, skipped")
            continue
        if name in detections:
            problems.append(f"class {name!r} is listed twice; its boxes were merged")
        detections.setdefault(name, []).extend(_read_boxes(content, f" of class {name!r}", problems, True))
    return ParseResult(detections, problems)


# ---------------------------------------------------------------- short answers

_WORD = re.compile(r"\w+")
_CLAUSE_END = re.compile(r"[.,;:!?\n]")
_YES_OR_NO_ECHO = re.compile(r"^\s*(?:answer\s+)?yes\s+or\s+no\s*[:,.\-]?", re.IGNORECASE)


def _yes_no_words(text: str) -> set[str]:
    return {word for word in _WORD.findall(text.casefold()) if word in ("yes", "no")}


def parse_yes_no(text: str) -> ParseResult[str | None]:
    """"yes", "no" or None for an answer to a yes/no question; never raises.

    The answer's first clause decides ("No, there is no invasion" is no; "Yes,
    no doubt" is yes).  When the first clause holds neither word the whole
    answer is searched.  Both words where the answer is given ("Yes/No") or
    neither word is None with a problem.
    """
    if (wrong := _not_text(text)) is not None:
        return ParseResult(None, [wrong])
    text = _YES_OR_NO_ECHO.sub("", text, count=1)
    first_clause = _CLAUSE_END.split(text.strip(), maxsplit=1)[0]
    for scope in (first_clause, text):
        words = _yes_no_words(scope)
        if len(words) == 1:
            return ParseResult(words.pop(), [])
        if len(words) == 2:
            return ParseResult(None, [f"ambiguous: both yes and no in {_snippet(scope)}"])
    return ParseResult(None, [f"no yes/no answer found in {_snippet(text)}"])


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_PATTERNS = (
    re.compile(r"^\s*[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:)]?\s*$"),  # "B", "b.", "(B)"
    re.compile(r"^\s*[(\[]?([A-Z])(?:[)\]]|[.:])"),  # "B. text", "(B) text", "B: text"
    # "Answer: B"; "Answer: A tumour ..." reads the article, not option A
    re.compile(r"(?i:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*[(\[]?([B-HJ-Z]|[AI](?!\s+[a-z]))[)\]]?(?![\w'’])"),
    re.compile(r"(?i:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*[(\[]?([a-z])[)\]]?\s*\.?\s*$"),  # "answer: b"
    re.compile(r"[(\[]([A-Z])[)\]]"),  # "... (B) ..."
)
# An answer made of letters only: "A or B", "A, C", "B/D".
_LETTERS_ONLY = re.compile(r"\s*[(\[]?[A-Z][)\].]?(?:\s*(?:,|/|&|\bor\b|\band\b)\s*[(\[]?[A-Z][)\].]?)+\s*")
_LETTER_TOKEN = re.compile(r"(?<![A-Za-z])[A-Z](?![A-Za-z])")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse spaces: for comparing open answers."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("'", "").replace("’", "")
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in text)
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def _contains_phrase(haystack: str, phrase: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", haystack) is not None


def _letter_list(indices: Iterable[int]) -> str:
    letters = [_LETTERS[i] for i in sorted(indices)]
    return letters[0] if len(letters) == 1 else ", ".join(letters[:-1]) + " and " + letters[-1]


def match_option(answer: str, options: Sequence[str]) -> OptionMatch:
    """Which of the lettered options (A, B, ...) an answer to a closed-ended question names.

    Accepted: a letter ("B", "B.", "(B)", "Answer: B", "B. option text") and/or
    an option's text anywhere in the answer (compared after
    :func:`normalize_answer`, as whole words; when one matching option's text
    is part of another matching option's text, the longer one is meant).  An
    answer naming two different options, or none, gives index None and a
    problem ("ambiguous: matches A and C" / "no option recognised").
    """
    if (wrong := _not_text(answer)) is not None:
        return OptionMatch(None, wrong)
    if not 1 <= len(options) <= len(_LETTERS):
        raise ValueError(f"{len(options)} options given; a closed question has 1 to {len(_LETTERS)}")
    chosen: set[int] = set()
    out_of_range: set[str] = set()
    letters: list[str] = []
    if _LETTERS_ONLY.fullmatch(answer):
        letters.extend(_LETTER_TOKEN.findall(answer))
    for pattern in _LETTER_PATTERNS:
        letters.extend(found.group(1).upper() for found in pattern.finditer(answer))
    for letter in letters:
        index = _LETTERS.index(letter)
        if index < len(options):
            chosen.add(index)
        else:
            out_of_range.add(letter)
    normalized = normalize_answer(answer)
    option_texts = [normalize_answer(option) for option in options]
    exact = [i for i, text in enumerate(option_texts) if text and text == normalized]
    # ("A. text" normalises to "text": the letter A reads as an article, so it must agree here)
    if len(exact) == 1 and chosen <= {exact[0]}:
        return OptionMatch(exact[0])
    by_text = {i for i, text in enumerate(option_texts) if text and _contains_phrase(normalized, text)}
    by_text = {
        i for i in by_text
        if not any(j != i and option_texts[j] != option_texts[i] and _contains_phrase(option_texts[j], option_texts[i])
                   for j in by_text)
    }
    chosen |= by_text
    if len(chosen) == 1:
        return OptionMatch(chosen.pop())
    if len(chosen) > 1:
        return OptionMatch(None, f"ambiguous: matches {_letter_list(chosen)}")
    if out_of_range:
        return OptionMatch(None, f"letter {', '.join(sorted(out_of_range))} is not one of the {len(options)} options")
    return OptionMatch(None, "no option recognised")
