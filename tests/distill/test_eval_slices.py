"""Slices: long-tail (mean IDF of the query's words over the catalogue, top quartile) and negation."""

from __future__ import annotations

import math

import pytest

from core.item import Item
from distill.data.schema import LabelledPair
from distill.eval.slices import long_tail_queries, negation_queries, query_rarity


def _pair(qid: str, query: str, item_id: str, title: str) -> LabelledPair:
    return LabelledPair(query_id=qid, query=query, item=Item(id=item_id, title=title), label="Exact")


def test_rarity_by_hand_and_top_quartile():
    pairs = [
        _pair("q1", "sofa", "i1", "Red sofa"),
        _pair("q1", "sofa", "i2", "Blue sofa"),
        _pair("q2", "red sofa", "i3", "Lamp"),
        _pair("q3", "lamp", "i3", "Lamp"),
        _pair("q4", "zebra", "i1", "Red sofa"),  # a word no item has
    ]
    rarity = query_rarity(pairs)
    n = 3  # distinct items i1, i2, i3
    idf = {
        w: math.log((n + 1) / (df + 1)) + 1 for w, df in {"sofa": 2, "red": 1, "lamp": 1, "zebra": 0}.items()
    }
    assert rarity["q1"] == pytest.approx(idf["sofa"])
    assert rarity["q2"] == pytest.approx((idf["red"] + idf["sofa"]) / 2)
    assert rarity["q4"] == pytest.approx(idf["zebra"])
    assert long_tail_queries(pairs) == {"q4"}


def test_negation_slice_is_queries_with_a_negating_word():
    pairs = [
        _pair("q1", "paper bags without handles", "i1", "Paper bags"),
        _pair("q2", "Not self-seal envelopes", "i2", "Envelopes"),
        _pair("q3", "nothing bundt cakes", "i3", "Cake"),  # "not" only inside a word
        _pair("q4", "non-stick pan", "i4", "Pan"),
        _pair("q5", "red sofa", "i5", "Sofa"),
    ]
    assert negation_queries(pairs) == {"q1", "q2", "q4"}
