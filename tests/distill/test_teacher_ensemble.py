"""Teacher rung (c), the ensemble head (distill/teacher/ensemble.py): its BM25, features and head."""

from __future__ import annotations

import numpy as np
import pytest

from core.grades import GRADE_LEVELS
from core.text_template import DEFAULT_TEMPLATE
from distill.baselines.bm25 import BM25Scorer
from distill.data.bundled import load_bundled
from distill.teacher.ensemble import (
    FEATURES,
    EnsembleError,
    FrozenBM25,
    fit_head,
    head_probabilities,
    pair_features,
    read_ensemble,
)


def test_frozen_bm25_scores_as_the_bm25_baseline_does_on_its_catalogue():
    pairs = load_bundled("train")[:200]
    texts: dict[str, str] = {}  # the baseline's catalogue: an item id's first text
    for p in pairs:
        texts.setdefault(p.item.id, DEFAULT_TEMPLATE.item_text(p.item.as_mapping()))
    frozen = FrozenBM25.from_texts(list(texts.values()))
    expected = BM25Scorer(pairs).score(pairs)
    got = [frozen.score(DEFAULT_TEMPLATE.query_text(p.query), texts[p.item.id]) for p in pairs]
    assert np.allclose(got, expected, rtol=1e-5, atol=1e-6) and max(got) > 0


def test_pair_features_follow_the_feature_list():
    bm25 = FrozenBM25({"drill": 1, "cordless": 3}, documents=10, mean_length=5.0)
    x = pair_features(
        {"Irrelevant": 0.1, "Partial": 0.2, "Exact": 0.7}, 0.8, bm25, "cordless drill", "Cordless drill 18V"
    )
    named = dict(zip(FEATURES, x, strict=True))
    assert named["cross_logp_Exact"] == pytest.approx(np.log(0.7))
    assert named["bi_score"] == 0.8
    assert named["query_words_in_item"] == 1.0 and named["bm25_log1p"] > 0


def test_fit_head_learns_a_separable_grade_and_ignores_a_constant_feature():
    rng = np.random.default_rng(0)
    labels = [GRADE_LEVELS[i % 3] for i in range(300)]
    signal = np.array([GRADE_LEVELS.index(label) for label in labels], dtype=float)
    x = np.column_stack([signal + rng.normal(0, 0.1, 300), np.ones(300), rng.normal(0, 1, 300)])
    head = fit_head(x, labels)
    probs = head_probabilities(head, x)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == signal).mean() > 0.95
    assert head["scale"][1] == 1.0  # constant: not divided by a zero spread
    assert head["train_loss"] < 0.5 * np.log(3)  # the fitted loss, well below the uniform start


def test_read_ensemble_names_a_missing_or_stale_folder(tmp_path):
    with pytest.raises(EnsembleError, match="not an ensemble folder"):
        read_ensemble(tmp_path)
    (tmp_path / "ensemble.json").write_text('{"features": ["old"], "grade_levels": []}')
    with pytest.raises(EnsembleError, match="refit it"):
        read_ensemble(tmp_path)
