"""Lifecycle of the served bundle: graceful drain (SIGTERM) and hot reload (POST /admin/reload, SIGHUP).

Drain: readiness turns false and POST /score refuses new requests with 503 at once, while requests
already admitted finish; when none is left (or RELEVANCE_SHUTDOWN_GRACE_S has passed) the server is
told to exit (service/server.py).

Reload: the new bundle is validated, loaded and warmed up while the old one keeps serving; then
``AppState.scorer`` is replaced by one assignment on the event loop. A request picks its scorer
once, synchronously, inside ``Scorer.in_use``, so it runs wholly on the old bundle or wholly on the
new one; the old scorer finishes the requests it holds, then stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.bundle import BundleError
from service.errors import ApiError
from service.metrics import Metrics
from service.scorer import Scorer
from service.settings import Settings

log = logging.getLogger(__name__)


class Lifecycle:
    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.draining = False
        # Set with ``draining``: request bodies still being read are cut short (RequestBodyMiddleware).
        self.drain_started = asyncio.Event()
        # Set by the server runner: "exit now, with this many seconds of the grace period left".
        self.on_drained: Callable[[float], None] | None = None
        self._watcher: asyncio.Task | None = None  # held so the running task is not garbage-collected

    def begin_drain(self, get_scorer: Callable[[], Scorer | None]) -> None:
        """Start draining (once). Call on the event loop's thread."""
        if self.draining:
            return
        self.draining = True
        self.drain_started.set()
        log.info(
            "draining: readiness is false, new requests get 503; exiting when in-flight requests "
            "finish (at most %.1f s)",
            self.grace_s,
        )
        self._watcher = asyncio.get_running_loop().create_task(self._wait_drained(get_scorer))

    async def _wait_drained(self, get_scorer: Callable[[], Scorer | None]) -> None:
        give_up = time.monotonic() + self.grace_s
        while time.monotonic() < give_up:
            scorer = get_scorer()
            if scorer is None or scorer.active == 0:
                break
            await asyncio.sleep(0.01)
        scorer = get_scorer()
        left = scorer.active if scorer is not None else 0
        if left:
            log.info("grace period over with %d requests in flight", left)
        else:
            log.info("drained")
        if self.on_drained is not None:
            self.on_drained(max(0.0, give_up - time.monotonic()))


def publish_model_info(metrics: Metrics, scorer: Scorer) -> None:
    # The folder's name, not its path: /metrics is unauthenticated and the path says how the host is laid out.
    metrics.model_info.info(
        {
            **scorer.manifest.summary("name", "version", "kind"),
            "provider": scorer.model.provider,
            "bundle": scorer.bundle_dir.name,
        }
    )


def bundle_summary(scorer: Scorer) -> dict[str, Any]:
    return {**scorer.manifest.summary("name", "version", "kind"), "path": str(scorer.bundle_dir)}


class BundleReloader:
    """Loads, validates and warms a bundle next to the serving one, then swaps them."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        get_scorer: Callable[[], Scorer | None],
        set_scorer: Callable[[Scorer], None],
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._get = get_scorer
        self._set = set_scorer
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()

    async def reload(self, bundle: str | Path | None = None) -> dict[str, Any]:
        """Swap in ``bundle`` (default: the serving folder, read again). Raises ApiError 422 for a bundle
        that does not load or warm up (the old one keeps serving), 409 while another reload runs."""
        if self._lock.locked():
            raise ApiError(409, "reload_in_progress", "another reload is in progress; retry when it ends")
        async with self._lock:
            old = self._get()
            path = Path(bundle) if bundle else (old.bundle_dir if old else self._settings.bundle)
            start = time.perf_counter()
            new = await self._load(path)
            self._set(new)  # the swap: every request from here on picks the new scorer
            publish_model_info(self._metrics, new)
            self._metrics.reloads.labels("ok").inc()
            log.info(
                "reloaded: %s %s → %s %s",
                *((old.manifest.name, old.manifest.version) if old else ("-", "-")),
                new.manifest.name,
                new.manifest.version,
            )
            if old is not None:
                task = asyncio.get_running_loop().create_task(old.stop(self._settings.shutdown_grace_s))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return {
                "previous": bundle_summary(old) if old else None,
                "current": bundle_summary(new),
                "took_ms": round((time.perf_counter() - start) * 1000, 1),
            }

    async def _load(self, path: Path) -> Scorer:
        settings = self._settings.model_copy(update={"bundle": path})
        new: Scorer | None = None
        try:
            # Reading the ONNX file and building the session block for a while: off the event loop.
            new = await asyncio.to_thread(Scorer, settings, self._metrics)
            await new.start()  # warm-up: runs the model and checks its output shape and values
            return new
        except Exception as exc:  # any failure to load is the bundle's fault: refuse it, keep serving
            self._metrics.reloads.labels("refused").inc()
            if new is not None:
                await new.stop()
            reason = str(exc) if isinstance(exc, BundleError) else f"{path}: {type(exc).__name__}: {exc}"
            log.error("reload refused, the serving bundle is unchanged: %s", reason)
            raise ApiError(
                422,
                "bundle_invalid",
                f"bundle refused, still serving the previous one: {reason}",
                field="bundle",
            ) from exc

    async def wait_retired(self) -> None:
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
