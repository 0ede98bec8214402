"""What every loader shares: the load report, file-level errors and strict text reading.

File-level problems (missing file or column, broken UTF-8) raise ``DataError`` naming the file
(and line). Row-level problems (bad label, empty query, ...) are counted per reason in the
``LoadReport`` with a few ``file:line`` examples, or raise at once with ``on_error="raise"``.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.datasets import DatasetError
from distill.data.schema import LabelledPair

OnError = Literal["skip", "raise"]
MALFORMED = "__malformed__"  # key read_table sets on a row whose cell count is wrong
MAX_EXAMPLES_PER_REASON = 5


class DataError(DatasetError):
    """Input that cannot be loaded; the message names the file (and line) and what is wrong."""


class LoadReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    files: list[str]
    rows_read: int = 0
    pairs: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)  # reason → count
    examples: dict[str, list[str]] = Field(default_factory=dict)  # reason → "file:line: detail"

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        head = f"{self.format}: {self.rows_read} rows read, {self.pairs} pairs loaded, {self.skipped_total} skipped"
        lines = [head]
        for reason, count in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {count} × {reason}, e.g. {'; '.join(self.examples.get(reason, [])[:2])}")
        return "\n".join(lines)


class LoadResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: list[LabelledPair]
    report: LoadReport


class PairCollector:
    """Accumulates pairs and skipped rows while a loader walks its files."""

    def __init__(self, fmt: str, files: Iterable[str | Path], on_error: OnError = "skip") -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', not {on_error!r}")
        self.pairs: list[LabelledPair] = []
        self.on_error = on_error
        self._report = LoadReport(format=fmt, files=[str(f) for f in files])
        self._skipped: Counter[str] = Counter()

    def row(self) -> None:
        self._report.rows_read += 1

    def table_rows(
        self, rows: Iterable[tuple[int, dict[str, str]]], path: str | Path
    ) -> Iterator[tuple[str, dict[str, str]]]:
        """Counts each ``read_table`` row and yields ("file:line", row) for the well-formed ones;
        a row whose cell count differs from the header's is skipped as "malformed row"."""
        for line, row in rows:
            self.row()
            where = f"{path}:{line}"
            problem = row.pop(MALFORMED, None)
            if problem:
                self.skip("malformed row", where, problem)
                continue
            yield where, row

    def add(self, pair: LabelledPair) -> None:
        self.pairs.append(pair)

    def skip(self, reason: str, where: str, detail: str) -> None:
        """Record an unusable row (``where`` = "file:line"); raises instead when on_error="raise"."""
        if self.on_error == "raise":
            raise DataError(f"{where}: {detail}")
        self._skipped[reason] += 1
        examples = self._report.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES_PER_REASON:
            examples.append(f"{where}: {detail}")

    def result(self) -> LoadResult:
        self._report.pairs = len(self.pairs)
        self._report.skipped = dict(self._skipped)
        return LoadResult(pairs=self.pairs, report=self._report)


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Whole file as text; broken encoding raises DataError naming the file, line and byte offset."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    data = p.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{p}:{line}: not valid {encoding} (byte {exc.start}: {data[exc.start : exc.start + 4]!r}); "
            f"re-encode the file as {encoding}"
        ) from None
    return text.removeprefix("\ufeff")


def read_table(
    path: str | Path, *, required: Iterable[str], delimiter: str = ",", encoding: str = "utf-8"
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) from a CSV/TSV with a header; missing columns raise DataError.

    The line number is the row's first physical line, so quoted multi-line cells keep
    references right.
    """
    p = Path(path)
    text = read_text(p, encoding)
    csv.field_size_limit(1 << 28)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{p}: missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'no header'})"
        )
    start = reader.line_num + 1
    for row in reader:
        extra = row.pop(None, None)  # cells beyond the header
        missing = [k for k, v in row.items() if v is None]  # the row ended early
        if extra or missing:
            cells = len(header) + len(extra or []) - len(missing)
            row[MALFORMED] = f"{cells} cells where the header has {len(header)} (a stray delimiter or quote?)"
        yield start, row
        start = reader.line_num + 1


def clean(value: str | None) -> str:
    return (value or "").strip()
