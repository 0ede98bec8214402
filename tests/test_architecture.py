"""The layout's rules, checked on the source: which package may import which, and what must not
pull torch at import time (docs/ARCHITECTURE.md, "Layout")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "teacher", "service", "distill", "loadtest")
# Who may import whom. core holds the contracts and imports none of the others; teacher (the LLM
# runtime) only core; the service core and teacher, never distill; distill runs bundles through the
# service's own Scorer (distill/baselines/bundle.py) so offline numbers are the served ones.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "teacher": {"core"},
    "service": {"core", "teacher"},
    "distill": {"core", "teacher", "service"},
    "loadtest": {"core", "teacher", "service", "distill"},
}


def _imported_packages(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported, line in _imported_packages(path):
            if imported != package and imported not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, (
        f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of ours'}:\n" + "\n".join(wrong)
    )


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom distill.data import loaders\n\ndef f():\n    import service.app\n")
    assert _imported_packages(bad) == {("distill", 2), ("service", 5)}


# Everything the service process loads to serve /score and /explain, and the teacher runtime with
# every backend module. None of it may import torch: the serving image does not install it.
NO_TORCH_MODULES = (
    "core.bundle",
    "core.cot",
    "core.item",
    "core.grades",
    "core.tokenization",
    "core.score_mapping",
    "core.text_template",
    "core.datasets",
    "teacher",
    "teacher.specs",
    "teacher.runtime",
    "teacher.parser",
    "teacher.prompt",
    "teacher.backends.llamacpp",
    "teacher.backends.openai_http",
    "teacher.backends.transformers_hf",
    "service.app",
    "service.cli",
    "service.scorer",
    "service.explain.router",
    "service.explain.components",
)


def test_the_service_and_the_teacher_runtime_import_without_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {NO_TORCH_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    heavy = sorted(m for m in ('torch', 'transformers', 'distill') if m in sys.modules)\n"
        "    assert not heavy, f'importing {name} imported {heavy}'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
