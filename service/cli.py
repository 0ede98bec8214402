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

        from core.bundle import BundleError
        from service import server
        from service.app import create_app
        from service.auth import ApiKeyConfigError, load_api_keys
        from service.providers import ProviderError
        from service.scorer import Scorer
        from service.settings import Settings, describe_settings_error
        from service.state import app_state

        overrides: dict[str, Any] = {
            k: v for k, v in {"host": host, "port": port, "bundle": bundle}.items() if v is not None
        }
        try:
            settings = Settings(**overrides)
            load_api_keys(settings.explain.api_keys, settings.explain.api_keys_file)  # /explain's keys
        except ValidationError as exc:
            _fail(describe_settings_error(exc))
        except ApiKeyConfigError as exc:
            _fail(str(exc))
        app = create_app(settings)
        # Load the bundle, verify its files and run its warm-up batch here, so that a bad bundle is one
        # line naming the file and the problem, not a traceback from inside uvicorn's startup.
        try:
            scorer = Scorer(settings, app_state(app).metrics)
            scorer.check()
        except (BundleError, ProviderError) as exc:
            _fail(
                f"cannot serve {settings.bundle}: {exc}\nBuild the default bundle with `relevance "
                "student build-default --out models/minilm-zero-shot-bi` or set RELEVANCE_BUNDLE."
            )
        app_state(app).preloaded_scorer = scorer
        server.run(app, settings)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
