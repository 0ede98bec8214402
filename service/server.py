"""Runs the app under uvicorn with a graceful drain on SIGTERM/SIGINT and bundle reload on SIGHUP.

uvicorn alone stops listening at once on SIGTERM, so a load balancer sees refused connections
rather than a replica going unready. Here the first SIGTERM/SIGINT starts a drain (service/lifecycle.py):
/readyz answers 503 "draining", new /score requests get 503 + Retry-After, admitted ones finish;
then uvicorn's own shutdown runs (it waits for open responses up to the same grace period). A
second signal falls through to uvicorn (a second Ctrl-C forces exit).

Slow clients: uvicorn has no header read timeout, so a connection that sends half a request line and
then nothing (slowloris) would be held forever. ``header_timeout_protocol`` adds one: a connection
must complete a request's headers within RELEVANCE_HEADER_TIMEOUT_S of opening (or of the request's
first byte), else it gets a JSON 408 and is closed. Idle keep-alive connections are closed by
uvicorn's own keep-alive timeout, and the body timeout is in service/middleware.py.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI

from service.errors import error_body
from service.settings import Settings
from service.state import app_state

log = logging.getLogger(__name__)


def header_timeout_protocol(timeout_s: float) -> type | None:
    """uvicorn's httptools protocol with a header read timeout; None when httptools is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None
    body = orjson.dumps(
        error_body(
            "header_timeout",
            f"the request headers did not arrive within {timeout_s:g} s (RELEVANCE_HEADER_TIMEOUT_S)",
        )
    )
    response = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._disarm()  # idle until the next request: uvicorn's keep-alive timeout applies
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        app_state(app).lifecycle.on_drained = self._exit_now

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def _exit_now(self, grace_left_s: float) -> None:
        # uvicorn then waits for open responses (/explain, probes) only for what is left of the grace
        # period, so the whole shutdown stays within RELEVANCE_SHUTDOWN_GRACE_S.
        self.config.timeout_graceful_shutdown = max(1, round(grace_left_s))
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = app_state(self._app)
        if state.lifecycle.draining or self._loop is None or state.scorer is None:
            super().handle_exit(sig, frame)  # second signal, or nothing started yet: uvicorn's own way
            return
        state.metrics.draining.set(1)
        # A signal handler interrupts the loop's thread at any point: hand the work to the loop.
        self._loop.call_soon_threadsafe(state.lifecycle.begin_drain, lambda: state.scorer)


def run(app: FastAPI, settings: Settings) -> None:
    app_state(app).reload_on_sighup = True
    protocol = header_timeout_protocol(settings.header_timeout_s)
    if protocol is None:
        log.warning(
            "httptools is not installed: no header read timeout (RELEVANCE_HEADER_TIMEOUT_S is ignored)"
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        http=protocol or "auto",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )
    DrainingServer(config, app).run()
