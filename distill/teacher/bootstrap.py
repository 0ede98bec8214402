"""Label-conditioned bootstrap rationales: CoT records built without an LLM.

Where no teacher writes usable reasoning (the embedded 135M model's CoT rarely parses), this
builds a record per labelled pair from two things only: the human label (the record's grade) and
lexical overlap between query and item (the evidence). Every query word that occurs as a whole word
in the rendered item text becomes an evidence span on both sides, under one dimension named
``lexical_overlap`` (not one of ``cot.DIMENSIONS``: nothing here knows which dimension a word
belongs to, so the students' verdict heads ignore it). The grade distribution is left empty
(``distribution_source="none"``): the label is already the hard target, and a one-hot copy of it
must not pose as a teacher distribution. These records are a *heuristic*, not a teacher: they test
whether the CoT-reasoning losses can move a student when evidence exists, not what an LLM knows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from distill.data.schema import GRADE_LEVELS, LabelledPair
from distill.teacher.cot import CoTRecord, DimensionJudgement, EvidenceSpan
from service.text_template import DEFAULT_TEMPLATE, TextTemplate

BOOTSTRAP_TEACHER_ID = "bootstrap:label+lexical-overlap"
BOOTSTRAP_PROMPT_VERSION = "bootstrap-v1"
DIMENSION = "lexical_overlap"

_WORD = re.compile(r"[0-9a-z]+(?:['.-][0-9a-z]+)*", re.IGNORECASE)
# Words too common to be evidence of anything.
_STOPWORDS = frozenset(
    "a an and are as at be by for from in into is it of on or the to with without".split()
)


def overlap_spans(query: str, item_text: str) -> list[EvidenceSpan]:
    """Query words (≥ 2 chars, not stopwords) found as whole words in the item, as verified spans.

    Each such word yields one query span (its first occurrence in the query) and one item span
    (its first whole-word, case-insensitive occurrence in the item)."""
    spans: list[EvidenceSpan] = []
    seen: set[str] = set()
    for match in _WORD.finditer(query):
        word = match.group(0)
        key = word.lower()
        if len(key) < 2 or key in _STOPWORDS or key in seen:
            continue
        found = re.search(rf"(?<![0-9a-z]){re.escape(key)}(?![0-9a-z])", item_text, re.IGNORECASE)
        if found is None:
            continue
        seen.add(key)
        spans.append(EvidenceSpan(source="query", text=word, start=match.start(), end=match.end(), verified=True))
        spans.append(EvidenceSpan(source="item", text=found.group(0), start=found.start(), end=found.end(),
                                  verified=True))
    return spans


def bootstrap_record(pair: LabelledPair, template: TextTemplate = DEFAULT_TEMPLATE) -> CoTRecord:
    """One record for a labelled pair; ``parse_ok=False`` with a reason when the pair has no label."""
    query = template.query_text(pair.query)
    item_text = template.item_text(pair.item.as_mapping())
    spans = overlap_spans(query, item_text)
    errors = [] if pair.label is not None else ["pair has no human label: nothing to condition on"]
    return CoTRecord(
        teacher_id=BOOTSTRAP_TEACHER_ID,
        prompt_version=BOOTSTRAP_PROMPT_VERSION,
        pair_id=pair.pair_id,
        query_id=pair.query_id,
        query=query,
        item_id=pair.item.id,
        item_text=item_text,
        dimensions=[DimensionJudgement(dimension=DIMENSION, verdict="match" if spans else "not_stated",
                                       evidence=spans)],
        grade=pair.label,
        grade_levels=list(GRADE_LEVELS),
        distribution_source="none",
        rationale=f"{len(spans) // 2} query word(s) occur in the item; grade copied from the human label.",
        label=pair.label,
        parse_ok=not errors,
        parse_errors=errors,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
