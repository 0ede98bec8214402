"""Resident memory of a server process tree, read from /proc (Linux), sampled during a run.

Peak RSS is the larger of the highest sampled tree total and each process' own kernel
high-water mark (VmHWM), so a spike between two samples of a single-process server is not missed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (uvicorn workers, spawned helpers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_rss_mib(pid: int) -> float:
    return sum(_status_kib(p, "VmRSS") for p in process_tree(pid)) / 1024


def tree_hwm_mib(pid: int) -> float:
    """Largest single-process high-water mark in the tree."""
    return max((_status_kib(p, "VmHWM") for p in process_tree(pid)), default=0) / 1024


class RssSampler:
    """Samples the tree's RSS every ``interval_s`` while running (use as an async context manager)."""

    def __init__(self, pid: int | None, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_sampled_mib = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        assert self.pid is not None
        while True:
            self.peak_sampled_mib = max(self.peak_sampled_mib, tree_rss_mib(self.pid))
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> RssSampler:
        if self.pid is not None:
            self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def peak_mib(self) -> float | None:
        if self.pid is None:
            return None
        return max(self.peak_sampled_mib, tree_hwm_mib(self.pid))
