"""Turning load results into the JSON and Markdown a benchmark run leaves behind."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.prom import histogram_delta
from loadtest.runner import LoadResult


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except FileNotFoundError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "git_commit": commit,
    }


def server_histograms(result: LoadResult, prefix: str = "relevance_") -> dict[str, dict[str, float]]:
    """Every server histogram that moved during the measured window: count, mean, p50, p99 (bucket bounds)."""
    if result.scrape_before is None or result.scrape_after is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    for name in sorted(result.scrape_after.histograms):
        if not name.startswith(prefix):
            continue
        delta = histogram_delta(result.scrape_before, result.scrape_after, name)
        if delta is None or delta.count <= 0:
            continue
        out[name] = {
            "count": delta.count,
            "mean": delta.mean(),
            "p50_le": delta.quantile(0.5),
            "p99_le": delta.quantile(0.99),
            "buckets": {_fmt_le(le): c for le, c in delta.non_cumulative() if c},
        }
    return out


def _fmt_le(le: float) -> str:
    return "+Inf" if math.isinf(le) else f"{le:g}"


def result_record(result: LoadResult) -> dict[str, Any]:
    return {**result.summary(), "server_histograms": server_histograms(result)}


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def sweep_table(records: list[dict[str, Any]]) -> str:
    """One row per load level: requests counted in the window, throughput, latency percentiles, errors,
    server-side batch size."""
    lines = [
        "| target | load | counted | pairs/s | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | mean batch "
        "| peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lat = r["latency_ms"]
        batch = next(
            (h["mean"] for n, h in r.get("server_histograms", {}).items() if "batch_size" in n), None
        )
        lines.append(
            f"| {r['target']} | {r['load']} | {r['requests']} | {fmt(r['pairs_per_s'])} | {fmt(r['requests_per_s'])} | "
            f"{fmt(lat['p50'])} | {fmt(lat['p95'])} | {fmt(lat['p99'])} | {fmt(lat['max'])} | "
            f"{fmt(100 * r['error_rate'], 2)} % | {fmt(batch)} | {fmt(r['peak_rss_mib'], 0)} |"
        )
    return "\n".join(lines)


def histogram_table(record: dict[str, Any]) -> str:
    hists = record.get("server_histograms", {})
    if not hists:
        return "(the server exposed no histograms that moved during the run)"
    lines = ["| server histogram | count | mean | p50 ≤ | p99 ≤ |", "|---|---:|---:|---:|---:|"]
    for name, h in hists.items():
        lines.append(
            f"| `{name}` | {fmt(h['count'], 0)} | {h['mean']:.4g} | {h['p50_le']:g} | {h['p99_le']:g} |"
        )
    return "\n".join(lines)
