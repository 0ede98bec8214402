"""`relevance bench` / `relevance loadtest` refuse bad options before starting anything, naming the option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from distill.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "--bundle", "/nonexistent/bundle"], "bundle folder /nonexistent/bundle does not exist"),
        (["bench", "--clients", "1,x"], "--clients: expected comma-separated integers"),
        (["loadtest", "--mode", "sideways"], "'sideways' is not one of 'closed', 'open'"),
        (["loadtest", "--items", "uniform:9-3"], "items spec 'uniform:9-3'"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(args, message):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})  # no line wrapping inside the message
    assert result.exit_code == 2
    assert message in result.output
