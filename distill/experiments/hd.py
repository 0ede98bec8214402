"""``relevance experiment hd``: the Home Depot distillation chain, from ../shared/data to bundles.

Each step is one ``relevance`` command run as its own process (its progress bar shows), and is
skipped when its output is already there (an evaluation's: a report that scored every system asked
for), so a killed or timed-out run resumes where it stopped:

1. transfer set: the train pairs plus, per train query, unjudged top-BM25 and random items
2. the rule CoT (per-dimension verdicts and evidence) for the train pairs: the CoT KD targets
3. a held-out fold of the train queries (``relevance data holdout``, 1 in 5)
4. teacher rung (a): the 6-layer cross-encoder fine-tuned on the other four folds, exported (fp32)
5. teacher rung (c): the ensemble head over (a), the zero-shot bi-encoder, BM25 and the rule CoT
   verdicts, fitted on the held-out fold (distill/teacher/ensemble.py); the shipped teacher, fixed
   before any dev number is seen
6. teacher records: rung (c)'s grade distribution on every train and transfer pair
7. ``relevance eval run`` of the baselines and teachers (zero-shot default, BM25, both rungs) on the
   dev split, then on CrowdFlower dev and bundled ESCI dev (the transfer checks)
8. students, per family (``--students``) and seed: the label-only twin; + score-distribution KD on the
   labelled and transfer pairs; full MKD (score KD + CoT KD); each exported (fp32). Families:
   ``cross2``, the 2-layer cross-encoder: the twin starts from all-MiniLM-L6-v2's first two layers,
   the KD students from the teacher's (a warm start), and seed 0 adds the label-only student with
   that warm start (the ablation that tells the warm start from KD); ``bi6``, the 6-layer
   bi-encoder at the zero-shot default's serving cost: every variant starts from all-MiniLM-L6-v2,
   the default's own weights, so it keeps what the default knows
9. per family, the same evaluations of the family's students next to the default and BM25
10. ``experiment.json`` (the shape of docs/RESULTS.md: students with kind, role, seed and twin, and the
   teacher spec), then the best MKD student is exported to models/student through the promotion gate
   (full budget only; a refusal is reported, not an error)

``--sweep`` runs, in place of steps 7–10, the KD weight/temperature sweep: full-MKD students of the
first seed with one knob moved at a time from the chain's setting (``SWEEP_FACTORS``), next to the
chain's MKD student, evaluated paired on the dev split (``eval-dev-sweep-FAMILY``).

The frontier (quality against served pairs/s) is two other commands' join: ``relevance bench`` on the
chain's bundles and their int8 copies, then ``relevance frontier`` (docs/RESULTS.md). Not built yet
(issue 12): the LLM rung (b) (its GPU recipe is distill/teacher/gpu/).
``--budget smoke`` runs the same chain on the bundled ESCI split with a few optimiser steps, so the
recipe is exercised in CI; ``--budget full`` is the real run (not yet run end to end in one go here:
see the sizing below).
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from core.bundle import MANIFEST_FILE
from distill.students.config import TrainConfig
from distill.teacher.ensemble import ENSEMBLE_FILE
from service.settings import DEFAULT_BUNDLE


class Budget(StrEnum):
    smoke = "smoke"
    full = "full"


@dataclass(frozen=True)
class Family:
    """One student architecture of the chain: its twin, score-KD and full-MKD students share it."""

    name: str  # run and bundle names start with it: cross2-mkd-s0
    kind: str  # cross | bi
    layers: int
    lr: float
    warm_start: bool  # the KD students start from the teacher's run (cross only: same architecture)


# cross2: the 2-layer cross-encoder, a third of the teacher's cost per pair, at the rate that trained
# the earlier 2-layer rounds. bi6: the default's own architecture and weights fine-tuned at the
# teacher's 6-layer rate (both rates fixed before the Home Depot runs, not tuned on dev).
FAMILIES: dict[str, Family] = {
    f.name: f for f in (Family("cross2", "cross", 2, 2e-4, True), Family("bi6", "bi", 6, 1e-4, False))
}


def check_kd(kd: tuple[float, float]) -> None:
    """ValueError unless ``kd`` is a (score-KD weight, temperature) pair, both > 0."""
    if len(kd) != 2 or min(kd) <= 0:
        raise ValueError(f"the score-KD weight and temperature must both be > 0, got {kd}")


def check_variants(variants: tuple[str, ...]) -> None:
    """ValueError unless ``variants`` are distinct names from VARIANTS, the twin ("label") among them."""
    if (
        any(v not in VARIANTS for v in variants)
        or len(set(variants)) != len(variants)
        or "label" not in variants
    ):
        raise ValueError(
            f"distinct names from {', '.join(VARIANTS)}, label among them; got {','.join(variants)}"
        )


def check_student_steps(steps: int) -> None:
    """ValueError unless ``steps`` is a positive number of optimiser steps."""
    if steps < 1:
        raise ValueError(f"the students' optimiser steps must be at least 1, got {steps}")


def check_families(names: tuple[str, ...]) -> None:
    """ValueError unless ``names`` are distinct family names, at least one."""
    if not names or any(n not in FAMILIES for n in names) or len(set(names)) != len(names):
        raise ValueError(f"distinct names from {', '.join(FAMILIES)}, at least one; got {','.join(names)}")


@dataclass(frozen=True)
class Plan:
    train: str
    dev: str
    per_query: int
    random_per_query: int
    teacher_layers: int
    teacher_lr: float
    epochs: int
    teacher_max_steps: int | None  # None: whole epochs
    student_max_steps: int | None
    seeds: tuple[int, ...]
    promote: bool
    transfer_checks: tuple[
        tuple[str, str], ...
    ]  # (label, dataset): other sources the same bundles are evaluated on
    student_layers: int | None = None  # None: each family's own depth; smoke: fewer, for time
    train_pairs: int = 45_854  # labelled pairs of ``train``: the twin's epoch, the shortest of a seed's

    def student_epochs(self) -> int:
        """Epochs a student's ``--max-steps`` needs. The trainer stops at whichever of --epochs and
        --max-steps comes first, and a twin's epoch (train pairs only) is the shortest of a seed's
        students, so a twin given more steps than one epoch holds gets the epochs they need; the KD
        students, with the transfer pairs as well, stop at the same step count within their first epoch."""
        if self.student_max_steps is None:
            return self.epochs
        batch = TrainConfig.model_fields["batch_size"].default  # the chain passes no --batch-size
        return max(self.epochs, math.ceil(self.student_max_steps * batch / self.train_pairs))


# The full plan is sized for 3 hours on 2 CPU cores (AMD EPYC, batch 16): a 6-layer cross step took
# 0.55–0.61 s, a 2-layer one ≈ 0.2 s. The teacher trains one epoch on four of five train folds
# (2,295 steps, 1,839 s measured); the ensemble labels the 45,854 train + 71,102 transfer pairs
# (8 BM25 + 2 random items per train query) at 157 pairs/s with the batched path (749 s measured
# 2026-12-03; two members, one 6-layer cross pass and one bi pass per pair);
# every student gets the same 2,000 optimiser steps (32,000 examples, 0.7 of an epoch over the train
# pairs; ≈ 7 min), so a KD student costs what its label-only twin costs and sees transfer pairs in
# place of some train pairs; 3 seeds × 3 students + the ablation ≈ 75 min. A bi6 student's step costs
# what a 6-layer cross step does (0.5–0.6 s: one 6-layer pass over the item, a short one over the
# query): 1,296 s for 2,000 steps, so the bi6 family adds ≈ 20 min per student, 3 hours for 3 seeds on
# top of the rest. The full chain with both families and 3 seeds is therefore two sessions' work here
# (every step resumes): ``--students`` and ``--seeds`` choose what one session runs.
STUDENT_STEPS = 2000
# The chain's score-KD setting, (--w-score-kd, --temperature): weight 3, T = 2, chosen on Home Depot
# dev by the first sweep (2026-12-03, docs/RESULTS.md), which moved one knob at a time around the
# trainer's defaults, weight 1 and T = 2 (``relevance experiment hd --sweep --kd-weight 1``
# reruns that round).
KD_CHOSEN = (3.0, 2.0)
# The sweep around the chain's setting, one knob at a time, as factors of (weight, T): the weight at
# three times, T at twice and half, the weight at about a third (against the hard label's weight of 1
# and the CoT term's 0.5). In the order the first round ranked them (best first), so a round cut
# short has trained the likeliest gains.
SWEEP_FACTORS: tuple[tuple[float, float], ...] = ((3.0, 1.0), (1.0, 2.0), (1.0, 0.5), (0.3, 1.0))
KD_VARIANTS = ("score-kd", "mkd")  # the students whose run names carry their score-KD setting
# Every student a seed can have: the label-only twin, full MKD, score KD alone, and (first seed,
# warm-started families) the label-only student with the warm start. ``--variants`` picks some; the
# twin is always among them, since every KD student is measured against it.
VARIANTS = ("label", "mkd", "score-kd", "label-warm")
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
        1,
        None,
        STUDENT_STEPS,
        (0, 1, 2),
        True,
        (("crowdflower-dev", "crowdflower:dev"), ("bundled-dev", "bundled:dev")),
    ),
    Budget.smoke: Plan(
        "bundled:train",
        "bundled:dev",
        2,
        1,
        2,
        1e-4,
        1,
        3,
        3,
        (0,),
        False,
        (),
        student_layers=2,
        train_pairs=854,
    ),
}


@dataclass
class Step:
    name: str
    done: Path | None  # skipped when this file exists; None: always run (the command skips its own work)
    argv: list[str]
    # An eval step's systems (specs): its report counts as done only if it scored every one of them, so
    # a rerun with more seeds re-evaluates instead of keeping a report that lacks them.
    systems: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """What keeps the step from counting as done: its output file, or systems its report lacks."""
        if self.done is None or not self.done.exists():
            return [str(self.done)] if self.done is not None else ["(always runs)"]
        if not self.systems:
            return []
        sections = json.loads(self.done.read_text(encoding="utf-8")).get("sections", {})
        scored = {
            s.get("info", {}).get("spec")
            for section in sections.values()
            for s in section["systems"].values()
        }
        return [spec for spec in self.systems if spec not in scored]


@dataclass
class Experiment:
    root: Path  # runs/, models/ and reports/ are created below it
    budget: Budget
    seeds: tuple[int, ...] | None = None  # None: the plan's
    families: tuple[str, ...] = tuple(FAMILIES)  # student families, in training order
    sweep: bool = False  # the KD weight/temperature sweep in place of the students and evaluations
    kd: tuple[float, float] = KD_CHOSEN  # (score-KD weight, temperature) of the KD students
    student_steps: int | None = None  # optimiser steps of every student; None: the plan's
    variants: tuple[str, ...] = VARIANTS  # which students each seed gets (the twin always)
    plan: Plan = field(init=False)

    def __post_init__(self) -> None:
        self.plan = PLANS[self.budget]
        if self.seeds is not None:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
            self.plan = replace(self.plan, seeds=tuple(self.seeds))
        check_families(self.families)
        check_kd(self.kd)
        check_variants(self.variants)
        # Students trained for other than the plan's steps carry them in their names (cross2-label-n6000-s0),
        # twins included: a twin gets its KD students' steps, and a rerun never reuses the plan's bundles.
        self.steps_tag = ""
        if self.student_steps is not None:
            check_student_steps(self.student_steps)
            if self.student_steps != self.plan.student_max_steps:
                self.plan = replace(self.plan, student_max_steps=self.student_steps)
                self.steps_tag = f"-n{self.student_steps}"
        tag = "hd" if self.budget is Budget.full else "hd-smoke"
        self.runs = self.root / "runs" / tag
        self.models = self.root / "models" / "students"
        self.report = self.root / "reports" / "experiments" / tag
        self.prefix = tag

    def bundle(self, name: str) -> Path:
        return self.models / f"{self.prefix}-{name}"

    def spec(self, name: str) -> str:
        """How eval reports name a student bundle of this chain."""
        return f"bundle:{self.bundle(name)}"

    @property
    def ensemble_dir(self) -> Path:
        return self.root / "models" / "teachers" / f"{self.prefix}-ensemble"

    @property
    def teacher_spec(self) -> str:
        """The shipped teacher: rung (c), chosen before any dev number (it has rung (a) as a feature)."""
        return f"ensemble:{self.ensemble_dir}"

    @property
    def rung_a(self) -> Path:
        return self.bundle("teacher-cross6")

    def student_names(self, seed: int, family: str) -> dict[str, str]:
        """Run (and bundle) names of a seed's students of one family; the warm-started label-only
        ablation is the first seed's only, and only where the KD students are warm-started. KD
        students' names carry their setting (cross2-mkd-w3-t2-s0), so a rerun with another setting
        trains new students instead of reusing these."""
        ablation = FAMILIES[family].warm_start and seed == self.plan.seeds[0]
        variants = [v for v in VARIANTS if v in self.variants and (v != "label-warm" or ablation)]
        return {
            v: _run_name(family, v, seed, self.kd if v in KD_VARIANTS else None, self.steps_tag)
            for v in variants
        }

    def sweep_names(self, family: str) -> dict[tuple[float, float], str]:
        """Run names of the sweep's full-MKD students (first seed), by (weight, temperature); the
        chain's own MKD student is the sweep's centre."""
        seed, (weight, temperature) = self.plan.seeds[0], self.kd
        settings = [self.kd] + [
            (round(weight * fw, 6), round(temperature * ft, 6)) for fw, ft in SWEEP_FACTORS
        ]
        return {setting: _run_name(family, "mkd", seed, setting, self.steps_tag) for setting in settings}

    def eval_dir(self, label: str, family: str | None = None) -> Path:
        """eval-LABEL: the baselines and teachers; eval-LABEL-FAMILY: a family's students, and with the
        KD setting and student steps where they are not the chain's defaults (eval-dev-cross2-w9-t2-n6000),
        so a round with other settings writes its own reports beside the earlier round's."""
        if family is None:
            return self.report / f"eval-{label}"
        setting = "" if self.kd == KD_CHOSEN else f"-w{self.kd[0]:g}-t{self.kd[1]:g}"
        return self.report / f"eval-{label}-{family}{setting}{self.steps_tag}"

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
        teacher = self.rung_a
        steps += self._train_and_export("teacher-cross6", teacher, p.teacher_max_steps, [
            "--kind", "cross", "--layers", str(p.teacher_layers), "--lr", str(p.teacher_lr), "--train", str(fit)])  # fmt: skip
        ensemble = self.ensemble_dir
        steps.append(Step("teacher rung (c): fit the ensemble head on the held-out fold", ensemble / ENSEMBLE_FILE, [
            "teacher", "ensemble-fit", "--out", str(ensemble), "--cross", f"bundle:{teacher}",
            "--bi", f"bundle:{DEFAULT_BUNDLE}", "--data", str(holdout), "--catalogue", p.train]))  # fmt: skip
        steps.append(Step("teacher records on train + transfer pairs", records.with_name(records.name + ".done"), [
            "teacher", "annotate", "-i", str(transfer), "-o", str(records), "--teacher", self.teacher_spec,
            "--mode", "score", "--concurrency", "32", "--summary", str(records.with_name(records.name + ".done"))]))  # fmt: skip
        default = f"bundle:{DEFAULT_BUNDLE}"
        teachers = [default, "bm25", f"bundle:{teacher}", self.teacher_spec]
        teacher_compare = [(self.teacher_spec, f"bundle:{teacher}")]
        if not self.sweep:
            for label, data in (("dev", p.dev), *p.transfer_checks):
                steps.append(self._eval(self.eval_dir(label), data, teachers, teacher_compare))

        def kd(weight: float = self.kd[0], temperature: float = self.kd[1]) -> list[str]:
            return ["--train", str(transfer), "--teacher-scores", str(records),
                    "--w-score-kd", f"{weight:g}", "--temperature", f"{temperature:g}"]  # fmt: skip

        def mkd(weight: float = self.kd[0], temperature: float = self.kd[1]) -> list[str]:
            return [*kd(weight, temperature), "--teacher-cot", str(cot), "--w-cot", "0.5"]

        options = {
            "label": ["--train", p.train],
            "score-kd": kd(),
            "mkd": mkd(),
            "label-warm": ["--train", p.train],
        }
        for name in self.families:
            family = FAMILIES[name]
            # A warm-started family's KD students start from the teacher's own first layers, embeddings
            # and head (the same bottom-layer truncation as the MiniLM start); its label-only twin starts
            # from all-MiniLM-L6-v2, as a user without a teacher would. "label-warm" (first seed) is the
            # label-only student with the teacher's warm start: it separates the warm start from KD.
            warm = ["--init-from", str(self.runs / "teacher-cross6")] if family.warm_start else []

            def train(
                seed: int, variant: str, run: str, family: Family = family, warm: list[str] = warm,
                kd_options: list[str] | None = None,
            ) -> list[Step]:  # fmt: skip
                """kd_options: in place of the variant's own options (the sweep's settings)."""
                common = ["--kind", family.kind, "--layers", str(p.student_layers or family.layers), "--lr", str(family.lr),
                          "--seed", str(seed), *(warm if variant != "label" else [])]  # fmt: skip
                return self._train_and_export(
                    run,
                    self.bundle(run),
                    p.student_max_steps,
                    [*common, *(kd_options or options[variant])],
                    epochs=p.student_epochs(),
                )

            if self.sweep:
                runs_by_setting = self.sweep_names(name)
                for (weight, temperature), run in runs_by_setting.items():
                    steps += train(p.seeds[0], "mkd", run, kd_options=mkd(weight, temperature))
                centre = self.spec(runs_by_setting[self.kd])
                variants = [self.spec(run) for setting, run in runs_by_setting.items() if setting != self.kd]
                steps.append(self._eval(self.eval_dir("dev-sweep", name), p.dev, [default, "bm25", centre, *variants],
                                        [(v, centre) for v in variants]))  # fmt: skip
                continue
            # The main students and their evaluation first, the ablation after; full MKD before score KD
            # alone: a run cut short has the twin-against-MKD comparison the issue asks for first.
            main = [
                (s, v, n)
                for s in p.seeds
                for v, n in self.student_names(s, name).items()
                if v != "label-warm"
            ]
            for seed, variant, run in main:
                steps += train(seed, variant, run)
            systems = [default, "bm25", *(self.spec(run) for _, _, run in main)]
            # Besides every system against the zero-shot default: per seed each KD student against its
            # twin and full MKD against score KD alone.
            compare = []
            for seed in p.seeds:
                spec = {v: self.spec(n) for v, n in self.student_names(seed, name).items()}
                compare += [
                    (spec[a], spec[b])
                    for a, b in (("mkd", "label"), ("score-kd", "label"), ("mkd", "score-kd"))
                    if a in spec and b in spec
                ]
            for label, data in (("dev", p.dev), *p.transfer_checks):
                steps.append(self._eval(self.eval_dir(label, name), data, systems, compare))
            first = self.student_names(p.seeds[0], name)
            ablation = {v: self.spec(n) for v, n in first.items()}
            if "label-warm" in ablation:
                steps += train(p.seeds[0], "label-warm", first["label-warm"])
                kd = [v for v in ("score-kd", "mkd") if v in ablation]
                steps.append(self._eval(self.eval_dir("dev-warm-start", name), p.dev,
                                        [ablation[v] for v in ("label", "label-warm", *kd)],
                                        [(ablation[v], ablation["label-warm"]) for v in kd]))  # fmt: skip
        return steps

    def _eval(self, eval_dir: Path, data: str, systems: list[str], compare: list[tuple[str, str]]) -> Step:
        return Step(f"eval on {data} ({eval_dir.name})", eval_dir / "metrics.json", systems=tuple(systems), argv=[
            "eval", "run", "--data", data, "--out", str(eval_dir), "--slice", "long-tail",
            *(a for s in systems for a in ("--system", s)), *(a for c in compare for a in ("--compare", ",".join(c)))])  # fmt: skip

    def _train_and_export(
        self, name: str, bundle: Path, max_steps: int | None, options: list[str], epochs: int | None = None
    ) -> list[Step]:
        p, run = self.plan, self.runs / name
        limits = ["--epochs", str(epochs or p.epochs)] + (
            ["--max-steps", str(max_steps)] if max_steps else []
        )
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
        students, ablations = [], []
        for name in self.families:
            kind = FAMILIES[name].kind
            for seed in self.plan.seeds:
                names = self.student_names(seed, name)
                twin = str(self.bundle(names["label"]))
                students.append(
                    {"path": twin, "kind": kind, "role": "label-only", "seed": seed, "twin": None}
                )
                if "mkd" in names:
                    students.append({"path": str(self.bundle(names["mkd"])), "kind": kind, "role": "mkd",
                                     "seed": seed, "twin": twin})  # fmt: skip
                ablations += [{"path": str(self.bundle(run)), "kind": kind, "role": variant, "seed": seed,
                               "twin": twin} for variant, run in names.items() if variant in ("score-kd", "label-warm")]  # fmt: skip
        return {"budget": str(self.budget), "students": students, "ablations": ablations,
                "teacher": {"spec": self.teacher_spec, "rungs": {"a": f"bundle:{self.rung_a}",
                                                               "c": self.teacher_spec}}}  # fmt: skip


def _run_name(
    family: str, variant: str, seed: int, kd: tuple[float, float] | None, steps_tag: str = ""
) -> str:
    setting = f"-w{kd[0]:g}-t{kd[1]:g}" if kd else ""
    return f"{family}-{variant}{setting}{steps_tag}-s{seed}"


def run_experiment(experiment: Experiment, *, echo=print) -> dict:
    """Run every step not yet done, in order; raises RuntimeError naming the step that failed."""
    relevance = str(Path(sys.executable).with_name("relevance"))
    steps = experiment.steps()
    for n, step in enumerate(steps, start=1):
        head = f"[{n}/{len(steps)}] {step.name}"
        missing = step.missing()
        if not missing:
            echo(f"{head}: already there ({step.done}), skipped")
            continue
        if step.done is not None and step.done.exists():
            echo(f"{head}: {step.done} lacks {', '.join(missing)}: rerunning")
        echo(f"{head}: relevance {shlex.join(step.argv)}")
        started = time.monotonic()
        code = subprocess.run([relevance, *step.argv], check=False).returncode
        if code != 0:
            raise RuntimeError(f"{head} failed (exit {code}); rerun to resume from this step")
        echo(f"{head}: done in {time.monotonic() - started:.0f} s")
    experiment.report.mkdir(parents=True, exist_ok=True)
    if experiment.sweep:  # the sweep trains no twin: experiment.json and the promotion are the chain's
        path = experiment.report / "sweep.md"
        path.write_text(summarise_sweep(experiment), encoding="utf-8")
        echo(f"wrote {path}")
        return {}
    manifest = experiment.manifest()
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
    auc: dict[str, float] = {}
    for family in experiment.families:
        section = _section(experiment.eval_dir("dev", family) / "metrics.json")
        auc |= {
            name: s["metrics"]["auc_exact"]["value"] for name, s in (section or {}).get("systems", {}).items()
        }
    mkd = [s["path"] for s in manifest["students"] if s["role"] == "mkd"]
    if not mkd:
        echo("no MKD student in this round (--variants): nothing to promote")
        return
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


SUMMARY_METRICS = ("auc_exact", "auc_relevant", "ndcg@10")
SUMMARY_HEADER = ["| a − b | AUC E-vs-rest | AUC EP-vs-I | NDCG@10 |", "|---|---|---|---|"]


def _rows(section: dict, pairs: list[tuple[str, str]]) -> list[str]:
    return [
        f"| {a} − {b} | " + " | ".join(_diff(section, a, b, m) for m in SUMMARY_METRICS) + " |"
        for a, b in pairs
    ]


def _gap_row(seed: int, auc: dict[str, float | None], top: float | None) -> str:
    """One seed's row of the gap table from dev AUC E-vs-rest by variant (None: not trained or scored)."""
    twin = auc["label"]
    if twin is None or top is None or all(auc[v] is None for v in ("score-kd", "mkd")):
        return f"| {seed} | not all evaluated | | | | | |"
    value = {v: "not trained" if x is None else f"{x:.3f}" for v, x in auc.items()}
    closed = {
        v: "—" if x is None else (f"{(x - twin) / (top - twin):.0%}" if top != twin else "n/a")
        for v, x in auc.items()
    }
    return (
        f"| {seed} | {twin:.3f} | {value['score-kd']} | {value['mkd']} | {top:.3f} | "
        f"{closed['mkd']} | {closed['score-kd']} |"
    )


def summarise(experiment: Experiment) -> str:
    """The issue's checks in Markdown, computed from the eval reports that exist: the shipped teacher
    against rung (a) and the zero-shot default; per family and seed, the share of the twin-to-teacher
    gap on dev AUC Exact-vs-rest that full MKD closes, and its paired differences with the twin, score
    KD and the default."""
    teacher_a = f"bundle:{experiment.rung_a.name}"
    teacher_c = f"ensemble:{experiment.ensemble_dir.name}"
    default = f"bundle:{DEFAULT_BUNDLE.name}"
    out = [f"# {experiment.prefix}: the issue's checks (computed from {experiment.report})", ""]
    for label, title in (("dev", "All queries"), ("dev", "Long-tail queries"), ("crowdflower-dev", "All queries"),
                         ("bundled-dev", "All queries")):  # fmt: skip
        teachers = _section(experiment.eval_dir(label) / "metrics.json", title)
        if teachers is None:
            out += [f"## eval-{label}, {title}: not evaluated", ""]
            continue
        out += [f"## eval-{label}, {title} ({teachers['pairs']} pairs, {teachers['queries']} queries)", ""]
        out += ["### Teachers", "", *SUMMARY_HEADER]
        out += _rows(teachers, [(teacher_c, default), (teacher_c, teacher_a), (teacher_a, default)])
        top = teachers["systems"].get(teacher_c, {}).get("metrics", {}).get("auc_exact", {}).get("value")
        out.append("")
        for family in experiment.families:
            section = _section(experiment.eval_dir(label, family) / "metrics.json", title)
            if section is None:
                out += [f"### {family} students: not evaluated", ""]
                continue
            names = {seed: {v: f"bundle:{experiment.prefix}-{n}" for v, n in experiment.student_names(seed, family).items()}
                     for seed in experiment.plan.seeds}  # fmt: skip
            out += [f"### {family} students", "", *SUMMARY_HEADER]
            for s in names.values():
                spec = {**s, "default": default}
                out += _rows(section, [(spec[a], spec[b]) for a, b in
                                       (("mkd", "label"), ("score-kd", "label"), ("mkd", "score-kd"), ("mkd", "default"))
                                       if a in spec and b in spec])  # fmt: skip
            out += ["", "| seed | twin | score KD | full MKD | teacher (c) | gap closed by MKD (AUC E-vs-rest) "
                    "| gap closed by score KD |", "|---|---|---|---|---|---|---|"]  # fmt: skip
            systems = section["systems"]
            for seed, s in names.items():
                auc = {
                    v: systems[s[v]]["metrics"]["auc_exact"]["value"] if s.get(v) in systems else None
                    for v in ("label", "score-kd", "mkd")
                }
                out.append(_gap_row(seed, auc, top))
            out.append("")
    return "\n".join(out) + "\n"


def summarise_sweep(experiment: Experiment) -> str:
    """The KD weight/temperature sweep in Markdown, from its eval reports: per family, each setting's
    dev metrics and its paired difference with the chain's setting (the centre)."""
    out = [
        f"# {experiment.prefix}: the KD weight/temperature sweep (full MKD, seed {experiment.plan.seeds[0]})",
        "",
    ]
    for family in experiment.families:
        section = _section(experiment.eval_dir("dev-sweep", family) / "metrics.json")
        if section is None:
            out += [f"## {family}: not evaluated", ""]
            continue
        out += [f"## {family} ({section['pairs']} pairs, {section['queries']} queries)", "",
                "| w score KD | T | AUC E-vs-rest | AUC EP-vs-I | NDCG@10 | Δ AUC E-vs-rest vs centre "
                "| Δ AUC EP-vs-I | Δ NDCG@10 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        names = experiment.sweep_names(family)
        # eval reports name a bundle by its folder: bundle:hd-cross2-mkd-w3-t2-s0
        centre = f"bundle:{experiment.bundle(names[experiment.kd]).name}"
        for (weight, temperature), run in names.items():
            spec = f"bundle:{experiment.bundle(run).name}"
            metrics = section["systems"].get(spec, {}).get("metrics")
            if metrics is None:
                out.append(f"| {weight:g} | {temperature:g} | not evaluated | | | | | |")
                continue
            values = [f"{metrics[m]['value']:.3f}" for m in SUMMARY_METRICS]
            diffs = (["centre"] * 3 if spec == centre else
                     [_diff(section, spec, centre, m) for m in SUMMARY_METRICS])  # fmt: skip
            out.append(f"| {weight:g} | {temperature:g} | " + " | ".join(values + diffs) + " |")
        out.append("")
    return "\n".join(out) + "\n"
