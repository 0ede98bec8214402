"""Verdict-row SFT: the fit learns a separable signal, and CV prefers regularisation on noise."""

from __future__ import annotations

import numpy as np
import pytest

from distill.teacher.sft import SFTConfig, choose_l2, fit_rows

# Starts servers, trains or exports models: not part of make test-fast.
pytestmark = pytest.mark.slow


def _data(
    signal: float, n: int = 240, dim: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, dim)) * signal
    states = centres[labels] + rng.normal(size=(n, dim))
    return states, labels, [f"q{i // 2}" for i in range(n)]


def test_fit_rows_learns_a_separable_signal() -> None:
    states, labels, _ = _data(signal=3.0)
    rows, losses = fit_rows(states, labels, np.zeros((3, states.shape[1])), l2=1e-3, max_iter=100, seed=0)
    assert abs(losses["train_ce_before"] - np.log(3)) < 1e-3  # zero rows: uniform
    assert losses["train_ce_after"] < 0.3
    assert ((states @ rows.T).argmax(axis=1) == labels).mean() > 0.9


def test_cv_picks_strong_regularisation_on_pure_noise() -> None:
    states, labels, groups = _data(signal=0.0)
    l2, cv, oof = choose_l2(states, labels, groups, np.zeros((3, states.shape[1])), SFTConfig(max_iter=50))
    assert l2 >= 10.0, cv  # nothing to learn: the uniform anchor wins
    assert oof.shape == (len(labels), 3) and np.allclose(oof.sum(axis=1), 1.0)
    assert cv[f"{l2:g}"] <= np.log(3) + 0.01


def test_an_interrupted_run_keeps_the_states_it_read_and_the_next_run_resumes(tmp_path, monkeypatch) -> None:
    """Real SmolLM2 states; the 4th read is interrupted (as by Ctrl-C), then a rerun reads only the rest."""
    import pytest

    from distill.data.bundled import load_bundled
    from distill.teacher import sft

    pairs = load_bundled("train")[:8]
    real_call = sft.VerdictFeatures.__call__
    calls: list[str] = []

    def interrupted_at_4th(self, prompt_text):
        calls.append(prompt_text)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_call(self, prompt_text)

    monkeypatch.setattr(sft.VerdictFeatures, "__call__", interrupted_at_4th)
    monkeypatch.setattr(sft, "SAVE_STATES_EVERY", 2)
    config = SFTConfig(max_iter=5, threads=1)
    with pytest.raises(KeyboardInterrupt):
        sft.run_sft(pairs, tmp_path, config, progress=False)
    saved = np.load(tmp_path / sft.STATES_FILE)
    assert len(saved["pair_ids"]) == 3 and saved["states"].shape[0] == 3
    assert not list(tmp_path.glob("*.partial*"))

    calls.clear()
    monkeypatch.setattr(
        sft.VerdictFeatures, "__call__", lambda self, text: calls.append(text) or real_call(self, text)
    )
    sft.run_sft(pairs, tmp_path, config, progress=False)
    assert len(calls) == len(pairs) - 3  # the three saved pairs are not read again
    assert len(np.load(tmp_path / sft.STATES_FILE)["pair_ids"]) == len(pairs)


def test_cot_features_count_rule_verdicts_and_never_read_the_label() -> None:
    from core.cot import VERDICTS
    from core.item import Item
    from distill.data.schema import LabelledPair
    from distill.teacher.sft import COT_FEATURE_DIMENSIONS, cot_features

    def pair(label):
        return LabelledPair(
            query_id="q",
            query="red paper bags without handles",
            item=Item(id="i", title="Blue paper bags with handles"),
            label=label,
        )

    features = cot_features([pair("Exact"), pair("Irrelevant")])
    assert np.array_equal(features[0], features[1])  # label-free
    at = {
        (d, v): features[0, i * len(VERDICTS) + j]
        for i, d in enumerate(COT_FEATURE_DIMENSIONS)
        for j, v in enumerate(VERDICTS)
    }
    # red/Blue: colour mismatch; paper: material match; "without handles" / "with handles": exclusion mismatch
    assert at[("color", "mismatch")] == at[("material", "match")] == at[("exclusion", "mismatch")] == 1
    assert sum(at.values()) == 3
    assert features[0, -1] == np.log1p(1)  # "bags": the one other query word found in the item


def test_cot_conditioned_head_writes_its_head_and_cot_records_and_scores_held_out_pairs(tmp_path) -> None:
    """Real SmolLM2 states on 8 train pairs; 3 dev pairs scored by the fitted head."""
    import json

    from distill.data.bundled import load_bundled
    from distill.teacher import sft

    train, dev = load_bundled("train")[:8], load_bundled("dev")[:3]
    report = sft.run_sft(
        train,
        tmp_path,
        SFTConfig(max_iter=5, threads=1, cot_features=True),
        progress=False,
        predict=dev,
        predict_out=tmp_path / "dev.jsonl",
    )
    assert report["teacher_spec"] is None and not (tmp_path / sft.SFT_GGUF).exists()
    head = np.load(tmp_path / sft.COT_HEAD_FILE)
    assert head["rows"].shape == (3, 576 + len(sft.COT_FEATURE_DIMENSIONS) * 4 + 1)
    assert (
        float(head["cot_feature_scale"]) == report["cot_feature_scale"]
        and report["cot_feature_scale"] in sft.COT_SCALE_GRID
    )
    assert len(report["cv_ce_by_l2"]) == len(sft.COT_SCALE_GRID) * len(sft.L2_GRID)
    for path, n in ((tmp_path / sft.OOF_FILE, len(train)), (tmp_path / "dev.jsonl", len(dev))):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(records) == n
        for record in records:
            assert record["mode"] == "cot" and record["dimensions"][-1]["dimension"] == "lexical_overlap"
            assert abs(sum(record["grade_distribution"].values()) - 1) < 1e-9
            assert record["teacher_id"].endswith("+rule-cot" + ("-oof" if path.name == sft.OOF_FILE else ""))
    # The held-out pairs' states were read and cached with the training pairs'.
    assert len(np.load(tmp_path / sft.STATES_FILE)["pair_ids"]) == len(train) + len(dev)


def test_rules_only_ablation_reads_no_llm_state(tmp_path) -> None:
    import json

    import pytest

    from distill.data.bundled import load_bundled
    from distill.teacher import sft

    train, dev = load_bundled("train")[:8], load_bundled("dev")[:3]
    with pytest.raises(ValueError, match="needs the CoT features"):
        sft.run_sft(train, tmp_path, SFTConfig(llm_states=False), progress=False)
    sft.run_sft(
        train,
        tmp_path,
        SFTConfig(max_iter=5, threads=1, cot_features=True, llm_states=False),
        progress=False,
        predict=dev,
        predict_out=tmp_path / "dev.jsonl",
    )
    assert np.load(tmp_path / sft.COT_HEAD_FILE)["rows"].shape == (3, len(sft.COT_FEATURE_DIMENSIONS) * 4 + 1)
    assert not (tmp_path / sft.STATES_FILE).exists()  # no LLM state was read
    record = json.loads((tmp_path / "dev.jsonl").read_text().splitlines()[0])
    assert record["teacher_id"] == "rule-cot"
