"""Dataset names and the split by query (core/datasets.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.datasets import DatasetError, fold_of, parse_dataset, split_of, unit_hash


@pytest.mark.parametrize(
    ("spec", "name", "path", "split"),
    [
        ("bundled:dev", "bundled", None, "dev"),
        ("home-depot:train", "home-depot", None, "train"),
        ("crowdflower", "crowdflower", None, "all"),
        ("data/pairs.csv:dev", None, "data/pairs.csv", "dev"),
        ("C:/data/pairs.csv", None, "C:/data/pairs.csv", "all"),
    ],
)
def test_one_grammar_of_dataset_specs(spec, name, path, split):
    parsed = parse_dataset(spec)
    assert (parsed.name, parsed.path, parsed.split) == (name, Path(path) if path else None, split)


def test_a_named_dataset_with_an_unknown_split_is_refused():
    with pytest.raises(DatasetError, match="split must be one of train, dev, all"):
        parse_dataset("home-depot:test")


def test_the_split_depends_only_on_the_query_id_and_is_about_a_fifth_dev():
    ids = [f"q{i}" for i in range(4000)]
    sides = [split_of(q) for q in ids]
    assert sides == [split_of(q) for q in reversed(ids)][::-1]
    assert 0.17 < sides.count("dev") / len(ids) < 0.23


def test_folds_are_salted_apart_from_the_split_and_cover_every_fold():
    folds = [fold_of(f"q{i}", 5, salt="cv") for i in range(1000)]
    assert set(folds) == set(range(5))
    assert 0.0 <= unit_hash("anything") < 1.0 and unit_hash("a") != unit_hash("b")
