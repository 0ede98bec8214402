"""Runs the app under uvicorn with a graceful drain on SIGTERM/SIGINT and bundle reload on SIGHUP.

uvicorn alone stops listening at once on SIGTERM, so a load balancer sees refused connections
rather than a replica going unready. Here the first SIGTERM/SIGINT starts a drain (service/lifecycle.py):
/readyz answers 503 "draining", new /score requests get 503 + Retry-After, admitted ones finish;
then uvicorn's own shutdown runs (it waits for open responses up to the same grace period). A
second signal falls through to uvicorn (a second Ctrl-C forces exit).
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.settings import Settings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        app.state.lifecycle.on_drained = self._exit_now

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def _exit_now(self, grace_left_s: float) -> None:
        # uvicorn then waits for open responses (/explain, probes) only for what is left of the grace
        # period, so the whole shutdown stays within RELEVANCE_SHUTDOWN_GRACE_S.
        self.config.timeout_graceful_shutdown = max(1, round(grace_left_s))
        self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = self._app.state
        if state.lifecycle.draining or self._loop is None or state.scorer is None:
            super().handle_exit(sig, frame)  # second signal, or nothing started yet: uvicorn's own way
            return
        state.metrics.draining.set(1)
        # A signal handler interrupts the loop's thread at any point: hand the work to the loop.
        self._loop.call_soon_threadsafe(state.lifecycle.begin_drain, lambda: state.scorer)


def run(app: FastAPI, settings: Settings) -> None:
    app.state.reload_on_sighup = True
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False, log_config=None,
                            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)))
    DrainingServer(config, app).run()
