"""`relevance`: the project's one CLI. Each area registers its own subcommands.

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

# Modules that define `register(app: typer.Typer) -> None`.
COMMAND_MODULES: tuple[str, ...] = (
    "loadtest.cli",
    "service.explain.cli",
    "distill.data.cli",
    "distill.teacher.cli",
    "distill.eval.cli",
    "service.cli",
    "distill.export.default_bundle",
    "distill.students.cli",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)
