"""Writes an evaluation report folder: metrics.json, report.md and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from distill.eval.evaluate import METRICS, Predictions
from distill.eval.metrics import calibration_bins

METRIC_TITLES = {
    "ndcg@10": "NDCG@10",
    "ndcg@all": "NDCG@all",
    "map": "MAP",
    "auc_exact": "AUC E-vs-rest",
    "auc_relevant": "AUC EP-vs-I",
    "macro_f1": "macro-F1",
    "ece": "ECE ↓",
}


def _cell(value: float | None, ci: list[float | None]) -> str:
    if value is None:
        return "n/a"
    if ci[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def metrics_table(section: dict[str, Any]) -> str:
    head = "| system | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for name, system in section["systems"].items():
        cells = [_cell(system["metrics"][m]["value"], system["metrics"][m]["ci95"]) for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(section: dict[str, Any]) -> str:
    if not section["comparisons"]:
        return ""
    lines = [
        "| a − b | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |",
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for comp in section["comparisons"]:
        cells = []
        for m in METRICS:
            d, (lo, hi) = comp["metrics"][m], comp["metrics"][m]["ci95"]
            if d["diff"] is None:
                cells.append("n/a")
            elif lo is None:
                cells.append(f"{d['diff']:+.3f}")
            else:
                cells.append(f"{d['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {comp['a']} − {comp['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(sections: list[dict[str, Any]]) -> str:
    """Paired differences of the same comparisons in several reports (e.g. one per training seed):
    per metric, the mean difference, the range, and in how many reports the CI was above / below 0.
    Comparisons are matched by position, so the reports must list their systems in the same order;
    rows are named after the first report's systems."""
    import numpy as np

    counts = {len(s["comparisons"]) for s in sections}
    if len(counts) != 1:
        raise ValueError(f"the reports compare different numbers of systems: {sorted(counts)}")
    lines = [
        f"| a − b (n = {len(sections)}) | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |",
        "|" + "---|" * (len(METRICS) + 1),
    ]
    for i in range(counts.pop()):
        comps = [s["comparisons"][i] for s in sections]
        cells = []
        for m in METRICS:
            diffs = [c["metrics"][m]["diff"] for c in comps]
            if any(d is None for d in diffs):
                cells.append("n/a")
                continue
            cis = [c["metrics"][m]["ci95"] for c in comps]
            above = sum(lo is not None and lo > 0 for lo, _ in cis)
            below = sum(hi is not None and hi < 0 for _, hi in cis)
            cells.append(f"{np.mean(diffs):+.3f} ({min(diffs):+.3f}…{max(diffs):+.3f}; ↑{above} ↓{below})")
        lines.append(f"| {comps[0]['a']} − {comps[0]['b']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _section_md(title: str, section: dict[str, Any]) -> list[str]:
    counts = ", ".join(f"{g} {n}" for g, n in section["label_counts"].items())
    out = [
        f"## {title}",
        "",
        f"{section['pairs']} pairs, {section['queries']} queries ({counts}). NDCG over the "
        f"{section['queries_ndcg']} queries with ≥ 2 distinct grades; MAP over the {section['queries_map']} "
        "queries with both relevant and irrelevant items; AUC, F1 and ECE over all pairs. "
        f"95% CIs: {section['bootstrap']['resamples']} bootstrap resamples of queries (seed "
        f"{section['bootstrap']['seed']}).",
        "",
        metrics_table(section),
        "",
    ]
    comp = comparison_table(section)
    if comp:
        out += [
            "Paired differences (same resamples; a CI excluding 0 is a significant difference):",
            "",
            comp,
            "",
        ]
    return out


def write_report(
    out_dir: str | Path, result: dict[str, Any], preds: dict[str, Predictions], labels: np.ndarray
) -> list[Path]:
    """``result``: {"data": ..., "command": ..., "sections": {title: evaluate() output}}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "report.md"]
    written[0].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    data = result["data"]
    md = [
        f"# Relevance evaluation: {data['name']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Data: {data['description']}",
        "",
    ]
    for name, system in next(iter(result["sections"].values()))["systems"].items():
        info = ", ".join(f"{k}: {v}" for k, v in system.get("info", {}).items() if k != "spec")
        md.append(f"- **{name}**: {system['predictions']}" + (f" ({info})" if info else ""))
    md.append("")
    for title, section in result["sections"].items():
        md += _section_md(title, section)
    plots = _plots(out, result, preds, labels)
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    written[1].write_text("\n".join(md), encoding="utf-8")
    return written + plots


def _plots(
    out: Path, result: dict[str, Any], preds: dict[str, Predictions], labels: np.ndarray
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    section = next(iter(result["sections"].values()))
    names = list(section["systems"])
    if len(names) >= 2:
        a, b = names[0], names[1]
        qa = section["systems"][a]["per_query"]["ndcg@10"]
        qb = section["systems"][b]["per_query"]["ndcg@10"]
        queries = sorted(qa, key=lambda q: qa[q] if qa[q] is not None else -1)
        fig, ax = plt.subplots(figsize=(max(6, min(16, 0.12 * len(queries))), 4))
        x = np.arange(len(queries))
        ax.plot(x, [qa[q] for q in queries], "o", ms=4, label=a)
        ax.plot(x, [qb[q] for q in queries], "x", ms=4, label=b)
        ax.set_xlabel(f"query (sorted by {a})")
        ax.set_ylabel("NDCG@10")
        ax.set_title(f"Per-query NDCG@10 ({len(queries)} queries with ≥ 2 grades)")
        ax.legend()
        fig.tight_layout()
        paths.append(out / "per_query_ndcg10.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    relevant = (labels >= 1).astype(int)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    for name, pred in preds.items():
        if pred.p_relevant is None:
            continue
        count, mean_p, rate = calibration_bins(relevant, pred.p_relevant)
        used = count > 0
        ax.plot(mean_p[used], rate[used], "o-", label=name)
    ax.set_xlabel("predicted P(relevant)")
    ax.set_ylabel("observed rate of Exact or Partial")
    ax.set_title("Calibration (10 equal-width bins)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "calibration.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
