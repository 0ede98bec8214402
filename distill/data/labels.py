"""How each dataset's own label becomes a grade on the project scale (GRADE_LEVELS).

Every mapping lives here so docs/DATA.md, the loaders and the reports agree:

* ESCI: E → Exact, S → Partial, C → Partial, I → Irrelevant (a substitute or a complement
  partially satisfies the query; the raw letter is kept in ``raw_label``).
* WANDS: its labels already are Exact / Partial / Irrelevant.
* Home Depot: ``relevance`` is the mean of ≥3 raters on 1–3; rounded to the nearest grade,
  halves up: ≥ 2.5 → Exact, ≥ 1.5 → Partial, else Irrelevant.
* CrowdFlower: ``median_relevance`` 4 → Exact, 3 or 2 → Partial, 1 → Irrelevant
  (raters' scale: 4 perfect, 3 good, 2 fair, 1 irrelevant).
* Generic files: a grade name (any case), an ESCI letter or name, or an integer grade index
  0 / 1 / 2 (= Irrelevant / Partial / Exact).
"""

from __future__ import annotations

from core.grades import GRADE_LEVELS

ESCI_LABELS: dict[str, str] = {
    "E": "Exact",
    "S": "Partial",
    "C": "Partial",
    "I": "Irrelevant",
    "EXACT": "Exact",
    "SUBSTITUTE": "Partial",
    "COMPLEMENT": "Partial",
    "IRRELEVANT": "Irrelevant",
}

HOME_DEPOT_EXACT_MIN = 2.5
HOME_DEPOT_PARTIAL_MIN = 1.5

CROWDFLOWER_LABELS: dict[int, str] = {4: "Exact", 3: "Partial", 2: "Partial", 1: "Irrelevant"}

_GRADE_BY_NAME = {g.lower(): g for g in GRADE_LEVELS}


class LabelError(ValueError):
    """A label value that the dataset's mapping does not accept."""


def esci_grade(value: str) -> str:
    key = value.strip().upper()
    if key not in ESCI_LABELS:
        raise LabelError(
            f"esci_label {value!r} is not one of E, S, C, I (or Exact, Substitute, Complement, Irrelevant)"
        )
    return ESCI_LABELS[key]


def wands_grade(value: str) -> str:
    grade = _GRADE_BY_NAME.get(value.strip().lower())
    if grade is None:
        raise LabelError(f"label {value!r} is not one of {', '.join(GRADE_LEVELS)}")
    return grade


def home_depot_grade(value: str) -> tuple[str, float]:
    try:
        mean = float(value)
    except ValueError:
        raise LabelError(f"relevance {value!r} is not a number") from None
    if not 1.0 <= mean <= 3.0:
        raise LabelError(f"relevance {value!r} is outside 1–3")
    if mean >= HOME_DEPOT_EXACT_MIN:
        return "Exact", mean
    if mean >= HOME_DEPOT_PARTIAL_MIN:
        return "Partial", mean
    return "Irrelevant", mean


def crowdflower_grade(value: str) -> tuple[str, int]:
    try:
        median = int(value.strip())
    except ValueError:
        raise LabelError(f"median_relevance {value!r} is not an integer 1–4") from None
    if median not in CROWDFLOWER_LABELS:
        raise LabelError(f"median_relevance {value!r} is not an integer 1–4")
    return CROWDFLOWER_LABELS[median], median


def generic_grade(value: object) -> str | None:
    """Grade of a generic file's label cell; None for an empty cell (an unlabelled pair)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise LabelError(f"label {value!r} is not a grade")
    if isinstance(value, int | float):
        if float(value).is_integer() and 0 <= int(value) < len(GRADE_LEVELS):
            return GRADE_LEVELS[int(value)]
        raise LabelError(f"label {value!r} is not a grade index 0–{len(GRADE_LEVELS) - 1}")
    text = str(value).strip()
    if not text:
        return None
    if text.lower() in _GRADE_BY_NAME:
        return _GRADE_BY_NAME[text.lower()]
    if text.upper() in ESCI_LABELS:
        return ESCI_LABELS[text.upper()]
    if text.isdigit():
        return generic_grade(int(text))
    raise LabelError(
        f"label {text!r} is not a grade ({', '.join(GRADE_LEVELS)}), an ESCI label (E/S/C/I) or an index 0–2"
    )
