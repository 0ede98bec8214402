"""Label-conditioned bootstrap rationales: CoT records built without an LLM.

Where no teacher writes usable reasoning (the embedded 135M model's CoT rarely parses), this
builds a record per labelled pair from the human label (the record's grade) and two kinds of
evidence:
- attributes (``attributes=True``): the colour, material, size and quantity values that
  attributes.py finds in the query, judged against the item's values of the same dimension —
  match (same value; spans on both sides), mismatch (a different value; the item's conflicting
  value is evidence, so the words that make a pair worse get target mass) or not stated (query
  span only). These are real ``cot.DIMENSIONS``, so the bi student's verdict heads train on them.
- exclusions (also ``attributes=True``): a query term negated by "without", "no", "not" or "non"
  ("bags without handles") is judged against the item: mismatch where the item mentions it (not
  itself negated), match where the item negates it too, not stated otherwise. Spans: the negated
  phrase in the query, the term in the item. The dimension ``exclusion`` is not one of
  ``cot.DIMENSIONS`` (the verdict heads ignore it); its spans only steer attention and pooling.
- lexical overlap: every other query word that occurs as a whole word in the rendered item text,
  as spans on both sides, under one dimension named ``lexical_overlap`` (not one of
  ``cot.DIMENSIONS``: nothing here knows which dimension such a word belongs to, so the verdict
  heads ignore it). The grade distribution is left empty
(``distribution_source="none"``): the label is already the hard target, and a one-hot copy of it
must not pose as a teacher distribution. These records are a *heuristic*, not a teacher: they test
whether the CoT-reasoning losses can move a student when evidence exists, not what an LLM knows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from core.cot import EXCLUSION_DIMENSION, OVERLAP_DIMENSION, CoTRecord, DimensionJudgement, EvidenceSpan
from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE, TextTemplate
from distill.data.schema import LabelledPair
from teacher.attributes import ATTRIBUTE_PATTERNS, NEGATION_WORDS, AttributeValue, find_values

# (teacher id, prompt version) by whether attribute dimensions are judged; v1 is overlap only.
BOOTSTRAP_VERSIONS = {
    False: ("bootstrap:label+lexical-overlap", "bootstrap-v1"),
    True: ("bootstrap:label+attributes+overlap", "bootstrap-v2"),
}
MAX_ITEM_VALUES = 3  # conflicting item values cited per dimension

_WORD = re.compile(r"[0-9a-z]+(?:['.-][0-9a-z]+)*", re.IGNORECASE)
# Words too common to be evidence of anything.
_STOPWORDS = frozenset("a an and are as at be by for from in into is it of on or the to with without".split())
_NEGATION = re.compile(
    rf"(?<![0-9a-z])(?:{'|'.join(NEGATION_WORDS)})[ -]+(?:any |a |an |the )?([0-9a-z]+)", re.IGNORECASE
)
_NEGATED_BEFORE = re.compile(r"(?:without|no|non|free of)[ -]+(?:\S+ )?$", re.IGNORECASE)
_NEGATED_AFTER = re.compile(r"^[ -]*free(?![0-9a-z])", re.IGNORECASE)


def overlap_spans(query: str, item_text: str, skip: list[tuple[int, int]] = ()) -> list[EvidenceSpan]:
    """Query words (≥ 2 chars, not stopwords) found as whole words in the item, as verified spans.

    Each such word yields one query span (its first occurrence in the query) and one item span
    (its first whole-word, case-insensitive occurrence in the item). Query words inside a ``skip``
    range (already cited by an attribute dimension) are left out."""
    spans: list[EvidenceSpan] = []
    seen: set[str] = set()
    for match in _WORD.finditer(query):
        word = match.group(0)
        key = word.lower()
        if len(key) < 2 or key in _STOPWORDS or key in seen:
            continue
        if any(start < match.end() and match.start() < end for start, end in skip):
            continue
        found = re.search(rf"(?<![0-9a-z]){re.escape(key)}(?![0-9a-z])", item_text, re.IGNORECASE)
        if found is None:
            continue
        seen.add(key)
        spans.append(
            EvidenceSpan(source="query", text=word, start=match.start(), end=match.end(), verified=True)
        )
        spans.append(
            EvidenceSpan(
                source="item", text=found.group(0), start=found.start(), end=found.end(), verified=True
            )
        )
    return spans


def _span(source: str, value: AttributeValue) -> EvidenceSpan:
    return EvidenceSpan(source=source, text=value.text, start=value.start, end=value.end, verified=True)


def attribute_judgements(query: str, item_text: str) -> list[DimensionJudgement]:
    """A judgement for each attribute dimension the query states, in ``ATTRIBUTE_PATTERNS`` order."""
    judgements = []
    for dimension in ATTRIBUTE_PATTERNS:
        wanted = find_values(dimension, query)
        if not wanted:
            continue
        offered = find_values(dimension, item_text)
        wanted_keys = {v.key for v in wanted}
        same = [v for v in offered if v.key in wanted_keys]
        if same:
            verdict, cited_query = "match", [v for v in wanted if v.key in {s.key for s in same}]
            cited_item = same[:MAX_ITEM_VALUES]
        else:
            verdict = "mismatch" if offered else "not_stated"
            cited_query, cited_item = wanted, offered[:MAX_ITEM_VALUES]
        judgements.append(
            DimensionJudgement(
                dimension=dimension,
                query_value=", ".join(v.text for v in wanted),
                item_value=", ".join(v.text for v in offered) or None,
                verdict=verdict,
                evidence=[_span("query", v) for v in cited_query] + [_span("item", v) for v in cited_item],
            )
        )
    return judgements


def _stem(word: str) -> str:
    return word.lower()[:-1] if len(word) > 3 and word.lower().endswith("s") else word.lower()


def exclusion_judgements(query: str, item_text: str) -> list[DimensionJudgement]:
    """One ``exclusion`` judgement per negated query word ("without handles": the word is "handles").

    The word is looked up in the item as a whole word, plural or singular; an occurrence right
    after "without"/"no"/"non" or before "free" counts as the item excluding it too."""
    judgements = []
    for match in _NEGATION.finditer(query):
        if match.group(1).lower() in _STOPWORDS:
            continue
        stem = _stem(match.group(1))
        pattern = rf"(?<![0-9a-z]){re.escape(stem)}(?:e?s)?(?![0-9a-z])"
        found = list(re.finditer(pattern, item_text, re.IGNORECASE))
        negated = [
            m
            for m in found
            if _NEGATED_BEFORE.search(item_text[: m.start()]) or _NEGATED_AFTER.match(item_text[m.end() :])
        ]
        plain = [m for m in found if m not in negated]
        verdict, cited = (
            ("mismatch", plain) if plain else ("match", negated) if negated else ("not_stated", [])
        )
        evidence = [
            EvidenceSpan(
                source="query", text=match.group(0), start=match.start(), end=match.end(), verified=True
            )
        ]
        evidence += [
            EvidenceSpan(source="item", text=m.group(0), start=m.start(), end=m.end(), verified=True)
            for m in cited[:MAX_ITEM_VALUES]
        ]
        judgements.append(
            DimensionJudgement(
                dimension=EXCLUSION_DIMENSION,
                query_value=match.group(0),
                item_value=cited[0].group(0) if cited else None,
                verdict=verdict,
                evidence=evidence,
            )
        )
    return judgements


def rule_judgements(query: str, item_text: str, *, attributes: bool = True) -> list[DimensionJudgement]:
    """The rules' judgements of a pair, label-free: attribute and exclusion dimensions (when
    ``attributes``), then ``lexical_overlap`` for the query words they did not cite (always last)."""
    judgements = (
        attribute_judgements(query, item_text) + exclusion_judgements(query, item_text) if attributes else []
    )
    cited = [(s.start, s.end) for j in judgements for s in j.evidence if s.source == "query"]
    spans = overlap_spans(query, item_text, skip=cited)
    judgements.append(
        DimensionJudgement(
            dimension=OVERLAP_DIMENSION, verdict="match" if spans else "not_stated", evidence=spans
        )
    )
    return judgements


def rule_rationale(judgements: list[DimensionJudgement]) -> str:
    """The judgements of ``rule_judgements`` in words (the overlap one, last, as a word count)."""
    *dimensions, overlap = judgements
    parts = [
        f"{j.dimension} {j.verdict.replace('_', ' ')} (query {j.query_value!r}, item {j.item_value!r})"
        for j in dimensions
    ]
    parts.append(
        f"{len(overlap.evidence) // 2} {'other ' if dimensions else ''}query word(s) occur in the item"
    )
    return "; ".join(parts)


def bootstrap_record(
    pair: LabelledPair, template: TextTemplate = DEFAULT_TEMPLATE, *, attributes: bool = False
) -> CoTRecord:
    """One record for a labelled pair; ``parse_ok=False`` with a reason when the pair has no label."""
    query = template.query_text(pair.query)
    item_text = template.item_text(pair.item.as_mapping())
    judgements = rule_judgements(query, item_text, attributes=attributes)
    errors = [] if pair.label is not None else ["pair has no human label: nothing to condition on"]
    teacher_id, prompt_version = BOOTSTRAP_VERSIONS[attributes]
    return CoTRecord(
        teacher_id=teacher_id,
        prompt_version=prompt_version,
        pair_id=pair.pair_id,
        query_id=pair.query_id,
        query=query,
        item_id=pair.item.id,
        item_text=item_text,
        dimensions=judgements,
        grade=pair.label,
        grade_levels=list(GRADE_LEVELS),
        distribution_source="none",
        rationale=rule_rationale(judgements) + "; grade copied from the human label.",
        label=pair.label,
        parse_ok=not errors,
        parse_errors=errors,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
