"""`relevance explain`: ask a running service why an item is (not) relevant to a query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)


def explain(
    query: str = typer.Option(..., "--query", "-q", help="The search query."),
    item_id: str | None = typer.Option(None, "--item-id", "-i", help="Id of an item the service has scored."),
    item_file: Path | None = typer.Option(
        None, "--item-file", help="JSON file with the full item {id, title, attributes, ...} (POST /explain)."
    ),
    url: str = typer.Option("http://127.0.0.1:8080", "--url", help="Base URL of the service."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="RELEVANCE_API_KEY", help="API key (default: $RELEVANCE_API_KEY)."
    ),
    timeout_s: float = typer.Option(120.0, "--timeout", help="Seconds to wait for the answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON response."),
) -> None:
    """Show the teacher's reasoning (dimensions, verdicts, evidence) next to the student's score."""
    import httpx
    from rich.console import Console

    console = Console()
    err = Console(stderr=True)
    if (item_id is None) == (item_file is None):
        err.print("[red]error:[/] give exactly one of --item-id or --item-file")
        raise typer.Exit(2)
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as client:
            if item_file is not None:
                response = client.post("/explain", json={"query": query, "item": _read_item(item_file)})
            else:
                response = client.get("/explain", params={"query": query, "item_id": item_id})
    except httpx.TimeoutException:
        err.print(f"[red]error:[/] no answer from {url} within {timeout_s:g}s (--timeout)")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        err.print(f"[red]error:[/] cannot reach {url}: {exc}")
        raise typer.Exit(1) from None
    if response.status_code != 200:
        err.print(f"[red]error {response.status_code}:[/] {_detail(response)}")
        if "retry-after" in response.headers:
            err.print(f"retry after {response.headers['retry-after']}s")
        raise typer.Exit(1)
    body = response.json()
    if as_json:
        console.print_json(data=body)
        return
    _print_explanation(console, body)


def _read_item(path: Path) -> dict[str, Any]:
    try:
        item = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--item-file") from exc
    if not isinstance(item, dict):
        raise typer.BadParameter(f"{path}: expected a JSON object", param_hint="--item-file")
    return item


def _detail(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:  # the service's error shape
        return f"{error['message']} ({error.get('code')})"
    return json.dumps(body)


def _distribution(dist: dict[str, float] | None) -> str:
    if not dist:
        return "-"
    return "  ".join(f"{grade} {p:.2f}" for grade, p in dist.items())


def _print_explanation(console: Any, body: dict[str, Any]) -> None:
    from rich.table import Table

    record = body["explanation"]
    timings = body["timings_ms"]
    console.print(f"[bold]query[/]  {body['query']}")
    console.print(f"[bold]item[/]   {body['item_id']}: {record['item_text']}")
    student = body.get("student")
    if student:
        grades = _distribution(student.get("grade_distribution"))
        console.print(f"[bold]student[/] {student['bundle']}: score {student['score']:.3f}  {grades}")
    else:
        console.print(f"[bold]student[/] unavailable ({body.get('student_error')})")
    console.print(
        f"[bold]teacher[/] {record['teacher_id']} (prompt {record['prompt_version']}): grade "
        f"[bold]{record.get('grade') or '?'}[/]  {_distribution(record.get('grade_distribution'))}"
        f"  [dim]({record.get('distribution_source')})[/]"
    )
    table = Table(title="dimensions", show_lines=False)
    for column in ("dimension", "query", "item", "verdict", "evidence"):
        table.add_column(column)
    for dim in record.get("dimensions", []):
        evidence = "; ".join(
            f'{e["source"]}: "{e["text"]}"' + ("" if e.get("verified") else " (not found)")
            for e in dim.get("evidence", [])
        )
        table.add_row(
            dim["dimension"],
            dim.get("query_value") or "-",
            dim.get("item_value") or "-",
            dim["verdict"],
            evidence or "-",
        )
    if record.get("dimensions"):
        console.print(table)
    else:
        console.print("[dim]no per-dimension verdicts (score mode, or the output did not parse)[/]")
    if record.get("rationale"):
        console.print(f"[bold]rationale[/] {record['rationale']}")
    if not record.get("parse_ok", True):
        console.print(f"[yellow]parse problems:[/] {'; '.join(record.get('parse_errors', []))}")
    console.print(
        f"[dim]cached={body['cached']} shared={body.get('shared', False)}  store "
        f"{_ms(timings.get('store_ms'))}  student {_ms(timings.get('student_ms'))}  teacher "
        f"{_ms(timings.get('teacher_ms'))}  total {_ms(timings.get('total_ms'))}[/]"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
