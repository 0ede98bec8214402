"""`relevance`: the project's one CLI. Each area registers its own commands: the service's at the top
level (serve, explain, bench, loadtest, reliability), the offline tools as groups (data, teacher,
student, eval).

Heavy imports (torch, transformers, llama.cpp) happen inside the commands, so `relevance serve`
and `relevance explain` start without them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="relevance",
    help="Relevance scoring service and ELLM-rele → student distillation tools.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Modules that define `register(app: typer.Typer) -> None`: the service's commands at the top level,
# then one group per offline step, listed in the order of the workflow.
COMMAND_MODULES: tuple[str, ...] = (
    "service.cli",
    "service.explain.cli",
    "loadtest.cli",
    "distill.data.cli",
    "distill.teacher.cli",
    "distill.students.cli",
    "distill.eval.cli",
    "distill.experiments.cli",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


# `python -m distill.cli …`, as `accelerate launch -m distill.cli student train` needs.
if __name__ == "__main__":
    app()
