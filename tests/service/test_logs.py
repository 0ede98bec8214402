"""The service's log stream is JSON lines only: a library's Python warning becomes a JSON line too
(redis-py 8 warns at startup when given a sync Retry; that raw line broke log parsers)."""

from __future__ import annotations

import io
import json
import logging
import warnings

import pytest

from service import logs


@pytest.fixture
def captured(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(logs, "_stream", stream)
    # An earlier test in this process may have left logging "capturing" while pytest has since put its
    # own showwarning back; captureWarnings(True) is a no-op then, so start from not capturing.
    logging.captureWarnings(False)
    # configure_logging rewires these loggers for the process; put them back so later tests' caplog works
    names = ("service", "uvicorn", "uvicorn.error", "py.warnings")
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level)
        for n in names
    }
    yield stream
    logging.captureWarnings(False)
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


def test_a_python_warning_is_written_as_one_json_line(captured):
    logs.configure_logging("INFO")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library changed its mind", UserWarning, stacklevel=1)
    lines = [json.loads(ln) for ln in captured.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["logger"] == "py.warnings"
    assert lines[0]["level"] == "WARNING"
    assert "a library changed its mind" in lines[0]["msg"]


def test_service_log_lines_carry_their_extra_fields(captured):
    logs.configure_logging("INFO")
    logging.getLogger("service.access").info("request", extra={"status": 200})
    (line,) = [json.loads(ln) for ln in captured.getvalue().splitlines()]
    assert (line["logger"], line["msg"], line["status"]) == ("service.access", "request", 200)
