"""`relevance frontier`: quality on an evaluation set against served pairs/s, one table and one plot.

Joins what two other commands measured, and measures nothing itself:
- quality: ``relevance eval run`` reports (metrics.json; a system is named ``bundle:FOLDER``), the
  point value and 95 % bootstrap CI of each metric;
- speed: ``relevance bench`` reports (report.json; a bundle is keyed by its path), per bundle the raw
  ONNX path (tokenise + pad + session.run, one request per call), the service over HTTP and Infinity
  on the same weights (its engine as the bench ran it), each at its best measured load level.

A bundle is a row when a bench report has it; its quality cells stay empty where no eval report
scored it (never filled in from elsewhere). Bench figures from different machines are refused: one
table, one machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from distill.eval.report import METRIC_TITLES
from loadtest.runner import best_level

# (metric key, title) of the quality columns, titled as the eval reports title them
QUALITY = tuple((m, METRIC_TITLES[m]) for m in ("ndcg@10", "auc_exact", "auc_relevant"))
SECTION = "All queries"


class FrontierError(ValueError):
    pass


@dataclass
class Row:
    bundle: str  # folder name, as eval reports name it
    kind: str
    layers: int | None
    precision: str
    quality: dict[str, tuple[float, tuple[float, float]] | None]
    raw_pairs_per_s: float | None
    http_pairs_per_s: float | None
    http_load: str | None
    peer_pairs_per_s: float | None
    peer: str | None  # e.g. "Infinity optimum" or why it did not run

    def as_dict(self) -> dict:
        return {
            "bundle": self.bundle,
            "kind": self.kind,
            "layers": self.layers,
            "precision": self.precision,
            "quality": {
                k: (None if v is None else {"value": v[0], "ci95": list(v[1])})
                for k, v in self.quality.items()
            },
            "raw_onnx_pairs_per_s": self.raw_pairs_per_s,
            "http_pairs_per_s": self.http_pairs_per_s,
            "http_load": self.http_load,
            "peer_pairs_per_s": self.peer_pairs_per_s,
            "peer": self.peer,
        }


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FrontierError(f"{path}: no such {what} report") from None
    except json.JSONDecodeError as exc:
        raise FrontierError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None


def quality_by_bundle(eval_reports: list[Path]) -> tuple[dict[str, dict], str]:
    """{bundle folder name: {metric: (value, ci95)}} from eval reports' "All queries" sections, and the
    data they were computed on; FrontierError when two reports are on different data or disagree."""
    quality: dict[str, dict] = {}
    data = None
    for path in eval_reports:
        report = _read(path, "eval")
        try:
            section = report["sections"][SECTION]
            systems = section["systems"]
        except (KeyError, TypeError):
            raise FrontierError(
                f"{path}: no {SECTION!r} section with systems (not an eval run report?)"
            ) from None
        source = report.get("data")
        source = source.get("name") if isinstance(source, dict) else source  # eval run: {"name": ...}
        if data is not None and source != data:
            raise FrontierError(f"{path}: evaluated on {source!r}, the other reports on {data!r}")
        data = source
        for name, system in systems.items():
            if not name.startswith("bundle:"):
                continue
            metrics = system["metrics"]
            row = {m: (metrics[m]["value"], tuple(metrics[m]["ci95"])) for m, _ in QUALITY}
            folder = name.removeprefix("bundle:")
            if folder in quality and quality[folder] != row:
                raise FrontierError(f"{path}: {name} has other figures than in an earlier report")
            quality[folder] = row
    return quality, str(data)


def frontier_rows(eval_reports: list[Path], bench_reports: list[Path]) -> tuple[list[Row], dict]:
    quality, data = quality_by_bundle(eval_reports)
    rows, machine, dates = [], None, set()
    for path in bench_reports:
        bench = _read(path, "bench")
        here = {k: bench["machine"].get(k) for k in ("cpu", "cores")}
        if machine is not None and here != machine:
            raise FrontierError(f"{path}: measured on {here}, the other bench reports on {machine}")
        machine = here
        dates.add(str(bench["machine"].get("date_utc")))
        for bundle, entry in bench["bundles"].items():
            name = Path(bundle).name
            level = best_level(entry.get("sweep", []))
            http, load = (level["pairs_per_s"], level["load"]) if level else (None, None)
            eff = entry.get("efficiency") or {}
            peer, peer_pairs = entry.get("infinity"), None
            if peer is None:
                peer_label = "not run"
            elif "skipped" in peer:
                peer_label = f"not run: {peer['skipped'].splitlines()[0][:120]}"
            else:
                peer_pairs = (best_level(peer["sweep"]) or {}).get("pairs_per_s")
                peer_label = f"Infinity {peer.get('engine', 'torch')}"
            rows.append(
                Row(
                    bundle=name,
                    kind=entry["kind"],
                    layers=eff.get("n_layers"),
                    precision=entry["precision"],
                    quality=quality.get(name, dict.fromkeys(m for m, _ in QUALITY)),
                    raw_pairs_per_s=(eff.get("raw_onnx") or {}).get("pairs_per_s"),
                    http_pairs_per_s=http,
                    http_load=load,
                    peer_pairs_per_s=peer_pairs,
                    peer=peer_label,
                )
            )
    return rows, {"data": data, "machine": machine, "bench_dates_utc": sorted(dates)}


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "–" if value is None else format(value, fmt)


def render_table(rows: list[Row], meta: dict) -> str:
    head = ["bundle", "kind", "layers", "precision", *(label for _, label in QUALITY),
            "raw ONNX pairs/s", "HTTP pairs/s (best level)", "peer pairs/s (best level)"]  # fmt: skip
    out = [
        f"Quality on {meta['data']} ({SECTION.lower()}, 95 % bootstrap CIs over queries); speed on "
        f"{meta['machine']['cpu']}, {meta['machine']['cores']} cores.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 4 + "---|" * len(QUALITY) + "---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for metric, _ in QUALITY:
            q = r.quality.get(metric)
            cells.append("not evaluated" if q is None else f"{q[0]:.3f} [{q[1][0]:.3f}, {q[1][1]:.3f}]")
        peer = f"{_num(r.peer_pairs_per_s)} ({r.peer})" if r.peer_pairs_per_s is not None else (r.peer or "–")
        http = f"{_num(r.http_pairs_per_s)} ({r.http_load})" if r.http_load else "–"
        out.append(
            f"| {r.bundle} | {r.kind} | {r.layers or '?'} | {r.precision} | " + " | ".join(cells)
            + f" | {_num(r.raw_pairs_per_s)} | {http} | {peer} |"
        )  # fmt: skip
    return "\n".join(out) + "\n"


def plot(rows: list[Row], meta: dict, out_path: Path, metric: str = "auc_exact") -> Path | None:
    """Quality (``metric``, with its CI) against HTTP pairs/s; int8 and fp32 marked apart; the peer's
    pairs/s on the same weights as hollow markers at the bundle's quality (its own scores are not
    evaluated: same graph, so the same ranking up to rounding). None when no row has both figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.quality.get(metric) is not None and r.http_pairs_per_s]
    if not points:
        return None
    label = dict(QUALITY)[metric]
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in points:
        value, (lo, hi) = r.quality[metric]
        marker = "o" if r.precision == "fp32" else "s"
        ax.errorbar(r.http_pairs_per_s, value, yerr=[[value - lo], [hi - value]], fmt=marker, capsize=3)
        ax.annotate(f"{r.bundle}", (r.http_pairs_per_s, value), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)  # fmt: skip
        if r.peer_pairs_per_s:
            ax.plot(r.peer_pairs_per_s, value, marker, mfc="none", color="grey")
            ax.plot([r.peer_pairs_per_s, r.http_pairs_per_s], [value, value], ":", color="grey", lw=0.8)
    ax.plot([], [], "o", color="black", label="fp32 (service, HTTP)")
    ax.plot([], [], "s", color="black", label="int8 (service, HTTP)")
    ax.plot([], [], "o", mfc="none", color="grey", label="peer on the same weights (Infinity)")
    ax.set_xlabel(
        f"served pairs/s, best measured load ({meta['machine']['cpu']}, {meta['machine']['cores']} cores)"
    )
    ax.set_ylabel(f"{label} on {meta['data']}")
    ax.set_title("Quality against served throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def write_frontier(
    eval_reports: list[Path], bench_reports: list[Path], out_dir: Path
) -> tuple[str, Path | None]:
    rows, meta = frontier_rows(eval_reports, bench_reports)
    if not rows:
        raise FrontierError("the bench reports hold no bundle")
    table = render_table(rows, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "frontier.md").write_text(table, encoding="utf-8")
    (out_dir / "frontier.json").write_text(
        json.dumps({**meta, "rows": [r.as_dict() for r in rows]}, indent=1) + "\n", encoding="utf-8"
    )
    return table, plot(rows, meta, out_dir / "frontier.png")
