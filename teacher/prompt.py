"""ELLM-rele's prompt: the versioned instructions and the assistant prefills for both modes.

* ``cot`` mode: the teacher writes a JSON object — per-dimension query value, item value, verdict
  and verbatim evidence, then a one-sentence rationale, then the grade. The grade comes LAST so
  the verdict position is conditioned on the reasoning; the grade distribution is read from the
  next-token logits right after ``"grade": "`` (see ``GRADE_KEY_PREFIX``).
* ``score`` mode: no reasoning; the assistant turn is prefilled with ``{"grade": "`` so the
  prompt ends exactly at the verdict position (the fast path for annotation and ranking).

The item text is always ``core.text_template.DEFAULT_TEMPLATE.item_text(item)``, the same text
the students see, so evidence offsets refer to it. Bump ``PROMPT_VERSION`` on any change of the
wording: annotation caches are keyed by it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from core.cot import DIMENSIONS, VERDICTS

PROMPT_VERSION = "ellm-rele-v1"


class Mode(StrEnum):
    """How the teacher answers (the two modes above)."""

    cot = "cot"
    score = "score"


# The text right before the grade value: the verdict position is the next token.
GRADE_KEY = '"grade"'
GRADE_KEY_PREFIX = '"grade": "'
SCORE_PREFILL = "{" + GRADE_KEY_PREFIX
COT_PREFILL = '{"dimensions": ['

# What each default grade level means (ESCI: Exact = E; Partial = Substitute/Complement; Irrelevant = I).
GRADE_DESCRIPTIONS: dict[str, str] = {
    "Exact": "the item is what the query asks for and meets every attribute the query states",
    "Partial": "the item is related but not quite it: a substitute, an accessory or complement, "
    "or it misses or contradicts some attribute the query states",
    "Irrelevant": "the item is not what the query is looking for",
}

_EXAMPLE_QUERY = "red nike running shoes men"
_EXAMPLE_ITEM = "Nike Men's Revolution 6 Running Shoe | color: Black/White"
_EXAMPLE_ANSWER = {
    "dimensions": [
        {
            "dimension": "product_type",
            "query_value": "running shoes",
            "item_value": "Running Shoe",
            "verdict": "match",
            "evidence": [
                {"source": "query", "text": "running shoes"},
                {"source": "item", "text": "Running Shoe"},
            ],
        },
        {
            "dimension": "brand",
            "query_value": "nike",
            "item_value": "Nike",
            "verdict": "match",
            "evidence": [{"source": "query", "text": "nike"}, {"source": "item", "text": "Nike"}],
        },
        {
            "dimension": "color",
            "query_value": "red",
            "item_value": "Black/White",
            "verdict": "mismatch",
            "evidence": [{"source": "query", "text": "red"}, {"source": "item", "text": "Black/White"}],
        },
    ],
    "rationale": "A Nike men's running shoe as asked, but black instead of red.",
    "grade": "Partial",
}


def _levels_text(levels: Sequence[str]) -> str:
    lines = []
    for level in levels:
        meaning = GRADE_DESCRIPTIONS.get(level)
        lines.append(f"- {level}: {meaning}" if meaning else f"- {level}")
    return "\n".join(lines)


def system_prompt(mode: Mode, levels: Sequence[str]) -> str:
    grades = _levels_text(levels)
    if mode == "score":
        return (
            "You judge how relevant a product is to an e-commerce search query.\n"
            f"Grades:\n{grades}\n"
            'Answer with JSON only: {"grade": "<one of ' + ", ".join(levels) + '>"}'
        )
    return (
        "You judge how relevant a product is to an e-commerce search query.\n"
        f"Compare the query and the item on these dimensions: {', '.join(DIMENSIONS)}. "
        "List only the dimensions the query states. For each give the query's value, the item's value, "
        f"a verdict ({', '.join(VERDICTS)}) and evidence: short phrases copied exactly from the query "
        '(source "query") or the item (source "item").\n'
        "Then write a one-sentence rationale, and last the grade.\n"
        f"Grades:\n{grades}\n"
        "Answer with JSON only, keys in this order. Example:\n"
        f"Query: {_EXAMPLE_QUERY}\nItem: {_EXAMPLE_ITEM}\n"
        f"{json.dumps(_EXAMPLE_ANSWER, ensure_ascii=False)}"
    )


def user_prompt(query_text: str, item_text: str) -> str:
    return f"Query: {query_text}\nItem: {item_text}"


def build_messages(
    query_text: str, item_text: str, mode: Mode, levels: Sequence[str]
) -> list[dict[str, str]]:
    """Chat messages for one judgement (the backend applies the model's chat template)."""
    return [
        {"role": "system", "content": system_prompt(mode, levels)},
        {"role": "user", "content": user_prompt(query_text, item_text)},
    ]


def answer_schema(mode: Mode, levels: Sequence[str]) -> dict[str, Any]:
    """JSON Schema of the answer the prompt asks for (keys in the prompt's order, the grade last), for
    servers that constrain decoding to it: a request over the chat API cannot be prefilled, and a
    small model answers in prose unless held to the format. Strict-mode shape (every key required,
    no others) so that OpenAI's ``json_schema`` response format accepts it."""

    def closed(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    grade = {"type": "string", "enum": list(levels)}
    if mode == "score":
        return closed({"grade": grade})
    evidence = closed({"source": {"type": "string", "enum": ["query", "item"]}, "text": {"type": "string"}})
    dimension = closed(
        {
            "dimension": {"type": "string", "enum": list(DIMENSIONS)},
            "query_value": {"type": ["string", "null"]},
            "item_value": {"type": ["string", "null"]},
            "verdict": {"type": "string", "enum": list(VERDICTS)},
            "evidence": {"type": "array", "items": evidence},
        }
    )
    return closed(
        {"dimensions": {"type": "array", "items": dimension}, "rationale": {"type": "string"}, "grade": grade}
    )


def prefill(mode: Mode) -> str:
    """The start of the assistant turn that backends able to prefill write before generating."""
    return SCORE_PREFILL if mode == "score" else COT_PREFILL
