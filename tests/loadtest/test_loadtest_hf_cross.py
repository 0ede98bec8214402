"""A cross student's run becomes an HF cross-encoder with the same encoder (what Infinity reranks with)."""

from __future__ import annotations

import pytest
import torch

from distill.students.backbone import tokenizer_file
from distill.students.config import TrainConfig
from distill.students.kinds import STUDENT_KINDS
from distill.students.run_folder import save_run
from loadtest.hf_cross import export_hf_cross_encoder

TINY_BERT = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}


def test_student_encoder_and_head_carry_over(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    student = STUDENT_KINDS["cross"].build(None, bert_config=TINY_BERT).eval()
    save_run(tmp_path / "run", student, TrainConfig(name="tiny", kind="cross", layers=2), tokenizer_file())
    out = export_hf_cross_encoder(tmp_path / "run", tmp_path / "hf", max_length=24)

    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.model_max_length == 24
    batch = tokenizer(["red shoe"], ["a very long product title " * 10], truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 24
    with torch.no_grad():
        ours = student.bert(**batch).last_hidden_state
        theirs = loaded.bert(**batch).last_hidden_state
        logits = student.head(ours[:, 0])
        score = loaded(**batch).logits
    torch.testing.assert_close(theirs, ours)
    # One logit: Exact − Irrelevant, read through the identity pooler's tanh.
    pooled = torch.tanh(ours[:, 0])
    expected = pooled @ (student.head.weight[-1] - student.head.weight[0]) + (
        student.head.bias[-1] - student.head.bias[0]
    )
    torch.testing.assert_close(score[:, 0], expected)
    assert logits.shape == (1, 3)


def test_bi_runs_and_missing_runs_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        export_hf_cross_encoder(tmp_path / "nothing", tmp_path / "hf", max_length=32)
    student = STUDENT_KINDS["bi"].build(None, bert_config=TINY_BERT)
    save_run(tmp_path / "bi", student, TrainConfig(name="b", kind="bi", layers=2), tokenizer_file())
    with pytest.raises(ValueError, match="only cross students"):
        export_hf_cross_encoder(tmp_path / "bi", tmp_path / "hf", max_length=32)
