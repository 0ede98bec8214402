"""`relevance teacher annotate --batch-out / --batch-in` and `relevance teacher batch-run`: the request lines
are the teacher's prompt, every bad result line is named, and the round trip through llama.cpp's real
OpenAI-compatible server gives records a student trains on."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cot import read_records
from core.grades import GRADE_LEVELS
from distill.cli import app
from distill.data.bundled import load_bundled
from distill.teacher.batch import BatchFileError, batch_teacher, read_requests, run_requests, write_requests
from teacher.prompt import PROMPT_VERSION, answer_schema

runner = CliRunner()


def _cid(pair, mode: str = "score") -> str:
    return f"{PROMPT_VERSION}/{mode}/{pair.pair_id}"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_request_lines_are_the_teachers_prompt_with_logprobs(tmp_path: Path) -> None:
    pairs = load_bundled("dev")[:4]
    teacher = batch_teacher("my-model")
    for mode, max_tokens in (("score", 8), ("cot", 320)):
        path = tmp_path / f"{mode}.jsonl"
        summary = write_requests(teacher, "my-model", [*pairs, pairs[0]], path, mode=mode)
        assert summary.requests == 4 and summary.duplicate_pairs == 1  # a duplicate pair is asked once
        lines = _lines(path)
        assert [line["custom_id"] for line in lines] == [_cid(p, mode) for p in pairs]
        for pair, line in zip(pairs, lines, strict=True):
            assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
            body = line["body"]
            # The Teacher's own request (template, levels, prompt), as the chat backend sends it.
            assert (
                body["messages"] == teacher.prepare(pair.query, pair.item.as_mapping(), mode).request.messages
            )
            assert body["model"] == "my-model" and body["temperature"] == 0
            assert body["logprobs"] is True and body["top_logprobs"] == 10
            assert body["max_tokens"] == max_tokens + 8
            assert body["response_format"] == {
                "type": "json_schema",
                "json_schema": {
                    "name": f"relevance_{mode}",
                    "schema": answer_schema(mode, GRADE_LEVELS),
                    "strict": True,
                },
            }
    none = write_requests(teacher, "m", pairs, tmp_path / "plain.jsonl", mode="score", response_format="none")
    assert none.requests == 4 and all(
        "response_format" not in line["body"] for line in _lines(tmp_path / "plain.jsonl")
    )


def _ok(pair, *, logprobs: bool = True) -> str:
    """A successful output line answering {"grade": "Exact"}, with the top logprobs at the grade token."""
    text = '{"grade": "Exact"}'
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
    if logprobs:
        top = [
            {"token": "Ex", "logprob": -0.1},
            {"token": "Part", "logprob": -2.5},
            {"token": "I", "logprob": -4.0},
        ]
        tokens = [{"token": t, "logprob": 0.0, "top_logprobs": []} for t in ('{"', "grade", '":', ' "')]
        tokens += [{"token": "Ex", "logprob": -0.1, "top_logprobs": top}, {"token": 'act"}', "logprob": 0.0}]
        choice["logprobs"] = {"content": tokens}
    response = {
        "status_code": 200,
        "request_id": "r",
        "body": {"object": "chat.completion", "choices": [choice]},
    }
    return json.dumps({"id": "batch_req_x", "custom_id": _cid(pair), "response": response, "error": None})


def test_batch_in_names_every_bad_line_and_missing_pair_and_resumes(tmp_path: Path) -> None:
    pairs = load_bundled("dev")[:6]
    results, records = tmp_path / "results.jsonl", tmp_path / "records.jsonl"
    lines = [
        _ok(pairs[0]),
        '{"custom_id": "' + _cid(pairs[1]) + '", "respo',  # cut short
        json.dumps(
            {
                "custom_id": _cid(pairs[1]),
                "response": None,
                "error": {"code": "server_error", "message": "boom"},
            }
        ),
        json.dumps(
            {"custom_id": _cid(pairs[2]), "response": {"status_code": 500, "body": {"error": "overloaded"}}}
        ),
        json.dumps({"custom_id": f"{PROMPT_VERSION}/score/000000000000000000000000", "response": None}),
        _ok(pairs[0]),
        _ok(pairs[3], logprobs=False),
        json.dumps({"custom_id": _cid(pairs[4], "cot"), "response": {"status_code": 200, "body": {}}}),
    ]
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["teacher", "annotate", "-i", "bundled:dev", "--limit", "6", "--batch-in", str(results),
            "--batch-model", "smollm2", "-o", str(records), "--summary", str(tmp_path / "summary.json")]  # fmt: skip

    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["annotated"] == 1 and summary["result_lines"] == 8
    failed = summary["failed_lines"]
    assert len(failed) == 4
    assert failed[0].startswith(f"{results}:2: not JSON")
    assert failed[1] == f"{results}:3: custom_id {_cid(pairs[1])}: error server_error: boom"
    assert failed[2].startswith(f"{results}:4: custom_id {_cid(pairs[2])}: response.status_code 500: ")
    assert failed[3].startswith(f"{results}:7: custom_id {_cid(pairs[3])}: no grade distribution")
    assert summary["unknown_custom_ids"] == [
        f"{results}:5: custom_id {PROMPT_VERSION}/score/000000000000000000000000 is not among the input pairs",
        f"{results}:8: custom_id {_cid(pairs[4], 'cot')} was written for prompt {PROMPT_VERSION}, mode cot; "
        f"this run reads prompt {PROMPT_VERSION}, mode score",
    ]
    assert summary["duplicate_lines"] == [f"{results}:6: custom_id {_cid(pairs[0])} again (read on line 1)"]
    assert summary["missing_pairs"] == [f"{_cid(p)} ({p.source}): no result line" for p in pairs[4:]]

    (record,), _ = read_records(records)
    assert record.pair_id == pairs[0].pair_id and record.query_id == pairs[0].query_id
    assert (
        record.teacher_id == "openai:smollm2" and record.distribution_source == "logprobs" and record.parse_ok
    )
    expected = {"Irrelevant": -4.0, "Partial": -2.5, "Exact": -0.1}
    total = sum(math.exp(v) for v in expected.values())
    assert record.grade_distribution == pytest.approx({k: math.exp(v) / total for k, v in expected.items()})

    # Resume: the written pair is skipped; with --allow-failures the same problems exit 0.
    again = runner.invoke(app, [*args, "--allow-failures"])
    assert again.exit_code == 0, again.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["annotated"] == 0 and summary["already_done"] == 1 and summary["already_done_lines"] == 1
    assert len(read_records(records)[0]) == 1

    # The next batch asks for exactly the pairs still without a record.
    retry = tmp_path / "retry.jsonl"
    out = runner.invoke(app, ["teacher", "annotate", "-i", "bundled:dev", "--limit", "6", "--batch-out", str(retry),
                              "--batch-model", "smollm2", "-o", str(records)])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert [line["custom_id"] for line in _lines(retry)] == [_cid(p) for p in pairs[1:]]


def test_batch_options_and_files_fail_clearly(tmp_path: Path) -> None:
    base = ["teacher", "annotate", "-i", "bundled:dev", "--limit", "2"]
    wide = {"COLUMNS": "300"}  # no line wrapping inside the message
    result = runner.invoke(app, [*base, "--batch-out", str(tmp_path / "r.jsonl")], env=wide)
    assert result.exit_code == 2 and "--batch-model" in result.output
    result = runner.invoke(app, [*base, "--batch-in", str(tmp_path / "nope.jsonl"), "--batch-model", "m", "-o", str(tmp_path / "o.jsonl")], env=wide)  # fmt: skip
    assert result.exit_code == 2 and "nope.jsonl: Batch results file not found" in result.output

    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        '{"custom_id": "a", "url": "/v1/chat/completions", "body": {}}\n{"custom_id": "b", "url": "/x"}\n'
    )
    with pytest.raises(BatchFileError, match=r"requests.jsonl:2: body: missing or not a dict"):
        read_requests(requests)


def test_batch_run_writes_an_error_line_for_a_request_without_a_response(tmp_path: Path) -> None:
    from loadtest.servers import free_port

    pairs = load_bundled("dev")[:2]
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    write_requests(batch_teacher("m"), "m", pairs, requests, mode="score")
    summary = asyncio.run(
        run_requests(requests, f"http://127.0.0.1:{free_port()}/v1", results, timeout_s=5, progress=False)
    )
    assert summary.requests == 2 and summary.ok == 0 and summary.failed == 2
    lines = _lines(results)
    assert sorted(line["custom_id"] for line in lines) == sorted(_cid(p) for p in pairs)
    assert all(line["response"] is None and line["error"]["code"] == "ConnectError" for line in lines)
    failed = json.loads(
        runner.invoke(
            app,
            [
                "teacher",
                "annotate",
                "-i",
                "bundled:dev",
                "--limit",
                "2",
                "--batch-in",
                str(results),
                "--batch-model",
                "m",
                "-o",
                str(tmp_path / "rec.jsonl"),
            ],
        ).stdout  # fmt: skip
    )["failed_lines"]
    assert len(failed) == 2 and all(": error ConnectError: " in f for f in failed)


@pytest.mark.llm
@pytest.mark.slow
def test_round_trip_through_llama_cpp_server_into_student_training(tmp_path: Path, llama_server: str) -> None:
    requests, results, records = (
        tmp_path / "requests.jsonl",
        tmp_path / "results.jsonl",
        tmp_path / "records.jsonl",
    )
    common = ["-i", "bundled:train", "--limit", "100", "--batch-model", "smollm2"]
    # llama-cpp-python's server takes the schema as {"type": "json_object", "schema": ...}: without it the
    # 135M model answers in prose over the chat API (no prefill) and never reaches the grade.
    out = runner.invoke(app, ["teacher", "annotate", *common, "--batch-out", str(requests),
                              "--batch-response-format", "json_object"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert len(_lines(requests)) == 100

    ran = runner.invoke(app, ["teacher", "batch-run", "--requests", str(requests), "--url", llama_server,
                              "-o", str(results), "--concurrency", "1"])  # fmt: skip
    assert ran.exit_code == 0, ran.output

    read = runner.invoke(
        app, ["teacher", "annotate", *common, "--batch-in", str(results), "-o", str(records)]
    )
    assert read.exit_code == 0, read.output
    got, _ = read_records(records)
    assert len(got) == 100 and len({r.pair_id for r in got}) == 100
    for record in got:
        assert record.distribution_source == "logprobs" and record.parse_ok, record.parse_errors
        assert list(record.grade_distribution) == list(GRADE_LEVELS)
        assert math.isclose(sum(record.grade_distribution.values()), 1.0, abs_tol=1e-9)

    dev = tmp_path / "dev.jsonl"
    dev.write_text(
        "".join(
            json.dumps({"query": p.query, "item_id": p.item.id, "title": p.item.title, "label": p.label})
            + "\n"
            for p in load_bundled("dev")[:8]
        )
    )
    trained = runner.invoke(app, ["student", "train", "--name", "batch-kd", "--layers", "2", "--max-steps", "2",
                                  "--max-tokens", "32", "--batch-size", "4", "--threads", "1", "--train", "bundled:train",
                                  "--dev", str(dev), "--teacher", str(records), "--w-score-kd", "1",
                                  "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert f"teacher file {records} (all): 100 records, 100 matched" in trained.output
    assert "distribution used 100" in trained.output
    assert (tmp_path / "runs" / "batch-kd" / "metrics.json").is_file()
