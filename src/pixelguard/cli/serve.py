"""``pixelguard serve``: serve a model behind keys, limits, a detector and an audit log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixelguard.cli import options as opt
from pixelguard.errors import ConfigError, missing_dependency

if TYPE_CHECKING:
    from pixelguard.models.base import Classifier
    from pixelguard.serve.app import Detector
    from pixelguard.serve.knn import FeatureKnnDetector

SERVE_PANEL = "Server options"
KNN_PANEL = "Feature k-NN detector options (--stateful knn)"
STATEFUL = ("blacklight", "knn", "off")
KNN_SCOPES = ("all", "key")
KNN_K = 10
"""The default ``--knn-k``: :data:`pixelguard.serve.knn.DEFAULT_K`, spelled out so that
``--help`` imports no torch (``tests/serve/test_knn.py`` checks that they agree)."""


@opt.with_options(model_options=opt.ModelOptions)
def serve_command(
    *,
    model: opt.ModelSpec,
    defense: opt.DefenseSpec = None,
    stateful: Annotated[
        str,
        typer.Option(
            help="Stateful detection of query attacks: blacklight (near-duplicate pixels), "
            "knn (feature-space k nearest neighbours, Chen et al.) or off.",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = "off",
    knn_encoder: Annotated[
        str | None,
        typer.Option(
            help="Torch module mapping float32 NCHW [0, 1] images to (N, D) features: "
            "file.py:factory or a TorchScript .pt (default: the served model's penultimate "
            "layer, the input of its last nn.Linear).",
            rich_help_panel=KNN_PANEL,
        ),
    ] = None,
    knn_k: Annotated[
        int,
        typer.Option(help="Nearest neighbours averaged.", rich_help_panel=KNN_PANEL),
    ] = KNN_K,
    knn_threshold: Annotated[
        float | None,
        typer.Option(
            help="Flag a query whose mean distance to its k nearest recent queries (unit-norm "
            "features) is below this (default: calibrated on --calibration-data for a 0.1% "
            "false-positive rate).",
            rich_help_panel=KNN_PANEL,
        ),
    ] = None,
    knn_scope: Annotated[
        str,
        typer.Option(
            help="Compare a query with recent queries of all keys (all: catches attacks "
            "spread over many keys) or of its own key only (key).",
            rich_help_panel=KNN_PANEL,
        ),
    ] = "all",
    calibration_data: Annotated[
        str | None,
        typer.Option(
            help="Clean images (the test split) to calibrate the threshold on, as --data of "
            "other commands: 'digits', .npz, a folder of class folders, MNIST IDX or CIFAR-10 "
            "batches (default: digits, for models of 1x8x8 images).",
            rich_help_panel=KNN_PANEL,
        ),
    ] = None,
    blacklight_neighbours: Annotated[
        int,
        typer.Option(
            help="Blacklight flags a query with this many earlier near-duplicates: a photo "
            "saved anew may be re-sent one time less than this (1: the paper's rule).",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = 4,
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
    max_key_failures: Annotated[
        int,
        typer.Option(
            help="Wrong or missing API keys from one address within a minute that lock it "
            "out for 5 minutes.",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = 20,
    request_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to answer a request: a body not received by then gets 408, an "
            "image not classified by then 503.",
            rich_help_panel=SERVE_PANEL,
        ),
    ] = 30.0,
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
    if blacklight_neighbours != 4 and stateful != "blacklight":
        raise ConfigError("--blacklight-neighbours applies only with --stateful blacklight")
    if blacklight_neighbours < 1:
        raise ConfigError(
            f"--blacklight-neighbours must be at least 1, got {blacklight_neighbours}"
        )
    if request_timeout <= 0:
        raise ConfigError(f"--request-timeout must be positive, got {request_timeout:g}")
    if max_key_failures < 1:
        raise ConfigError(f"--max-key-failures must be at least 1, got {max_key_failures}")
    if stateful not in STATEFUL:
        raise ConfigError(f"--stateful must be blacklight, knn or off, got {stateful!r}")
    knn_given = [
        flag
        for flag, value, default in (
            ("--knn-encoder", knn_encoder, None),
            ("--knn-k", knn_k, KNN_K),
            ("--knn-threshold", knn_threshold, None),
            ("--knn-scope", knn_scope, "all"),
            ("--calibration-data", calibration_data, None),
        )
        if value != default
    ]
    if stateful != "knn" and knn_given:
        verb = "applies" if len(knn_given) == 1 else "apply"
        raise ConfigError(f"{', '.join(knn_given)} {verb} only with --stateful knn")
    if knn_scope not in KNN_SCOPES:
        raise ConfigError(f"--knn-scope must be all or key, got {knn_scope!r}")
    if knn_threshold is not None and not 0 < knn_threshold <= 2:
        raise ConfigError(
            f"--knn-threshold must be in (0, 2] (distances of unit-norm features), "
            f"got {knn_threshold:g}"
        )
    if knn_threshold is not None and calibration_data is not None:
        raise ConfigError("--knn-threshold and --calibration-data exclude each other")
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

    try:
        parse_output(reveal)
    except ConfigError:
        raise ConfigError(
            f"--reveal must be label, topk:K (K >= 1) or probabilities, got {reveal!r}"
        ) from None
    store = KeyStore(keys) if keys is not None else None
    names = opt.parse_class_names(class_names) if class_names is not None else None
    loaded = model_options.load(model)
    opt.echo_detected(loaded)
    classifier, _ = opt.apply_defense(loaded, defense)
    detector: Detector | None = None
    if stateful == "blacklight":
        from pixelguard.serve.blacklight import BlacklightDetector

        detector = BlacklightDetector(db_path=state_db, neighbours=blacklight_neighbours)
    elif stateful == "knn":
        detector = _knn_detector(
            classifier,
            encoder=knn_encoder,
            k=knn_k,
            threshold=knn_threshold,
            scope=knn_scope,
            calibration_data=calibration_data,
            state_db=state_db,
            model_options=model_options,
        )
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
        max_key_failures=max_key_failures,
        request_timeout=request_timeout,
    )
    typer.echo(f"serving {model} on http://{host}:{port}/v1/classify (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _knn_detector(
    classifier: Classifier,
    *,
    encoder: str | None,
    k: int,
    threshold: float | None,
    scope: str,
    calibration_data: str | None,
    state_db: Path | None,
    model_options: opt.ModelOptions,
) -> FeatureKnnDetector:
    """The feature k-NN detector of ``--stateful knn``, its threshold calibrated on clean
    images unless ``--knn-threshold`` gives it (the threshold is printed)."""
    from pixelguard.serve.knn import (
        DEFAULT_FPR,
        DEFAULT_MAX_ENTRIES,
        FeatureKnnDetector,
        calibrate_threshold,
        load_encoder,
        penultimate_encoder,
    )

    shape = classifier.input_shape
    features = (
        penultimate_encoder(classifier)
        if encoder is None
        else load_encoder(
            encoder,
            shape,
            device=model_options.device,
            trust_pickle=model_options.trust_pickle,
        )
    )
    if threshold is None:
        spec = calibration_data or "digits"
        clean = opt.DataOptions().load(spec)
        if clean.image_shape != shape:
            given = "" if calibration_data else " (the default, digits)"
            raise ConfigError(
                f"--calibration-data {spec}{given} holds {_shape(clean.image_shape)} images but "
                f"the model takes {_shape(shape)}: give clean images of its size to calibrate "
                "the feature k-NN threshold on, or --knn-threshold"
            )
        threshold = calibrate_threshold(features, clean.x, k=k)
        typer.echo(
            f"knn     threshold {threshold:.4g} (k={k}), calibrated on {len(clean)} clean images "
            f"of {spec} for {DEFAULT_FPR:.1%} false positives; a buffer of more queries than "
            f"that (it keeps up to {DEFAULT_MAX_ENTRIES:,}) flags more clean ones"
        )
    return FeatureKnnDetector(features, state_db, threshold=threshold, k=k, scope=scope)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
