"""Turns a teacher's raw output into the parts of a CoTRecord, never raising.

Small and large LLMs alike emit broken JSON, truncated objects, grades spelt their own way and
"evidence" that is not in the text. The parser:

* repairs JSON (``json_repair``); a truncated object keeps whatever parsed;
* normalises verdicts and grades where the reading is unambiguous ("exact match" → Exact),
  otherwise records an error;
* locates every evidence span in the query or item text (whitespace- and case-insensitive):
  found → verbatim text with offsets and ``verified=True``; not found → kept with
  ``verified=False`` (counted by annotation summaries, not an error).

Every problem is appended to ``errors``; ``ok`` is True only when there are none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import json_repair

from core.cot import BOOTSTRAP_DIMENSIONS, DIMENSIONS, DimensionJudgement, EvidenceSpan

_VERDICT_SYNONYMS: dict[str, str] = {
    "match": "match",
    "matches": "match",
    "matched": "match",
    "exact": "match",
    "exact match": "match",
    "same": "match",
    "yes": "match",
    "partial": "partial",
    "partially": "partial",
    "partial match": "partial",
    "partly": "partial",
    "similar": "partial",
    "mismatch": "mismatch",
    "mismatched": "mismatch",
    "no match": "mismatch",
    "different": "mismatch",
    "contradicts": "mismatch",
    "no": "mismatch",
    "not_stated": "not_stated",
    "not stated": "not_stated",
    "not-stated": "not_stated",
    "unknown": "not_stated",
    "n/a": "not_stated",
    "na": "not_stated",
    "none": "not_stated",
    "": "not_stated",
}

_DIMENSION_SYNONYMS: dict[str, str] = {
    "type": "product_type",
    "product": "product_type",
    "category": "product_type",
    "colour": "color",
    "brand_name": "brand",
    "model_number": "model",
    "dimensions": "size",
    "count": "quantity",
    "pack_size": "quantity",
    "usage": "use",
    "purpose": "use",
}


@dataclass
class ParsedOutput:
    dimensions: list[DimensionJudgement] = field(default_factory=list)
    grade: str | None = None
    rationale: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def unverified_evidence(self) -> int:
        return sum(1 for d in self.dimensions for e in d.evidence if not e.verified)


def normalise_grade(value: Any, levels: Sequence[str]) -> str | None:
    """The grade level ``value`` names, or None when it names none or several."""
    if not isinstance(value, str):
        return None
    text = value.strip().strip("\"'.").lower()
    for level in levels:
        if text == level.lower():
            return level
    words = re.findall(r"[a-z]+", text)
    hits = {
        level
        for level in levels
        for word in words
        # "exact match" → Exact, "partially relevant" → Partial; at least 4 letters to avoid noise.
        if len(word) >= 4 and (word == level.lower() or word.startswith(level.lower()))
    }
    return hits.pop() if len(hits) == 1 else None


def normalise_verdict(value: Any) -> str | None:
    if value is None:
        return "not_stated"
    if not isinstance(value, str):
        return None
    return _VERDICT_SYNONYMS.get(value.strip().lower().replace("-", " ").replace("_", " ")) or (
        _VERDICT_SYNONYMS.get(value.strip().lower())
    )


def normalise_dimension(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    key = re.sub(r"[\s\-]+", "_", value.strip().lower())
    # A model fine-tuned on bootstrap records (`relevance teacher sft-lora`) writes their dimensions.
    if key in DIMENSIONS or key in BOOTSTRAP_DIMENSIONS:
        return key
    return _DIMENSION_SYNONYMS.get(key)


def locate_span(span: str, text: str) -> tuple[int, int] | None:
    """Offsets of ``span`` in ``text``, matching case- and whitespace-insensitively."""
    words = span.split()
    if not words:
        return None
    start = text.find(span)
    if start >= 0:
        return start, start + len(span)
    pattern = r"\s+".join(re.escape(w) for w in words)
    match = re.search(pattern, text, flags=re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def _evidence(raw: Any, query_text: str, item_text: str, where: str, errors: list[str]) -> list[EvidenceSpan]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raw = [raw]
    spans: list[EvidenceSpan] = []
    for n, entry in enumerate(raw):
        source: str | None = None
        if isinstance(entry, str):
            text = entry
        elif isinstance(entry, dict) and isinstance(entry.get("text"), str):
            text = entry["text"]
            source = entry.get("source") if entry.get("source") in ("query", "item") else None
        else:
            errors.append(f"{where}.evidence[{n}]: expected a string or {{source, text}}, got {entry!r:.80}")
            continue
        if not text.strip():
            continue
        # Look where the teacher said first, then in the other text.
        order = ["query", "item"] if source != "item" else ["item", "query"]
        texts = {"query": query_text, "item": item_text}
        for candidate in order:
            found = locate_span(text, texts[candidate])
            if found:
                start, end = found
                spans.append(
                    EvidenceSpan(
                        source=candidate,
                        text=texts[candidate][start:end],
                        start=start,
                        end=end,
                        verified=True,
                    )
                )
                break
        else:
            spans.append(EvidenceSpan(source=source or "item", text=text, verified=False))
    return spans


def _dimension_entries(raw: Any) -> list[tuple[Any, Any]]:
    """(name, body) pairs from a list of objects or an object keyed by dimension name."""
    if isinstance(raw, dict):
        return list(raw.items())
    if isinstance(raw, list):
        return [(e.get("dimension") if isinstance(e, dict) else None, e) for e in raw]
    return []


def _load_json(raw_output: str, errors: list[str]) -> dict[str, Any] | None:
    text = raw_output.strip()
    # Models like to wrap JSON in markdown fences.
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    start = text.find("{")
    if start < 0:
        errors.append("no JSON object in the output")
        return None
    try:
        value = json.loads(text[start:])
    except json.JSONDecodeError:
        try:
            value = json_repair.loads(text[start:])
        except Exception as exc:  # json_repair is best effort; any failure is a parse error
            errors.append(f"JSON could not be repaired: {exc}")
            return None
    if not isinstance(value, dict):
        errors.append(f"expected a JSON object, got {type(value).__name__}")
        return None
    return value


def parse_output(raw_output: str, query_text: str, item_text: str, levels: Sequence[str]) -> ParsedOutput:
    """Parse a CoT (or score-mode) answer; see the module docstring for the rules."""
    result = ParsedOutput()
    data = _load_json(raw_output, result.errors)
    if data is None:
        return result

    seen: set[str] = set()
    for n, (name, body) in enumerate(_dimension_entries(data.get("dimensions"))):
        where = f"dimensions[{n}]"
        dimension = normalise_dimension(name)
        if dimension is None:
            result.errors.append(f"{where}: unknown dimension {name!r:.60}")
            continue
        if dimension in seen:
            result.errors.append(f"{where}: dimension {dimension!r} repeated")
            continue
        seen.add(dimension)
        body = body if isinstance(body, dict) else {}
        verdict = normalise_verdict(body.get("verdict"))
        if verdict is None:
            result.errors.append(f"{where}: unknown verdict {body.get('verdict')!r:.60}")
            verdict = "not_stated"
        result.dimensions.append(
            DimensionJudgement(
                dimension=dimension,
                query_value=_str_or_none(body.get("query_value")),
                item_value=_str_or_none(body.get("item_value")),
                verdict=verdict,  # type: ignore[arg-type]
                evidence=_evidence(body.get("evidence"), query_text, item_text, where, result.errors),
            )
        )

    result.rationale = _str_or_none(data.get("rationale"))
    if "grade" not in data:
        result.errors.append("no grade in the output (truncated or malformed)")
    else:
        result.grade = normalise_grade(data["grade"], levels)
        if result.grade is None:
            result.errors.append(
                f"unknown or ambiguous grade {data['grade']!r:.60} (levels: {', '.join(levels)})"
            )
    return result


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
