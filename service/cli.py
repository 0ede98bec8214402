"""`relevance serve`: the scoring service under uvicorn (settings from RELEVANCE_* variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str | None = typer.Option(None, help="Overrides RELEVANCE_HOST (default 127.0.0.1)."),
        port: int | None = typer.Option(None, help="Overrides RELEVANCE_PORT (default 8080)."),
        bundle: Path | None = typer.Option(None, help="Overrides RELEVANCE_BUNDLE (a bundle folder)."),
    ) -> None:
        """Serve POST /score, GET|POST /explain, /admin/reload, /healthz, /readyz and /metrics.

        SIGTERM drains (readiness false, new requests 503, in-flight ones finish, then exit);
        SIGHUP reloads the bundle folder without dropping a request."""
        from pydantic import ValidationError

        from service import server
        from service.app import create_app
        from service.auth import ApiKeyConfigError
        from service.bundle import BundleError, read_manifest
        from service.explain.settings import check_settings as check_explain_settings
        from service.settings import Settings

        overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port, "bundle": bundle}.items()
                                     if v is not None}
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            raise typer.BadParameter(str(exc)) from exc
        try:
            read_manifest(settings.bundle)  # fail here, with the reason, rather than inside uvicorn
        except BundleError as exc:
            typer.echo(f"error: {exc}\nBuild the default bundle with `relevance build-default-bundle "
                       f"--out models/minilm-zero-shot-bi` or set RELEVANCE_BUNDLE.", err=True)
            raise typer.Exit(2) from exc
        try:
            check_explain_settings()  # /explain settings and API keys
        except (ValidationError, ApiKeyConfigError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        server.run(create_app(settings), settings)
