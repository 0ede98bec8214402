"""API-key authentication, as a FastAPI dependency.

A key is sent as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``. Keys come from a
comma-separated setting (e.g. ``RELEVANCE_API_KEYS``) and/or a secret file (one key per line,
``#`` comments allowed; e.g. ``RELEVANCE_API_KEYS_FILE``). Keys are compared with
``hmac.compare_digest`` against every configured key, so timing says nothing about which key is
close. The dependency returns a short, non-reversible key id (used for per-key rate limits, so raw
keys never reach Redis or logs).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from fastapi import Request

from service.errors import ApiError


class ApiKeyConfigError(ValueError):
    """The configured keys cannot be read; the message names the setting or file."""


# Who a caller is on a route that needs no key (ApiKeyAuth with required=False and no keys configured).
ANONYMOUS = "anonymous"


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def load_api_keys(
    inline: str = "", file: str | Path | None = None, *, setting: str = "RELEVANCE_API_KEYS"
) -> frozenset[str]:
    """Keys from a comma-separated string plus an optional file (one per line)."""
    keys = {k.strip() for k in inline.split(",") if k.strip()}
    if file:
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ApiKeyConfigError(f"{setting}_FILE: cannot read {path}: {exc.strerror or exc}") from exc
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.add(line)
    for key in keys:
        if len(key) < 8:
            raise ApiKeyConfigError(
                f"{setting}: every key must be at least 8 characters (one has {len(key)})"
            )
    return frozenset(keys)


def presented_key(request: Request) -> str | None:
    header = request.headers.get("x-api-key")
    if header:
        return header.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class ApiKeyAuth:
    """Dependency: ``Depends(ApiKeyAuth(keys))`` → key id, or ApiError 401.

    With ``required=False`` and no keys configured the route is open (returns ``"anonymous"``);
    with ``required=True`` and no keys configured every request is refused, saying how to configure keys.
    """

    def __init__(
        self, keys: Iterable[str], *, required: bool = True, setting: str = "RELEVANCE_API_KEYS"
    ) -> None:
        keys = list(keys)
        self._keys = [k.encode("utf-8") for k in keys]
        self._ids = [key_id(k) for k in keys]
        self.required = required
        self.setting = setting

    def key_ids(self) -> list[str]:
        """The ids of the configured keys (what a request with one of them is identified as)."""
        return list(self._ids)

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or self.required

    async def __call__(self, request: Request) -> str:
        if not self._keys:
            if not self.required:
                return ANONYMOUS
            raise _unauthorized(
                f"no API keys are configured on this server; set {self.setting} or {self.setting}_FILE"
            )
        key = presented_key(request)
        if key is None:
            raise _unauthorized("missing API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'")
        candidate = key.encode("utf-8")
        matched = False
        for known in self._keys:  # no early exit: compare against every key
            matched |= hmac.compare_digest(candidate, known)
        if not matched:
            raise _unauthorized("invalid API key")
        return key_id(key)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
