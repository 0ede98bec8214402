"""``relevance experiment hd``: the Home Depot distillation chain, from ../shared/data to bundles.

Each step is one ``relevance`` command run as its own process (its progress bar shows), and is
skipped when its output is already there, so a killed or timed-out run resumes where it stopped:

1. transfer set: the train pairs plus, per train query, unjudged top-BM25 and random items
2. the rule CoT (per-dimension verdicts and evidence) for the train pairs: the CoT KD targets
3. a held-out fold of the train queries (``relevance data holdout``, 1 in 5)
4. teacher rung (a): the 6-layer cross-encoder fine-tuned on the other four folds, exported (fp32)
5. teacher rung (c): the ensemble head over (a), the zero-shot bi-encoder, BM25 and the rule CoT
   verdicts, fitted on the held-out fold (distill/teacher/ensemble.py); the shipped teacher, fixed
   before any dev number is seen
6. teacher records: rung (c)'s grade distribution on every train and transfer pair
7. students, per seed: the 2-layer cross label-only twin (from all-MiniLM-L6-v2); + score-distribution
   KD on the labelled and transfer pairs; full MKD (score KD + CoT KD), both warm-started from the
   teacher's first two layers; then seed 0's label-only student with that warm start (the ablation
   that tells the warm start from KD); each exported (fp32)
8. ``relevance eval run`` on the dev split, then on CrowdFlower dev and bundled ESCI dev (the transfer
   checks): zero-shot default, BM25, both teacher rungs and every student
9. ``experiment.json`` (the shape of docs/RESULTS.md: students with kind, role, seed and twin, and the
   teacher spec), then the best MKD student is exported to models/student through the promotion gate
   (full budget only; a refusal is reported, not an error)

Not built yet (issue 12): the LLM rung (b), the bi students, the KD weight/temperature sweep and the
frontier table.
``--budget smoke`` runs the same chain on the bundled ESCI split with a few optimiser steps, so the
recipe is exercised in CI; ``--budget full`` is the real run (not yet timed end to end here).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from core.bundle import MANIFEST_FILE
from distill.teacher.ensemble import ENSEMBLE_FILE
from service.settings import DEFAULT_BUNDLE


class Budget(StrEnum):
    smoke = "smoke"
    full = "full"


@dataclass(frozen=True)
class Plan:
    train: str
    dev: str
    per_query: int
    random_per_query: int
    teacher_layers: int
    teacher_lr: float
    student_lr: float
    epochs: int
    teacher_max_steps: int | None  # None: whole epochs
    student_max_steps: int | None
    seeds: tuple[int, ...]
    promote: bool
    transfer_checks: tuple[
        tuple[str, str], ...
    ]  # (label, dataset): other sources the same bundles are evaluated on


# The full plan is sized for 3 hours on 2 CPU cores (AMD EPYC, batch 16): a 6-layer cross step took
# 0.55–0.61 s, a 2-layer one ≈ 0.2 s. The teacher trains one epoch on four of five train folds
# (2,295 steps, 1,839 s measured); the ensemble labels the 45,854 train + 71,102 transfer pairs
# (8 BM25 + 2 random items per train query) at about 100 pairs/s (≈ 20 min: two 6-layer members);
# every student gets the same 2,000 optimiser steps (32,000 examples, 0.7 of an epoch over the train
# pairs; ≈ 7 min), so a KD student costs what its label-only twin costs and sees transfer pairs in
# place of some train pairs; 3 seeds × 3 students + the ablation ≈ 75 min.
STUDENT_STEPS = 2000
# The export's parity gates (ONNX vs PyTorch) run on the bundled dev split: a 6-layer export checked
# on all 12,408 Home Depot dev pairs took 148 s, and the eval steps score every bundle there anyway.
EXPORT_CHECK_DATA = "bundled:dev"
PLANS: dict[Budget, Plan] = {
    Budget.full: Plan(
        "home-depot:train",
        "home-depot:dev",
        8,
        2,
        6,
        1e-4,
        2e-4,
        1,
        None,
        STUDENT_STEPS,
        (0, 1, 2),
        True,
        (("crowdflower-dev", "crowdflower:dev"), ("bundled-dev", "bundled:dev")),
    ),
    Budget.smoke: Plan("bundled:train", "bundled:dev", 2, 1, 2, 1e-4, 2e-4, 1, 3, 3, (0,), False, ()),
}


@dataclass
class Step:
    name: str
    done: Path | None  # skipped when this file exists; None: always run (the command skips its own work)
    argv: list[str]


@dataclass
class Experiment:
    root: Path  # runs/, models/ and reports/ are created below it
    budget: Budget
    seeds: tuple[int, ...] | None = None  # None: the plan's
    plan: Plan = field(init=False)

    def __post_init__(self) -> None:
        self.plan = PLANS[self.budget]
        if self.seeds is not None:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
            self.plan = replace(self.plan, seeds=tuple(self.seeds))
        tag = "hd" if self.budget is Budget.full else "hd-smoke"
        self.runs = self.root / "runs" / tag
        self.models = self.root / "models" / "students"
        self.report = self.root / "reports" / "experiments" / tag
        self.prefix = tag

    def bundle(self, name: str) -> Path:
        return self.models / f"{self.prefix}-{name}"

    @property
    def ensemble_dir(self) -> Path:
        return self.root / "models" / "teachers" / f"{self.prefix}-ensemble"

    @property
    def teacher_spec(self) -> str:
        """The shipped teacher: rung (c), chosen before any dev number (it has rung (a) as a feature)."""
        return f"ensemble:{self.ensemble_dir}"

    def student_names(self, seed: int) -> dict[str, str]:
        """Run (and bundle) names of a seed's students; the warm-started label-only ablation is seed 0's only."""
        variants = ["label", "score-kd", "mkd"] + (["label-warm"] if seed == self.plan.seeds[0] else [])
        return {v: f"cross2-{v}-s{seed}" for v in variants}

    def steps(self) -> list[Step]:
        p, runs = self.plan, self.runs
        transfer, cot, records = (
            runs / "transfer.jsonl",
            runs / "rule-cot-train.jsonl",
            runs / "teacher-c.jsonl",
        )
        steps = [
            # Always run: transfer-set itself skips when OUTPUT was built with these options and rebuilds
            # one built with others (a marker file alone would keep a stale set).
            Step(
                "transfer set",
                None,
                [
                    "data",
                    "transfer-set",
                    "-i",
                    p.train,
                    "-o",
                    str(transfer),
                    "--per-query",
                    str(p.per_query),
                    "--random-per-query",
                    str(p.random_per_query),
                ],
            ),  # fmt: skip
            Step(
                "rule CoT of the train pairs",
                cot,
                ["teacher", "bootstrap-cot", "-i", p.train, "-o", str(cot)],
            ),
        ]
        fit, holdout = runs / "train-fit.jsonl", runs / "train-holdout.jsonl"
        steps.append(Step("hold out a fold of the train queries for the ensemble head", holdout, [
            "data", "holdout", "-i", p.train, "--fit", str(fit), "--holdout", str(holdout)]))  # fmt: skip
        teacher = self.bundle("teacher-cross6")
        steps += self._train_and_export("teacher-cross6", teacher, p.teacher_max_steps, [
            "--kind", "cross", "--layers", str(p.teacher_layers), "--lr", str(p.teacher_lr), "--train", str(fit)])  # fmt: skip
        ensemble = self.ensemble_dir
        steps.append(Step("teacher rung (c): fit the ensemble head on the held-out fold", ensemble / ENSEMBLE_FILE, [
            "teacher", "ensemble-fit", "--out", str(ensemble), "--cross", f"bundle:{teacher}",
            "--bi", f"bundle:{DEFAULT_BUNDLE}", "--data", str(holdout), "--catalogue", p.train]))  # fmt: skip
        steps.append(Step("teacher records on train + transfer pairs", records.with_name(records.name + ".done"), [
            "teacher", "annotate", "-i", str(transfer), "-o", str(records), "--teacher", self.teacher_spec,
            "--mode", "score", "--concurrency", "32", "--summary", str(records.with_name(records.name + ".done"))]))  # fmt: skip
        # The KD students start from the teacher's own first two layers, embeddings and head (a warm
        # start, the same bottom-layer truncation as the MiniLM start); the label-only twin starts from
        # all-MiniLM-L6-v2, as a user without a teacher would. "label-warm" (seed 0) is the label-only
        # student with the teacher's warm start: it separates what the warm start gives from what KD gives.
        warm = ["--init-from", str(self.runs / "teacher-cross6")]
        kd = ["--train", str(transfer), "--teacher-scores", str(records), "--w-score-kd", "1"]
        options = {
            "label": ["--train", p.train],
            "score-kd": [*warm, *kd],
            "mkd": [*warm, *kd, "--teacher-cot", str(cot), "--w-cot", "0.5"],
            "label-warm": [*warm, "--train", p.train],
        }

        def train(seed: int, variant: str, name: str) -> list[Step]:
            common = ["--kind", "cross", "--layers", "2", "--lr", str(p.student_lr), "--seed", str(seed)]
            return self._train_and_export(
                name, self.bundle(name), p.student_max_steps, [*common, *options[variant]]
            )

        # The main students and their evaluation first, the ablation after: a run cut short has the
        # comparisons the issue asks for.
        main = [(s, v, n) for s in p.seeds for v, n in self.student_names(s).items() if v != "label-warm"]
        for seed, variant, name in main:
            steps += train(seed, variant, name)
        systems = [f"bundle:{DEFAULT_BUNDLE}", "bm25", f"bundle:{teacher}", self.teacher_spec]
        systems += [f"bundle:{self.bundle(name)}" for _, _, name in main]
        # Besides every system against the zero-shot default: rung (c) against rung (a), and per seed
        # each KD student against its twin and full MKD against score KD alone.
        compare = [(self.teacher_spec, f"bundle:{teacher}")]
        for seed in p.seeds:
            spec = {v: f"bundle:{self.bundle(n)}" for v, n in self.student_names(seed).items()}
            compare += [
                (spec["mkd"], spec["label"]),
                (spec["score-kd"], spec["label"]),
                (spec["mkd"], spec["score-kd"]),
            ]
        for label, data in (("dev", p.dev), *p.transfer_checks):
            steps.append(self._eval(label, data, systems, compare))
        ablation = {v: f"bundle:{self.bundle(n)}" for v, n in self.student_names(p.seeds[0]).items()}
        steps += train(p.seeds[0], "label-warm", self.student_names(p.seeds[0])["label-warm"])
        steps.append(self._eval("dev-warm-start", p.dev, [ablation[v] for v in ("label", "label-warm", "score-kd", "mkd")],
                                [(ablation["score-kd"], ablation["label-warm"]), (ablation["mkd"], ablation["label-warm"])]))  # fmt: skip
        return steps

    def _eval(self, label: str, data: str, systems: list[str], compare: list[tuple[str, str]]) -> Step:
        eval_dir = self.report / f"eval-{label}"
        return Step(f"eval on {data} ({label})", eval_dir / "metrics.json", [
            "eval", "run", "--data", data, "--out", str(eval_dir), "--slice", "long-tail",
            *(a for s in systems for a in ("--system", s)), *(a for c in compare for a in ("--compare", ",".join(c)))])  # fmt: skip

    def _train_and_export(
        self, name: str, bundle: Path, max_steps: int | None, options: list[str]
    ) -> list[Step]:
        p, run = self.plan, self.runs / name
        limits = ["--epochs", str(p.epochs)] + (["--max-steps", str(max_steps)] if max_steps else [])
        return [
            Step(
                f"train {name}",
                run / "metrics.json",
                [
                    "student",
                    "train",
                    "--name",
                    name,
                    "--runs-dir",
                    str(self.runs),
                    "--dev",
                    p.dev,
                    "--select-metric",
                    "auc",
                    *limits,
                    *options,
                ],
            ),  # fmt: skip
            Step(
                f"export {name}",
                bundle / MANIFEST_FILE,
                [
                    "student",
                    "export",
                    str(run),
                    "--out",
                    str(bundle),
                    "--precision",
                    "fp32",
                    "--dev",
                    EXPORT_CHECK_DATA,
                ],
            ),  # fmt: skip
        ]

    def manifest(self) -> dict:
        """experiment.json: the students (label-only twins and full-MKD students) and the teacher spec."""
        students = []
        for seed in self.plan.seeds:
            names = self.student_names(seed)
            twin = str(self.bundle(names["label"]))
            students.append({"path": twin, "kind": "cross", "role": "label-only", "seed": seed, "twin": None})
            students.append({"path": str(self.bundle(names["mkd"])), "kind": "cross", "role": "mkd",
                             "seed": seed, "twin": twin})  # fmt: skip
        ablations = [
            {"path": str(self.bundle(name)), "kind": "cross", "role": variant, "seed": s,
             "twin": str(self.bundle(self.student_names(s)["label"]))}
            for s in self.plan.seeds
            for variant, name in self.student_names(s).items()
            if variant in ("score-kd", "label-warm")
        ]  # fmt: skip
        return {"budget": str(self.budget), "students": students, "ablations": ablations,
                "teacher": {"spec": self.teacher_spec, "rungs": {"a": f"bundle:{self.bundle('teacher-cross6')}",
                                                               "c": self.teacher_spec}}}  # fmt: skip


def run_experiment(experiment: Experiment, *, echo=print) -> dict:
    """Run every step not yet done, in order; raises RuntimeError naming the step that failed."""
    relevance = str(Path(sys.executable).with_name("relevance"))
    steps = experiment.steps()
    for n, step in enumerate(steps, start=1):
        head = f"[{n}/{len(steps)}] {step.name}"
        if step.done is not None and step.done.exists():
            echo(f"{head}: already there ({step.done}), skipped")
            continue
        echo(f"{head}: relevance {shlex.join(step.argv)}")
        started = time.monotonic()
        code = subprocess.run([relevance, *step.argv], check=False).returncode
        if code != 0:
            raise RuntimeError(f"{head} failed (exit {code}); rerun to resume from this step")
        echo(f"{head}: done in {time.monotonic() - started:.0f} s")
    manifest = experiment.manifest()
    experiment.report.mkdir(parents=True, exist_ok=True)
    path = experiment.report / "experiment.json"
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    echo(f"wrote {path}")
    summary = experiment.report / "summary.md"
    summary.write_text(summarise(experiment), encoding="utf-8")
    echo(f"wrote {summary}")
    if experiment.plan.promote:
        _promote_best(experiment, manifest, relevance, echo)
    return manifest


def _promote_best(experiment: Experiment, manifest: dict, relevance: str, echo) -> None:
    """Export the MKD student with the best dev AUC (Exact vs the rest) to models/student, gated."""
    metrics = json.loads((experiment.report / "eval-dev" / "metrics.json").read_text(encoding="utf-8"))
    systems = metrics["sections"]["All queries"]["systems"]
    auc = {name: s["metrics"]["auc_exact"]["value"] for name, s in systems.items()}
    mkd = [s["path"] for s in manifest["students"] if s["role"] == "mkd"]
    best = max(mkd, key=lambda path: auc.get(f"bundle:{Path(path).name}", float("-inf")))
    run = experiment.runs / Path(best).name.removeprefix(f"{experiment.prefix}-")
    argv = ["student", "export", str(run), "--out", "models/student", "--precision", "fp32",
            "--dev", experiment.plan.dev, "--gate", experiment.plan.dev]  # fmt: skip
    echo(f"promote {best}: relevance {shlex.join(argv)}")
    code = subprocess.run([relevance, *argv], check=False, cwd=experiment.root).returncode
    echo("promoted to models/student" if code == 0 else "not promoted (the gate's numbers are above)")


def _section(path: Path, title: str = "All queries") -> dict | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["sections"].get(title)


def _diff(section: dict, a: str, b: str, metric: str) -> str:
    for c in section["comparisons"]:
        if (c["a"], c["b"]) == (a, b):
            d = c["metrics"][metric]
            lo, hi = d["ci95"]
            return "n/a" if d["diff"] is None else f"{d['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    return "not compared"


def summarise(experiment: Experiment) -> str:
    """The issue's checks in Markdown, computed from the eval reports that exist: the shipped teacher
    against rung (a) and the zero-shot default; per seed, the share of the twin-to-teacher gap on dev
    AUC Exact-vs-rest that full MKD closes, and its paired differences with the twin and score KD."""
    teacher_a = f"bundle:{experiment.prefix}-teacher-cross6"
    teacher_c = f"ensemble:{experiment.ensemble_dir.name}"
    default = f"bundle:{DEFAULT_BUNDLE.name}"
    metrics = ("auc_exact", "auc_relevant", "ndcg@10")
    out = [f"# {experiment.prefix}: the issue's checks (computed from {experiment.report})", ""]
    for label, title in (("dev", "All queries"), ("dev", "Long-tail queries"), ("crowdflower-dev", "All queries"),
                         ("bundled-dev", "All queries")):  # fmt: skip
        section = _section(experiment.report / f"eval-{label}" / "metrics.json", title)
        if section is None:
            out += [f"## eval-{label}, {title}: not evaluated", ""]
            continue
        systems = section["systems"]

        def value(system: str, metric: str, systems=systems) -> float | None:
            return systems[system]["metrics"][metric]["value"] if system in systems else None

        out += [f"## eval-{label}, {title} ({section['pairs']} pairs, {section['queries']} queries)", ""]
        out += ["| a − b | AUC E-vs-rest | AUC EP-vs-I | NDCG@10 |", "|---|---|---|---|"]
        rows = [(teacher_c, default), (teacher_c, teacher_a), (teacher_a, default)]
        for seed in experiment.plan.seeds:
            s = {v: f"bundle:{experiment.prefix}-{n}" for v, n in experiment.student_names(seed).items()}
            rows += [
                (s["mkd"], s["label"]),
                (s["score-kd"], s["label"]),
                (s["mkd"], s["score-kd"]),
                (s["mkd"], default),
            ]
        for a, b in rows:
            out.append(f"| {a} − {b} | " + " | ".join(_diff(section, a, b, m) for m in metrics) + " |")
        out += ["", "| seed | twin | score KD | full MKD | teacher (c) | gap closed by MKD (AUC E-vs-rest) |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for seed in experiment.plan.seeds:
            s = {v: f"bundle:{experiment.prefix}-{n}" for v, n in experiment.student_names(seed).items()}
            twin, kd, mkd, top = (
                value(x, "auc_exact") for x in (s["label"], s["score-kd"], s["mkd"], teacher_c)
            )
            if None in (twin, kd, mkd, top):
                out.append(f"| {seed} | not all evaluated | | | | |")
                continue
            gap = (mkd - twin) / (top - twin) if top != twin else float("nan")
            out.append(f"| {seed} | {twin:.3f} | {kd:.3f} | {mkd:.3f} | {top:.3f} | {gap:.0%} |")
        out.append("")
    return "\n".join(out) + "\n"
