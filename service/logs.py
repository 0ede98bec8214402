"""JSON logs: one object per line, so request lines (with their request id) can be shipped and queried."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

import orjson

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


_stream: TextIO | None = None


def _log_stream() -> TextIO:
    """A private duplicate of stderr: libraries that silence fd 2 for a while (llama.cpp loading a model
    with verbose=False redirects it to /dev/null) cannot swallow the service's log lines."""
    global _stream
    if _stream is None:
        try:
            fd = os.dup(sys.stderr.fileno())
            _stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
        except (AttributeError, OSError, ValueError):  # stderr without a file descriptor (captured)
            return sys.stderr
    return _stream


def configure_logging(level: str) -> None:
    """Route the service's and uvicorn's loggers, and Python warnings (a library's deprecation notice
    would otherwise be a raw line on stderr that log shippers cannot parse), to one JSON stream."""
    handler = logging.StreamHandler(_log_stream())
    handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)
    for name in ("service", "uvicorn", "uvicorn.error", "py.warnings"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
