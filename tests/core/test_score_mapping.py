"""Model outputs → scores and grade distributions, as a bundle's ``score`` mapping prescribes."""

from __future__ import annotations

import numpy as np
import pytest

from core.bundle import BundleManifest, CosineGradeHeadScore, CosineScore, SoftmaxScore
from core.score_mapping import from_cosine, from_logits


def _manifest(kind: str, score) -> BundleManifest:
    return BundleManifest(
        name="t", version="1", kind=kind, score=score, embedding_dim=4 if kind == "bi" else None
    )


def test_softmax_expected_score_and_grades():
    scores, probs = from_logits(
        _manifest("cross", SoftmaxScore()), np.array([[0.0, 0.0, 0.0], [-50, -50, 50.0]])
    )
    np.testing.assert_allclose(probs[0], [1 / 3] * 3)
    np.testing.assert_allclose(scores, [0.5, 1.0])


def test_cosine_affine_map_clips_to_unit_interval():
    scores, probs = from_cosine(_manifest("bi", CosineScore(low=0.0, high=1.0)), np.array([-0.3, 0.25, 1.2]))
    np.testing.assert_allclose(scores, [0.0, 0.25, 1.0])
    assert probs is None


def test_cosine_grade_head():
    head = CosineGradeHeadScore(weights=[-10.0, 0.0, 10.0], bias=[0.0, 0.0, 0.0])
    scores, probs = from_cosine(_manifest("bi", head), np.array([1.0, -1.0]))
    assert probs.shape == (2, 3) and scores[0] > 0.99 and scores[1] < 0.01


def test_a_manifest_names_the_onnx_signature_of_its_kind():
    cross, bi = _manifest("cross", SoftmaxScore()), _manifest("bi", CosineScore())
    assert (cross.onnx.output, cross.onnx.width(cross)) == ("logits", 3)
    assert (bi.onnx.output, bi.onnx.width(bi)) == ("embedding", 4)
    assert cross.onnx.inputs == bi.onnx.inputs == ("input_ids", "attention_mask", "token_type_ids")


def test_a_cross_manifest_refuses_a_cosine_mapping():
    with pytest.raises(ValueError, match="not valid for a cross bundle"):
        _manifest("cross", CosineScore())
