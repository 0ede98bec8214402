"""The ops console: ``GET /console``, a page for debugging a ranking with /score and /explain.

The page is a static shell (HTML, one script, one stylesheet, served from this package: no CDN, no
build step, works offline). It holds no data: everything it shows comes from /score, /explain and
/explain/items, called from the browser with the operator's API key, which the page keeps in the
tab's sessionStorage. A browser cannot attach an X-API-Key header to a page navigation, and a key in
the URL would end up in logs and history, so the shell itself is not behind the key; every data call is.

Item text is attacker-controlled: the script writes text with ``textContent`` only, and the
Content-Security-Policy below forbids inline scripts, so even a missed spot cannot run one.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

CONSOLE_PATH = "/console"
_STATIC = files(__package__) / "static"
_ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _static(name: str, media_type: str) -> Response:
    return Response((_STATIC / name).read_bytes(), media_type=media_type, headers=SECURITY_HEADERS)


@router.get(CONSOLE_PATH)
async def console() -> Response:
    return _static("index.html", "text/html; charset=utf-8")


@router.get(CONSOLE_PATH + "/assets/{name}")
async def console_asset(name: str) -> Response:
    if name not in _ASSETS:
        raise HTTPException(404, f"no console asset {name!r}")
    return _static(name, _ASSETS[name])
