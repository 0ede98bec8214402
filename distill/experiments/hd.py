"""``relevance experiment hd``: the Home Depot distillation chain, from ../shared/data to bundles.

Each step is one ``relevance`` command run as its own process (its progress bar shows), and is
skipped when its output is already there, so a killed or timed-out run resumes where it stopped:

1. transfer set: the train pairs plus, per train query, unjudged top-BM25 and random items
2. the rule CoT (per-dimension verdicts and evidence) for the train pairs: the CoT KD targets
3. teacher rung (a): the 6-layer cross-encoder fine-tuned on the train labels, exported (fp32)
4. teacher records: rung (a)'s grade distribution on every train and transfer pair
5. students, per seed: the 2-layer cross label-only twin; + score-distribution KD on the labelled and
   transfer pairs; full MKD (score KD + CoT KD), each exported (fp32)
6. ``relevance eval run`` on the dev split: zero-shot default, BM25, the teacher and every student
7. ``experiment.json`` (the shape of docs/RESULTS.md: students with kind, role, seed and twin, and the
   teacher spec), then the best MKD student is exported to models/student through the promotion gate
   (full budget only; a refusal is reported, not an error)

Built: teacher rung (a) and the cross students. Not built yet (issue 12): the LLM rung (b), the
ensemble rung (c), the bi students, the KD weight/temperature sweep and the frontier table.
``--budget smoke`` runs the same chain on the bundled ESCI split with a few optimiser steps, so the
recipe is exercised in CI; ``--budget full`` is the real run (not yet timed end to end here).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from core.bundle import MANIFEST_FILE


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


# The full plan is sized for 3 hours on 2 CPU cores from 40-step probes on an AMD EPYC (batch 16):
# a 6-layer cross step ≈ 0.5 s, a 2-layer one ≈ 0.2 s. One teacher epoch over the 45,854 train pairs
# ≈ 25 min; 8 BM25 + 2 random items per train query ≈ 70k transfer pairs for the teacher to label;
# every student gets the optimiser steps of one epoch over the train pairs (2,866), so a KD student
# costs what its label-only twin costs and sees the transfer pairs in their place; 3 seeds × 3
# students ≈ 90 min. An estimate, not a measurement of the whole chain.
ONE_TRAIN_EPOCH_STEPS = 2866
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
        ONE_TRAIN_EPOCH_STEPS,
        (0, 1, 2),
        True,
    ),
    Budget.smoke: Plan("bundled:train", "bundled:dev", 2, 1, 2, 1e-4, 2e-4, 1, 3, 3, (0,), False),
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
    plan: Plan = field(init=False)

    def __post_init__(self) -> None:
        self.plan = PLANS[self.budget]
        tag = "hd" if self.budget is Budget.full else "hd-smoke"
        self.runs = self.root / "runs" / tag
        self.models = self.root / "models" / "students"
        self.report = self.root / "reports" / "experiments" / tag
        self.prefix = tag

    def bundle(self, name: str) -> Path:
        return self.models / f"{self.prefix}-{name}"

    def student_names(self, seed: int) -> dict[str, str]:
        return {v: f"cross2-{v}-s{seed}" for v in ("label", "score-kd", "mkd")}

    def steps(self) -> list[Step]:
        p, runs = self.plan, self.runs
        transfer, cot, records = (
            runs / "transfer.jsonl",
            runs / "rule-cot-train.jsonl",
            runs / "teacher-a.jsonl",
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
        teacher = self.bundle("teacher-cross6")
        steps += self._train_and_export("teacher-cross6", teacher, p.teacher_max_steps, [
            "--kind", "cross", "--layers", str(p.teacher_layers), "--lr", str(p.teacher_lr), "--train", p.train])  # fmt: skip
        steps.append(Step("teacher records on train + transfer pairs", records.with_name(records.name + ".done"), [
            "teacher", "annotate", "-i", str(transfer), "-o", str(records), "--teacher", f"bundle:{teacher}",
            "--mode", "score", "--concurrency", "32", "--summary", str(records.with_name(records.name + ".done"))]))  # fmt: skip
        for seed in p.seeds:
            names = self.student_names(seed)
            common = ["--kind", "cross", "--layers", "2", "--lr", str(p.student_lr), "--seed", str(seed)]
            steps += self._train_and_export(
                names["label"],
                self.bundle(names["label"]),
                p.student_max_steps,
                [*common, "--train", p.train],
            )
            steps += self._train_and_export(names["score-kd"], self.bundle(names["score-kd"]), p.student_max_steps, [
                *common, "--train", str(transfer), "--teacher-scores", str(records), "--w-score-kd", "1"])  # fmt: skip
            steps += self._train_and_export(names["mkd"], self.bundle(names["mkd"]), p.student_max_steps, [
                *common, "--train", str(transfer), "--teacher-scores", str(records), "--w-score-kd", "1",
                "--teacher-cot", str(cot), "--w-cot", "0.5"])  # fmt: skip
        systems = ["bundle:models/minilm-zero-shot-bi", "bm25", f"bundle:{teacher}"]
        systems += [f"bundle:{self.bundle(n)}" for seed in p.seeds for n in self.student_names(seed).values()]
        eval_dir = self.report / "eval-dev"
        steps.append(Step("eval on dev", eval_dir / "metrics.json", [
            "eval", "run", "--data", p.dev, "--out", str(eval_dir), *[a for s in systems for a in ("--system", s)]]))  # fmt: skip
        return steps

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
                ["student", "export", str(run), "--out", str(bundle), "--precision", "fp32", "--dev", p.dev],
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
            {"path": str(self.bundle(self.student_names(s)["score-kd"])), "kind": "cross", "role": "score-kd",
             "seed": s, "twin": str(self.bundle(self.student_names(s)["label"]))}
            for s in self.plan.seeds
        ]  # fmt: skip
        return {"budget": str(self.budget), "students": students, "ablations": ablations,
                "teacher": {"spec": f"bundle:{self.bundle('teacher-cross6')}"}}  # fmt: skip


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
