"""A cross student's training run (runs/<name>/) as a Hugging Face folder Infinity's rerank endpoint loads.

The checkpoint is read through distill/students/run_folder.py, which owns the run folder's layout.

Infinity serves cross-encoders through sentence-transformers' CrossEncoder, i.e. a
``BertForSequenceClassification`` folder. The student is a BertModel without pooler plus a linear
grade head on [CLS]; the folder gets the student's encoder weights unchanged, an identity pooler
(Infinity's model has one; it runs on one token, so it adds no measurable compute) and a one-logit
head (Exact − Irrelevant logit). Per pair Infinity therefore runs the same encoder, the same layers
and, through ``model_max_length``, the same token limit as the bundle: the compute matches; the
scores are not the student's calibrated ones (not needed for a speed comparison).
"""

from __future__ import annotations

from pathlib import Path


def export_hf_cross_encoder(run_dir: str | Path, out_dir: str | Path, *, max_length: int) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from distill.students.backbone import backbone_path
    from distill.students.run_folder import read_checkpoint

    out_dir = Path(out_dir)
    checkpoint = read_checkpoint(run_dir)
    if checkpoint.kind != "cross":
        raise ValueError(
            f"{checkpoint.path}: kind is {checkpoint.kind!r}; only cross students serve as rerankers"
        )
    config = BertConfig.from_dict(checkpoint.bert_config)
    config.num_labels = 1
    model = BertForSequenceClassification(config).eval()
    weights = checkpoint.state_dict
    encoder = {k.removeprefix("bert."): v for k, v in weights.items() if k.startswith("bert.")}
    missing, unexpected = model.bert.load_state_dict(encoder, strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(
            f"{checkpoint.path}: encoder weights do not fit a BertModel "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    with torch.no_grad():
        hidden = config.hidden_size
        model.bert.pooler.dense.weight.copy_(torch.eye(hidden))
        model.bert.pooler.dense.bias.zero_()
        head_w, head_b = weights["head.weight"], weights["head.bias"]
        model.classifier.weight.copy_((head_w[-1] - head_w[0]).unsqueeze(0))
        model.classifier.bias.copy_((head_b[-1] - head_b[0]).reshape(1))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(backbone_path())
    tokenizer.model_max_length = max_length  # truncate pairs as the bundle does
    tokenizer.save_pretrained(out_dir)
    return out_dir
