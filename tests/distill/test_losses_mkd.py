"""Each MKD loss against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import (
    AttentionKDLoss,
    HardLabelLoss,
    PoolingKDLoss,
    ScoreDistributionKDLoss,
    VerdictAuxLoss,
)


def test_hard_label_ignores_unlabelled_rows():
    # Row 0: p = [.25, .5, .25], label 1 → −ln .5. Row 1 is unlabelled (−100) and must not count.
    logits = torch.tensor([[0.0, math.log(2.0), 0.0], [9.0, -9.0, 0.0]])
    loss = HardLabelLoss()(logits, torch.tensor([1, -100]))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_hard_label_without_labels_is_zero_with_gradient():
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = HardLabelLoss()(logits, torch.tensor([-100, -100]))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_score_kd_temperature_one():
    # teacher (.5, .5, 0), student uniform: KL = 2 · .5 · ln(.5 / (1/3)) = ln 1.5; T² = 1.
    logits = torch.zeros(2, 3)
    teacher = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    loss = ScoreDistributionKDLoss(temperature=1.0)(logits, teacher, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(math.log(1.5), abs=1e-5)


def test_score_kd_temperature_two_softens_teacher_and_scales_by_t_squared():
    # p_t^T ∝ sqrt(p_t): (.8, √.32, .2) / Σ; student logits (0, 0, 2)/2 = (0, 0, 1) → softmax.
    teacher = [0.64, 0.32, 0.04]
    soft = [math.sqrt(p) for p in teacher]
    soft = [s / sum(soft) for s in soft]
    z = [0.0, 0.0, 1.0]
    student = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    expected = 4.0 * sum(t * math.log(t / s) for t, s in zip(soft, student, strict=True))
    loss = ScoreDistributionKDLoss(temperature=2.0)(
        torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([teacher]), torch.tensor([True])
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_score_kd_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        ScoreDistributionKDLoss(temperature=0.0)


def test_attention_kd_kl_from_evidence_to_attention():
    # evidence uniform over tokens 1, 2; attention uniform over 4 tokens: KL = ln 2.
    # Row 1 has no evidence (mask False) and a wildly different attention: must not count.
    evidence = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    attention = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    loss = AttentionKDLoss()(attention, evidence, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_attention_kd_zero_when_attention_matches_evidence():
    e = torch.tensor([[0.0, 0.5, 0.5]])
    assert AttentionKDLoss()(e.clone(), e, torch.tensor([True])).item() == pytest.approx(0.0, abs=1e-6)


def test_pooling_kd_sums_towers():
    # query tower: KL(1,0 ‖ .5,.5) = ln 2; item tower: evidence equals weights → 0.
    q_w = torch.tensor([[0.5, 0.5]])
    q_e = torch.tensor([[1.0, 0.0]])
    d_w = torch.tensor([[0.2, 0.3, 0.5]])
    loss = PoolingKDLoss()(q_w, q_e, torch.tensor([True]), d_w, d_w.clone(), torch.tensor([True]))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    # Item evidence masked out: only the query term remains; nothing masked-in at all → 0.
    none = torch.tensor([False])
    assert PoolingKDLoss()(q_w, q_e, none, d_w, d_w, none).item() == 0.0


def test_verdict_aux_mean_over_given_cells():
    # 2 dimensions × 4 verdicts; uniform logits → −ln(1/4) per given cell; −100 cells ignored.
    logits = torch.zeros(1, 2, 4)
    loss = VerdictAuxLoss()(logits, torch.tensor([[2, -100]]))
    assert loss.item() == pytest.approx(math.log(4.0), abs=1e-6)
    logits = torch.tensor([[[math.log(3.0), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    # cell 0: p(0) = 3/6 → ln 2; cell 1: ln 4; mean = (ln 2 + ln 4) / 2.
    loss = VerdictAuxLoss()(logits, torch.tensor([[0, 3]]))
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(4.0)) / 2, abs=1e-6)
