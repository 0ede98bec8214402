"""Annotation at scale through Batch files: the OpenAI Batch API / ``vllm run-batch`` line format.

``relevance teacher annotate --batch-out requests.jsonl`` writes one request line per pair instead of
calling a teacher; any Batch runner executes them (hosted OpenAI Batch, ``vllm run-batch``, Ray Data,
or ``relevance teacher batch-run`` against one OpenAI-compatible server); ``--batch-in results.jsonl``
turns the output lines into CoT records. One definition of each contract stays where it was:

* the request is the Teacher's (``Teacher.prepare``: template, levels, prompt) in the chat backend's
  body (``openai_http.chat_body``: logprobs at the verdict position), plus an optional response format
  holding the model to the prompt's answer schema (``prompt.answer_schema``);
* an answer is read by the chat backend's ``chat_verdict`` (grade distribution from the logprobs at the
  grade token) and recorded by ``Teacher.record``; records are keyed, resumed and written by
  ``annotate.pending_pairs`` / ``RecordSink``, so batch and online records of one model share a file.

``custom_id`` = ``PROMPT_VERSION/MODE/PAIR_ID``: --batch-in finds the pair by its id and refuses lines
written for another prompt version or mode. A result line that failed (error object, non-200 status,
not JSON, no grade distribution) writes nothing, so the pair stays pending: ``--batch-out -o RECORDS``
then writes requests for exactly the pairs still missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

from distill.data.schema import LabelledPair
from distill.teacher.annotate import AnnotationSummary, RecordSink, pending_pairs
from teacher.backends.base import Backend, VerdictRequest, VerdictResult
from teacher.backends.openai_http import (
    API_KEY_ENV,
    DEFAULT_TOP_LOGPROBS,
    backend_id,
    chat_body,
    chat_verdict,
)
from teacher.prompt import Mode, answer_schema
from teacher.runtime import Teacher

REQUEST_URL = "/v1/chat/completions"


class ResponseFormat(StrEnum):
    """How a request line holds the model to the answer schema (servers spell it differently)."""

    json_schema = "json_schema"  # OpenAI and vLLM: {"type": "json_schema", "json_schema": {...}}
    json_object = "json_object"  # llama.cpp servers: {"type": "json_object", "schema": {...}}
    none = "none"  # the prompt's instruction only (models that follow it)


class BatchFileError(ValueError):
    """A request or result file that cannot be used; the message names the file, line and field."""


class _BatchModel(Backend):
    """The model a batch runs on, named as the chat backend names it, so that batch records and
    ``--teacher openai:MODEL@URL`` records share resume keys. A batch's requests run from its file
    (Batch API, vllm run-batch, batch-run), never one at a time through ``verdict``."""

    def __init__(self, model: str) -> None:
        self.backend_id = backend_id(model)

    async def verdict(self, request: VerdictRequest) -> VerdictResult:
        raise NotImplementedError("a batch's requests are run from its request file, not by the teacher")


def batch_teacher(model: str, *, max_tokens: int | None = None) -> Teacher:
    """The Teacher whose prompt, levels and records a batch of ``model`` uses (greedy, as annotate is)."""
    return Teacher(_BatchModel(model), max_tokens=max_tokens)


def custom_id(teacher: Teacher, mode: Mode, pair_id: str) -> str:
    return f"{teacher.prompt_version}/{mode}/{pair_id}"


def _response_format(fmt: ResponseFormat, mode: Mode, levels: Sequence[str]) -> dict[str, Any] | None:
    schema = answer_schema(mode, levels)
    if fmt == ResponseFormat.json_schema:
        return {
            "type": "json_schema",
            "json_schema": {"name": f"relevance_{mode}", "schema": schema, "strict": True},
        }
    if fmt == ResponseFormat.json_object:
        return {"type": "json_object", "schema": schema}
    return None


def _key(teacher: Teacher, mode: Mode) -> tuple[str, str, str]:
    return (teacher.teacher_id, teacher.prompt_version, mode)


class BatchOutSummary(BaseModel):
    requests_file: str
    teacher_id: str
    prompt_version: str
    mode: str
    response_format: str
    input_pairs: int
    duplicate_pairs: int  # same query and item content more than once in the input: one request
    already_done: int  # a record is in --out already: no request
    requests: int
    torn_lines_truncated: int


def write_requests(
    teacher: Teacher,
    model: str,
    pairs: Sequence[LabelledPair],
    path: Path,
    *,
    mode: Mode,
    response_format: ResponseFormat = ResponseFormat.json_schema,
    records: Path | None = None,
) -> BatchOutSummary:
    """One Batch request line per pair that has no record in ``records`` (all pairs without it)."""
    todo = pending_pairs(pairs, records, _key(teacher, mode))
    extra = _response_format(response_format, mode, teacher.levels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    # Written aside and renamed: a runner never picks up half a request file.
    with tmp.open("w", encoding="utf-8") as f:
        for pair in todo.pairs:
            prepared = teacher.prepare(pair.query, pair.item.as_mapping(), mode)
            body = chat_body(model, prepared.request, DEFAULT_TOP_LOGPROBS)
            if extra:
                body["response_format"] = extra
            line = {"custom_id": custom_id(teacher, mode, pair.pair_id), "method": "POST", "url": REQUEST_URL}
            f.write(json.dumps(line | {"body": body}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return BatchOutSummary(
        requests_file=str(path),
        teacher_id=teacher.teacher_id,
        prompt_version=teacher.prompt_version,
        mode=mode,
        response_format=response_format,
        input_pairs=len(pairs),
        duplicate_pairs=todo.duplicate_pairs,
        already_done=todo.already_done,
        requests=len(todo.pairs),
        torn_lines_truncated=todo.torn_lines_truncated,
    )


class BatchInSummary(AnnotationSummary):
    results: str
    result_lines: int = 0  # non-blank lines read
    already_done_lines: int = 0  # lines of pairs that had a record in --out already: not read further
    # Every problem, one entry each ("FILE:LINE: ..." or "CUSTOM_ID (SOURCE)"): never silently skipped.
    failed_lines: list[str] = Field(default_factory=list)
    unknown_custom_ids: list[str] = Field(default_factory=list)
    duplicate_lines: list[str] = Field(default_factory=list)
    missing_pairs: list[str] = Field(default_factory=list)

    @property
    def problems(self) -> int:
        return (
            len(self.failed_lines)
            + len(self.unknown_custom_ids)
            + len(self.duplicate_lines)
            + len(self.missing_pairs)
        )


def _completion(line: dict[str, Any]) -> dict[str, Any]:
    """The chat completion of a successful output line; ValueError names the field that failed."""
    error = line.get("error")
    if error:
        if isinstance(error, dict) and error.get("message"):
            code = f" {error['code']}" if error.get("code") else ""
            raise ValueError(f"error{code}: {error['message']}")
        raise ValueError(f"error: {json.dumps(error, ensure_ascii=False)[:300]}")
    response = line.get("response")
    if not isinstance(response, dict):
        raise ValueError("response: missing (and no error object)")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        raise ValueError(f"response.status_code {status}: {json.dumps(body, ensure_ascii=False)[:300]}")
    if not isinstance(body, dict):
        raise ValueError("response.body: not a JSON object")
    return body


def _unknown(where: str, cid: str, teacher: Teacher, mode: Mode, input_ids: set[str]) -> str:
    version, _, rest = cid.partition("/")
    line_mode, _, pair_id = rest.partition("/")
    if pair_id in input_ids and (version, line_mode) != (teacher.prompt_version, mode):
        return (
            f"{where}: custom_id {cid} was written for prompt {version}, mode {line_mode}; "
            f"this run reads prompt {teacher.prompt_version}, mode {mode}"
        )
    return f"{where}: custom_id {cid} is not among the input pairs"


def read_results(
    teacher: Teacher,
    pairs: Sequence[LabelledPair],
    results: Path,
    out: Path,
    *,
    mode: Mode,
    progress: bool = True,
) -> BatchInSummary:
    """Append a record to ``out`` for every pending pair whose result line answered with a grade
    distribution; list every failed line, unknown custom_id, duplicate line and pair without a line."""
    if not results.is_file():
        raise BatchFileError(f"{results}: Batch results file not found")
    todo = pending_pairs(pairs, out, _key(teacher, mode))
    summary = BatchInSummary(
        out=str(out),
        results=str(results),
        teacher_id=teacher.teacher_id,
        prompt_version=teacher.prompt_version,
        mode=mode,
        input_pairs=len(pairs),
        **todo.counts(),
    )
    input_ids = {p.pair_id for p in pairs}
    known = {custom_id(teacher, mode, pair_id) for pair_id in input_ids}
    pending = {custom_id(teacher, mode, p.pair_id): p for p in todo.pairs}
    first_line: dict[str, int] = {}

    from tqdm import tqdm

    sink = RecordSink(out, summary)
    started = time.perf_counter()
    bar = tqdm(
        total=results.stat().st_size,
        unit="B",
        unit_scale=True,
        desc="batch-in",
        disable=not progress,
        file=sys.stderr,
    )
    try:
        with results.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                bar.update(len(raw))
                if not raw.strip():
                    continue
                summary.result_lines += 1
                where = f"{results}:{number}"
                try:
                    line = json.loads(raw)
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                    summary.failed_lines.append(f"{where}: not JSON ({exc})")
                    continue
                cid = line.get("custom_id") if isinstance(line, dict) else None
                if not isinstance(cid, str) or not cid:
                    summary.failed_lines.append(f"{where}: custom_id: missing or not a string")
                    continue
                if cid in first_line:
                    summary.duplicate_lines.append(
                        f"{where}: custom_id {cid} again (read on line {first_line[cid]})"
                    )
                    continue
                first_line[cid] = number
                if cid not in known:
                    summary.unknown_custom_ids.append(_unknown(where, cid, teacher, mode, input_ids))
                    continue
                pair = pending.get(cid)
                if pair is None:  # its record is in --out: whatever the line says, nothing to do
                    summary.already_done_lines += 1
                    continue
                try:
                    result = chat_verdict(_completion(line), teacher.levels)
                except ValueError as exc:
                    summary.failed_lines.append(f"{where}: custom_id {cid}: {exc}")
                    continue
                record = teacher.record(
                    teacher.prepare(pair.query, pair.item.as_mapping(), mode), result, label=pair.label
                )
                if record.distribution_source == "none":
                    # Not written, so the pair stays pending and a new batch asks again (more max_tokens,
                    # a response format, a server that returns logprobs).
                    why = "; ".join(record.parse_errors) or "no logprobs at the grade token"
                    summary.failed_lines.append(f"{where}: custom_id {cid}: no grade distribution ({why})")
                    continue
                sink.keep(pair, record)
    finally:
        sink.close()
        bar.close()
        summary.elapsed_s = round(time.perf_counter() - started, 3)
        summary.pairs_per_s = round(summary.annotated / summary.elapsed_s, 3) if summary.elapsed_s else 0.0
    summary.missing_pairs = [
        f"{cid} ({pair.source or pair.pair_id}): no result line"
        for cid, pair in pending.items()
        if cid not in first_line
    ]
    return summary


class BatchRunSummary(BaseModel):
    requests_file: str
    results_file: str
    url: str
    requests: int
    ok: int  # HTTP 200
    failed: int  # another status, or no response (written as an error line)
    elapsed_s: float


def read_requests(path: Path) -> list[dict[str, Any]]:
    """The request lines of a Batch input file, checked before anything is sent."""
    if not path.is_file():
        raise BatchFileError(f"{path}: Batch requests file not found")
    lines: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                line = json.loads(raw)
            except ValueError as exc:
                raise BatchFileError(f"{where}: not JSON ({exc})") from None
            if not isinstance(line, dict):
                raise BatchFileError(f"{where}: not a JSON object")
            for field, kind in (("custom_id", str), ("url", str), ("body", dict)):
                if not isinstance(line.get(field), kind):
                    raise BatchFileError(f"{where}: {field}: missing or not a {kind.__name__}")
            if line.get("method", "POST") != "POST":
                raise BatchFileError(f"{where}: method: only POST is supported, not {line['method']!r}")
            if line["custom_id"] in seen:
                raise BatchFileError(
                    f"{where}: custom_id {line['custom_id']} again (line {seen[line['custom_id']]})"
                )
            seen[line["custom_id"]] = number
            lines.append(line)
    return lines


async def run_requests(
    requests: Path,
    url: str,
    results: Path,
    *,
    concurrency: int = 2,
    timeout_s: float = 300.0,
    progress: bool = True,
) -> BatchRunSummary:
    """Run every request line against one OpenAI-compatible server and write Batch output lines (in
    completion order, as Batch runners do). No retries: a failure becomes an error line, which
    --batch-in reports, and the pair is asked again in the next batch."""
    from tqdm import tqdm

    lines = read_requests(requests)
    # Request urls start with /v1; accept the server root or the usual OpenAI base URL (.../v1).
    root = url.rstrip("/").removesuffix("/v1")
    key = os.environ.get(API_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    summary = BatchRunSummary(
        requests_file=str(requests),
        results_file=str(results),
        url=root,
        requests=len(lines),
        ok=0,
        failed=0,
        elapsed_s=0.0,
    )
    semaphore = asyncio.Semaphore(max(1, concurrency))
    results.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    bar = tqdm(total=len(lines), unit="req", desc="batch-run", disable=not progress, file=sys.stderr)

    async def one(client: httpx.AsyncClient, number: int, line: dict[str, Any], f: Any) -> None:
        output: dict[str, Any] = {"id": f"batch_req_{number}", "custom_id": line["custom_id"]}
        async with semaphore:
            try:
                response = await client.post(line["url"], json=line["body"])
            except httpx.HTTPError as exc:
                output |= {"response": None, "error": {"code": type(exc).__name__, "message": str(exc)}}
            else:
                try:
                    body: Any = response.json()
                except ValueError:
                    body = response.text
                output |= {"response": {"status_code": response.status_code, "body": body}, "error": None}
        ok = output["error"] is None and output["response"]["status_code"] == 200
        summary.ok += ok
        summary.failed += not ok
        f.write(json.dumps(output, ensure_ascii=False) + "\n")
        f.flush()
        bar.update(1)

    try:
        async with httpx.AsyncClient(base_url=root, headers=headers, timeout=timeout_s) as client:
            with results.open("w", encoding="utf-8") as f:
                await asyncio.gather(*(one(client, n, line, f) for n, line in enumerate(lines, start=1)))
    finally:
        bar.close()
        summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary
