"""Hypothesis property tests: the CoT parser never raises and keeps its promises on any output; the
JSONL loader accounts for every line (loaded or skipped with its line number); the batcher returns
each request its own rows under any interleaving of admits, cancellations and batch sizes."""

from __future__ import annotations

import asyncio
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.cot import DIMENSIONS
from core.tokenization import Encoded
from distill.data.formats.generic import load_jsonl
from service.batcher import Batcher, BatchPolicy
from service.metrics import Metrics
from teacher.parser import parse_output

LEVELS = ("Irrelevant", "Partial", "Exact")
QUERY = "red leather sofa"
ITEM = "Three-seat red leather sofa | brand: Acme | color: red"

# --- the CoT parser ---

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_dimension = st.fixed_dictionaries(
    {},
    optional={
        "query_value": _json_values,
        "item_value": _json_values,
        "verdict": st.sampled_from(["match", "partial", "mismatch", "not stated", "yes", ""]) | _json_values,
        "evidence": st.lists(
            st.sampled_from(["red", "leather sofa", "Acme", "blue velvet", "RED  Leather"])
            | st.text(max_size=15),
            max_size=3,
        )
        | _json_values,
    },
)
_cot = st.fixed_dictionaries(
    {},
    optional={
        "dimensions": st.dictionaries(
            st.sampled_from([*DIMENSIONS, "colour", "flavour", ""]), _dimension, max_size=5
        )
        | st.lists(st.fixed_dictionaries({"name": st.sampled_from([*DIMENSIONS, "xyz"])}), max_size=3)
        | _json_values,
        "rationale": _json_values,
        "grade": st.sampled_from(
            [*LEVELS, "exact match", "partially relevant", "Perfect", "", "Exact/Partial"]
        )
        | _json_values,
    },
)


def _render(data: dict, cut: int | None) -> str:
    text = json.dumps(data)
    return text[:cut] if cut is not None else text  # a cut models output truncated at max_tokens


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_cot, cut=st.none() | st.integers(0, 400), noise=st.sampled_from(["", "Sure! ", "```json\n"]))
def test_parser_never_raises_and_keeps_its_promises(data, cut, noise):
    parsed = parse_output(noise + _render(data, cut), QUERY, ITEM, LEVELS)
    assert parsed.grade is None or parsed.grade in LEVELS
    assert parsed.ok == (not parsed.errors)
    if parsed.grade is None:
        assert parsed.errors  # a missing or unknown grade is always reported, never silent
    names = [d.dimension for d in parsed.dimensions]
    assert len(names) == len(set(names))  # a repeated dimension is reported, not kept twice
    for judgement in parsed.dimensions:
        for span in judgement.evidence:
            if span.verified:  # a verified span is a verbatim substring at its offsets
                source = QUERY if span.source == "query" else ITEM
                assert source[span.start : span.end] == span.text


@settings(max_examples=300, deadline=None)
@given(raw=st.text(max_size=300))
def test_parser_survives_arbitrary_text(raw):
    parsed = parse_output(raw, QUERY, ITEM, LEVELS)
    assert parsed.grade is None or parsed.grade in LEVELS
    assert parsed.grade is not None or parsed.errors


# --- the JSONL loader ---

_row = st.one_of(
    st.fixed_dictionaries(
        {"query": st.text(max_size=20), "item_id": st.text(max_size=8)},
        optional={
            "title": st.text(max_size=20),
            "label": st.sampled_from(
                ["Exact", "Partial", "Irrelevant", "E", "S", "C", "I", 0, 1, 2, 7, "bogus", None]
            ),
            "brand": st.text(max_size=8),
            "attributes": _json_values,
        },
    ),
    _json_values,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=12), garbage=st.lists(st.integers(0, 11), max_size=3))
def test_jsonl_loader_accounts_for_every_line(tmp_path, rows, garbage):
    lines = [json.dumps(r) for r in rows]
    for i in garbage:  # some lines are not JSON at all
        if i < len(lines):
            lines[i] = lines[i][: len(lines[i]) // 2] + "{"
    if isinstance(rows[0], dict) and {"query", "item_id"} <= set(rows[0]) and 0 not in garbage:
        path = tmp_path / "pairs.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = load_jsonl(path)
        report = result.report
        assert report.rows_read == len(lines)
        assert report.pairs + report.skipped_total == report.rows_read  # nothing silently dropped
        for examples in report.examples.values():
            for example in examples:
                assert example.startswith(f"{path}:")  # every skip names its file and line
        for pair in result.pairs:
            assert pair.query.strip() and pair.item.id.strip()
            assert pair.label is None or pair.label in LEVELS


# --- the batcher ---


def _row_sums(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([arrays["input_ids"].sum(1), arrays["attention_mask"].sum(1)], axis=1).astype(np.float32)


def _encoded(first: int, n: int) -> Encoded:
    ids = [first] + [3] * (n - 1)
    return Encoded(ids=ids, type_ids=[0] * n, offsets=[(0, 0)] * n, sequence_ids=[0] * n)


_request = st.tuples(
    st.lists(
        st.tuples(st.integers(1, 999), st.integers(1, 40)), min_size=1, max_size=12
    ),  # (first id, length)
    st.floats(0, 0.01),  # arrival delay (s)
    st.booleans(),  # cancelled before its result
)


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(_request, min_size=1, max_size=10),
    max_pairs=st.integers(1, 16),
    max_tokens=st.integers(40, 400),
    max_wait_ms=st.floats(0, 3),
)
def test_batcher_returns_each_request_its_own_rows_under_any_interleaving(
    requests, max_pairs, max_tokens, max_wait_ms
):
    async def scenario() -> None:
        batcher = Batcher(
            _row_sums,
            BatchPolicy(
                max_pairs=max_pairs, max_tokens=max_tokens, max_wait_s=max_wait_ms / 1000, capacity=10_000
            ),
            Metrics(),
        )
        batcher.start()

        async def one(inputs, delay, cancel):
            await asyncio.sleep(delay)
            encoded = [_encoded(first, n) for first, n in inputs]
            ticket = batcher.admit(len(encoded), 10_000)
            batcher.enqueue(ticket, encoded)
            if cancel:
                batcher.release(ticket, "disconnected")
                return
            out = await batcher.result(ticket)
            expected = np.array([[first + 3 * (n - 1), n] for first, n in inputs], dtype=np.float32)
            np.testing.assert_array_equal(out, expected)

        try:
            # A hang is a failure (hypothesis then shrinks it), not a stuck test run.
            await asyncio.wait_for(asyncio.gather(*(one(*r) for r in requests)), 20)
            assert batcher.admitted == 0  # every admitted input was finished or released
        finally:
            await batcher.stop()

    asyncio.run(scenario())
