"""Servers under test as real subprocesses on loopback: the relevance service and Infinity.

Each server gets a free port on 127.0.0.1, its own log file, and is stopped (SIGTERM, then
SIGKILL) when the benchmark leaves the ``with`` block, whatever happened inside it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

INFINITY_VENV = Path(".venv-infinity")


class ServerError(RuntimeError):
    """A server that did not start; the message names the command and points at its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    name: str
    base_url: str
    pid: int
    log_path: Path


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@contextmanager
def managed_server(
    name: str,
    command: list[str],
    *,
    port: int,
    ready_path: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    startup_timeout_s: float = 180.0,
    cwd: Path | None = None,
):
    """Start ``command`` (in ``cwd``), wait until GET ``ready_path`` answers 200, yield a RunningServer,
    then stop it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=cwd,
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise ServerError(
                    f"{name} exited with code {proc.returncode} while starting "
                    f"({' '.join(command)}); log {log_path}:\n{_tail(log_path)}"
                )
            try:
                if httpx.get(base_url + ready_path, timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"{name} not ready after {startup_timeout_s:.0f} s; log {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield RunningServer(name, base_url, proc.pid, log_path)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    # The server runs in its own session (start_new_session), so its group id is its pid.
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def relevance_command() -> list[str]:
    """`relevance serve` from the running interpreter's environment (what `make serve` runs); where the
    project is not installed (the GPU machine runs it from the source tree), the same command as
    ``python -m distill.cli serve``."""
    script = Path(sys.executable).with_name("relevance")
    if not script.exists():
        return [sys.executable, "-m", "distill.cli", "serve"]
    return [str(script), "serve"]


def relevance_env(bundle: Path, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "RELEVANCE_BUNDLE": str(bundle),
        "RELEVANCE_HOST": "127.0.0.1",
        "RELEVANCE_PORT": str(port),
        "RELEVANCE_LOG_LEVEL": "WARNING",
        **(extra or {}),
    }


def infinity_command(
    model_dir: Path,
    served_name: str,
    port: int,
    *,
    engine: str = "torch",
    batch_size: int = 32,
    venv: Path = INFINITY_VENV,
) -> list[str]:
    """Infinity's v2 CLI on loopback serving a local model folder (no hub access)."""
    script = venv / "bin" / "infinity_emb"
    if not script.exists():
        raise ServerError(f"{script} not found: create it with `make infinity-venv`")
    return [
        str(script),
        "v2",
        "--model-id",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--engine",
        engine,
        "--device",
        "cpu",
        "--batch-size",
        str(batch_size),
        "--log-level",
        "warning",
        # No result cache (the bench repeats requests), no torch.compile (minutes on a small CPU),
        # no BetterTransformer (deprecated in current transformers).
        "--no-vector-disk-cache",
        "--no-compile",
        "--no-bettertransformer",
    ]


# Infinity must not try the hub for anything (the machine may have no network at all).
INFINITY_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
    "DO_NOT_TRACK": "1",
}
