"""Transfer sets: unjudged top-BM25 items per query, written so every loader reads them back."""

from __future__ import annotations

from typer.testing import CliRunner

from core.item import Item
from distill.cli import app
from distill.data.loaders import load_pairs
from distill.data.schema import LabelledPair, distinct_items
from distill.data.transfer import transfer_pairs, write_generic_jsonl


def _pair(qid: str, query: str, item_id: str, title: str, label: str = "Exact") -> LabelledPair:
    return LabelledPair(
        query_id=qid, query=query, item=Item(id=item_id, title=title, brand="Acme"), label=label
    )


def test_each_query_gets_its_best_unjudged_items_and_no_judged_or_unmatched_one():
    pairs = [
        _pair("q1", "red sofa", "i1", "Red sofa"),
        _pair("q2", "desk lamp", "i2", "Desk lamp"),
        _pair("q2", "desk lamp", "i3", "Red desk", label="Partial"),
        _pair("q3", "garden hose", "i4", "Blue sofa bed"),
    ]
    got = {(p.query_id, p.item.id) for p in transfer_pairs(pairs, per_query=1)}
    # q1: i3 ("red") beats i4 ("sofa", longer text); q2: i1 and i4 share no word with it, so nothing;
    # q3: no item has "garden" or "hose".
    assert got == {("q1", "i3")}
    two = transfer_pairs(pairs, per_query=2)
    assert [(p.query_id, p.item.id) for p in two] == [("q1", "i3"), ("q1", "i4")]
    assert all(p.label is None for p in two)


def test_an_id_repeated_with_another_text_keeps_its_first_text_in_the_index_and_the_pairs():
    # Home Depot repeats some product ids with two titles: BM25 retrieves by the first, and the transfer
    # pair must carry the text that was retrieved, not the later one.
    pairs = [
        _pair("q1", "red sofa", "i1", "Red sofa"),
        _pair("q2", "desk lamp", "i2", "Desk lamp with red shade"),
        _pair("q3", "desk lamp", "i2", "Desk lamp, chrome"),
    ]
    assert [i.title for i in distinct_items(pairs).values()] == ["Red sofa", "Desk lamp with red shade"]
    (pair,) = transfer_pairs(pairs, per_query=1)
    assert (pair.query_id, pair.item.id, pair.item.title) == ("q1", "i2", "Desk lamp with red shade")


def test_written_file_reads_back_with_the_same_pair_ids_and_labels(tmp_path):
    pairs = [_pair("q1", "red sofa", "i1", "Red sofa"), _pair("q1", "red sofa", "i2", "Red lamp", label=None)]
    write_generic_jsonl(tmp_path / "t.jsonl", pairs)
    back = load_pairs(tmp_path / "t.jsonl").pairs
    assert [(p.pair_id, p.label, p.query_id) for p in back] == [
        (p.pair_id, p.label, p.query_id) for p in pairs
    ]


def test_cli_writes_labelled_and_unlabelled_bundled_pairs(tmp_path):
    out = tmp_path / "transfer.jsonl"
    result = CliRunner().invoke(
        app, ["data", "transfer-set", "-i", "bundled:dev", "-o", str(out), "--per-query", "2"]
    )
    assert result.exit_code == 0, result.output
    back = load_pairs(out).pairs
    unlabelled = [p for p in back if p.label is None]
    assert 0 < len(unlabelled) <= 2 * len({p.query_id for p in back})
    assert len(back) - len(unlabelled) == 223  # the dev split's labelled pairs, written too


def test_random_items_are_unjudged_distinct_from_the_bm25_ones_and_deterministic():
    pairs = [_pair("q1", "red sofa", "i1", "Red sofa")] + [
        _pair(f"q{n}", f"thing {n}", f"i{n}", f"Thing {n}") for n in range(2, 40)
    ]
    first = transfer_pairs(pairs, per_query=2, random_per_query=3, seed=7)
    assert first == transfer_pairs(pairs, per_query=2, random_per_query=3, seed=7)
    assert first != transfer_pairs(pairs, per_query=2, random_per_query=3, seed=8)
    judged = {(p.query_id, p.item.id) for p in pairs}
    by_query: dict[str, list[str]] = {}
    for p in first:
        assert (p.query_id, p.item.id) not in judged and p.label is None
        by_query.setdefault(p.query_id, []).append(p.item.id)
    assert all(len(ids) == len(set(ids)) for ids in by_query.values())
    assert sum(p.source == "transfer:random" for p in first) == 3 * 39
    # "thing N" queries share the word "thing" with every other item: 2 BM25 items each
    assert sum(p.source == "transfer:bm25" for p in first if p.query_id != "q1") == 2 * 38


def test_cli_skips_a_rerun_with_the_same_options_and_rebuilds_on_new_ones(tmp_path):
    out = tmp_path / "transfer.jsonl"
    args = ["data", "transfer-set", "-i", "bundled:dev", "-o", str(out), "--per-query", "1"]
    assert CliRunner().invoke(app, args).exit_code == 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already built with these options" in again.output
    more = CliRunner().invoke(app, [*args, "--random-per-query", "2"])
    assert more.exit_code == 0 and "transfer:random" in more.output
    assert not (tmp_path / "transfer.jsonl.partial").exists()


def test_holdout_splits_by_query_into_two_files_that_read_back(tmp_path):
    from distill.data.bundled import load_bundled

    fit, held = tmp_path / "fit.jsonl", tmp_path / "held.jsonl"
    args = ["data", "holdout", "-i", "bundled:train", "--fit", str(fit), "--holdout", str(held)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    a, b = load_pairs(fit).pairs, load_pairs(held).pairs
    everything = load_bundled("train")
    assert len(a) + len(b) == len(everything) and a and b
    assert {p.pair_id for p in a} | {p.pair_id for p in b} == {p.pair_id for p in everything}
    assert not {p.query_id for p in a} & {p.query_id for p in b}  # no query on both sides
    # Deterministic: the same fold again.
    assert CliRunner().invoke(app, args).exit_code == 0
    assert [p.pair_id for p in load_pairs(held).pairs] == [p.pair_id for p in b]

    bad = CliRunner().invoke(app, [*args, "--folds", "5", "--fold", "5"])
    assert bad.exit_code == 2 and "5 is not in [0, 5)" in bad.output
