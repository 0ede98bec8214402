"""Side-by-side of two servers swept over the same load levels.

* p99 at equal load: the ratio of p99 latencies at the same number of clients.
* Throughput at equal p99: for a p99 budget B, the pairs/s a server sustains with p99 ≤ B, read
  off its (p99, pairs/s) curve by linear interpolation between measured load levels. Below the
  server's lowest measured p99 it is unknown; above its highest it is at least the highest
  measured throughput (reported with ``≥``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CurvePoint:
    p99_ms: float
    pairs_per_s: float


def throughput_at_p99(curve: list[CurvePoint], budget_ms: float) -> tuple[float, bool]:
    """(pairs/s at p99 = budget, is_lower_bound). NaN where the budget is unknown or below every measured p99."""
    points = sorted((p for p in curve if not math.isnan(p.p99_ms)), key=lambda p: p.p99_ms)
    if not points or math.isnan(budget_ms) or budget_ms < points[0].p99_ms:
        return math.nan, False
    best = max(p.pairs_per_s for p in points)
    if budget_ms >= points[-1].p99_ms:
        return best, True
    for lo, hi in zip(points, points[1:], strict=False):
        if lo.p99_ms <= budget_ms <= hi.p99_ms:
            span = hi.p99_ms - lo.p99_ms
            t = 0.0 if span == 0 else (budget_ms - lo.p99_ms) / span
            # A curve can bend back (more clients, lower throughput): never report less than a point within budget.
            within = max(p.pairs_per_s for p in points if p.p99_ms <= budget_ms)
            return max(within, lo.pairs_per_s + t * (hi.pairs_per_s - lo.pairs_per_s)), False
    return best, True  # unreachable: the budget lies inside the curve's span


def compare_sweeps(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per load level both sweeps share (matched by the ``load`` text)."""
    our_curve = [CurvePoint(r["latency_ms"]["p99"], r["pairs_per_s"]) for r in ours]
    their_by_load = {r["load"]: r for r in theirs}
    rows = []
    for r in ours:
        other = their_by_load.get(r["load"])
        if other is None:
            continue
        budget = other["latency_ms"]["p99"]
        at_budget, lower_bound = throughput_at_p99(our_curve, budget)
        rows.append(
            {
                "load": r["load"],
                "ours_pairs_per_s": r["pairs_per_s"],
                "theirs_pairs_per_s": other["pairs_per_s"],
                "ours_p99_ms": r["latency_ms"]["p99"],
                "theirs_p99_ms": budget,
                "p99_ratio_at_equal_load": _ratio(r["latency_ms"]["p99"], budget),
                "ours_pairs_per_s_at_their_p99": at_budget,
                "ours_at_their_p99_is_lower_bound": lower_bound,
                "throughput_ratio_at_equal_p99": _ratio(at_budget, other["pairs_per_s"]),
            }
        )
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def comparison_table(rows: list[dict[str, Any]], ours: str, theirs: str) -> str:
    def f(x: float, d: int = 1) -> str:
        return "–" if math.isnan(x) else f"{x:,.{d}f}"

    lines = [
        f"| load | {ours} pairs/s | {theirs} pairs/s | {ours} p99 ms | {theirs} p99 ms | "
        f"p99 ratio (equal load) | {ours} pairs/s at {theirs}'s p99 | throughput ratio (equal p99) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:

        def g(x: float, d: int = 1, lower: bool = r["ours_at_their_p99_is_lower_bound"]) -> str:
            return ("≥ " if lower and not math.isnan(x) else "") + f(x, d)  # a bound, never a missing value

        lines.append(
            f"| {r['load']} | {f(r['ours_pairs_per_s'])} | {f(r['theirs_pairs_per_s'])} | {f(r['ours_p99_ms'])} | "
            f"{f(r['theirs_p99_ms'])} | {f(r['p99_ratio_at_equal_load'], 2)} | "
            f"{g(r['ours_pairs_per_s_at_their_p99'])} | {g(r['throughput_ratio_at_equal_p99'], 2)} |"
        )
    return "\n".join(lines)
