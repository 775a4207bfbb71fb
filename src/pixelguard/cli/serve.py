"""``pixelguard serve``: serve a model behind keys, limits, a detector and an audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixelguard.cli import options as opt
from pixelguard.errors import ConfigError, missing_dependency

SERVE_PANEL = "Server options"
STATEFUL = ("blacklight", "off")


@opt.with_options(model_options=opt.ModelOptions)
def serve_command(
    *,
    model: opt.ModelSpec,
    defense: opt.DefenseSpec = None,
    stateful: Annotated[
        str,
        typer.Option(
            help="Stateful detection of query attacks: blacklight or off.",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = "off",
    state_db: Annotated[
        Path | None,
        typer.Option(
            help="File that keeps the detector's state across restarts (default: in memory).",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = None,
    on_detect: Annotated[
        str,
        typer.Option(
            help="On a detected query attack: log (audit and metric only), reject (403) or "
            "suspend (403, and the key is refused until a restart or a change of --keys).",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = "log",
    reveal: Annotated[
        str,
        typer.Option(
            help="What an answer reveals besides the label: label (nothing more), topk:K "
            "or probabilities. Less helps attackers less.",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = "label",
    host: Annotated[
        str, typer.Option(help="Address to listen on.", rich_help_panel=SERVE_PANEL)
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on.", rich_help_panel=SERVE_PANEL)
    ] = 8000,
    keys: Annotated[
        Path | None,
        typer.Option(
            help='TOML file with a [keys] table of name = "key" or name = "sha256:<hex>"; '
            "re-read when it changes.",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Serve without API keys (anyone may query).",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = False,
    rate: Annotated[
        int | None,
        typer.Option(
            help="Images per key per minute (default: no limit).", rich_help_panel=SERVE_PANEL
        ),
    ] = None,
    quota: Annotated[
        int | None,
        typer.Option(
            help="Images per key per UTC day (default: no quota).", rich_help_panel=SERVE_PANEL
        ),
    ] = None,
    audit: Annotated[
        Path | None,
        typer.Option(
            help="JSON-lines audit log: one line per request, image digests only.",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = None,
    class_names: opt.ClassNames = None,
    model_options: opt.ModelOptions,
) -> None:
    """Serve a model over HTTP (POST /v1/classify), guarded against query attacks.

    Requests need an API key from --keys (unless --no-auth); answers reveal only the
    label unless --reveal says otherwise; /metrics serves Prometheus metrics.
    """
    if keys is None and not no_auth:
        raise ConfigError(
            "refusing to serve without API keys: give --keys keys.toml, or --no-auth to let "
            "anyone query the model"
        )
    if keys is not None and no_auth:
        raise ConfigError("--keys and --no-auth exclude each other")
    if stateful not in STATEFUL:
        raise ConfigError(f"--stateful must be blacklight or off, got {stateful!r}")
    for module, package in (
        ("fastapi", "fastapi"),
        ("uvicorn", "uvicorn"),
        ("prometheus_client", "prometheus-client"),
    ):
        try:
            __import__(module)
        except ImportError:
            raise missing_dependency(package, "serve", "pixelguard serve") from None
    import uvicorn

    from pixelguard.serve.app import create_app, parse_output
    from pixelguard.serve.keys import KeyStore

    parse_output(reveal)
    store = KeyStore(keys) if keys is not None else None
    names = opt.parse_class_names(class_names) if class_names is not None else None
    loaded = model_options.load(model)
    opt.echo_detected(loaded)
    classifier, _ = opt.apply_defense(loaded, defense)
    detector = None
    if stateful == "blacklight":
        from pixelguard.serve.blacklight import BlacklightDetector

        detector = BlacklightDetector(db_path=state_db)
    app = create_app(
        classifier,
        keys=store,
        no_auth=no_auth,
        output=reveal,
        detector=detector,
        on_detect=on_detect,
        rate_per_minute=rate,
        quota=quota,
        audit_path=audit,
        class_names=names,
    )
    typer.echo(f"serving {model} on http://{host}:{port}/v1/classify (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
