"""The project's grade scale: every dataset's human labels are mapped onto it (distill/data/labels.py),
every teacher record and every bundle with a grade head speaks it."""

from __future__ import annotations

GRADE_LEVELS: tuple[str, ...] = ("Irrelevant", "Partial", "Exact")
# The score of a grade distribution is the expected level value (core/score_mapping.py).
LEVEL_VALUES: tuple[float, ...] = (0.0, 0.5, 1.0)
# Graded gains for NDCG (linear in the grade index).
GRADE_GAINS: dict[str, float] = {"Irrelevant": 0.0, "Partial": 1.0, "Exact": 2.0}
