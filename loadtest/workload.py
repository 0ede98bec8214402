"""Request shapes of the search-backend pattern: one query with N candidate items.

Texts come from the bundled real data (ESCI US subset, Apache-2.0), so tokenised lengths, and
therefore padding and FLOPs, are those of real product titles, not of synthetic strings.
Candidates for a query are its judged items followed by items drawn from the whole catalogue
(as a retrieval stage would return), so every request carries real, mostly-unrelated titles.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

_SIZE_SPEC = re.compile(r"^(?:fixed:)?(\d+)$|^uniform:(\d+)-(\d+)$")


@dataclass(frozen=True, slots=True)
class SizeDistribution:
    """How many candidate items a request carries: ``fixed:50`` (or ``50``) or ``uniform:20-200``."""

    low: int
    high: int

    @classmethod
    def parse(cls, spec: str) -> SizeDistribution:
        match = _SIZE_SPEC.match(spec.strip())
        if match is None:
            raise ValueError(f"items spec {spec!r}: expected 'fixed:N', 'N' or 'uniform:LOW-HIGH'")
        if match.group(1) is not None:
            low = high = int(match.group(1))
        else:
            low, high = int(match.group(2)), int(match.group(3))
        if low < 1 or high < low:
            raise ValueError(f"items spec {spec!r}: need 1 <= LOW <= HIGH")
        return cls(low, high)

    def sample(self, rng: random.Random) -> int:
        return self.low if self.low == self.high else rng.randint(self.low, self.high)

    def __str__(self) -> str:
        return f"fixed:{self.low}" if self.low == self.high else f"uniform:{self.low}-{self.high}"


@dataclass(frozen=True, slots=True)
class Request:
    """One prepared request: the JSON body is serialised once, ahead of time, to keep the client cheap."""

    query: str
    items: tuple[dict[str, Any], ...]
    body: bytes

    @property
    def n_items(self) -> int:
        return len(self.items)


def score_body(query: str, items: Sequence[dict[str, Any]]) -> bytes:
    """The POST /score body (service/schemas.py: ScoreRequest)."""
    return orjson.dumps({"query": query, "items": list(items)})


class Workload:
    """Deterministic stream of requests built from (query, judged items) groups and a catalogue."""

    def __init__(
        self,
        groups: dict[str, list[dict[str, Any]]],
        catalogue: list[dict[str, Any]],
        sizes: SizeDistribution,
        seed: int = 0,
    ) -> None:
        if not groups or not catalogue:
            raise ValueError("workload needs at least one query and one item")
        self.sizes = sizes
        self._groups = sorted(groups.items())
        self._catalogue = catalogue
        self._rng = random.Random(seed)

    @classmethod
    def from_bundled(cls, sizes: SizeDistribution, seed: int = 0) -> Workload:
        from distill.data.bundled import load_bundled

        groups: dict[str, list[dict[str, Any]]] = {}
        catalogue: dict[str, dict[str, Any]] = {}
        for pair in load_bundled("all"):
            item = {"id": pair.item.id, "title": pair.item.title}
            groups.setdefault(pair.query, []).append(item)
            catalogue[pair.item.id] = item
        return cls(groups, list(catalogue.values()), sizes, seed)

    def next(self) -> Request:
        query, judged = self._groups[self._rng.randrange(len(self._groups))]
        n = self.sizes.sample(self._rng)
        items = list(judged[:n])
        while len(items) < n:
            items.append(self._catalogue[self._rng.randrange(len(self._catalogue))])
        # Ids unique within a request (the service may key results by id).
        items = [dict(item, id=f"{item['id']}#{k}") for k, item in enumerate(items)]
        return Request(query=query, items=tuple(items), body=score_body(query, items))

    def take(self, count: int) -> list[Request]:
        return [self.next() for _ in range(count)]
