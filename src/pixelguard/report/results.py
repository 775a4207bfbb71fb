"""The versioned JSON report of an attack run, and the summary of several runs."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pixelguard
from pixelguard.evaluate.attack_run import AttackRun
from pixelguard.evaluate.files import write_json

SCHEMA_VERSION = "1.0"
"""Version of the results.json layout; bumped on any change a reader must know about."""


_HEADLINE = (
    # summary keys copied to the top level of results.json, in this order
    "n_images",
    "clean_accuracy",
    "n_attacked",
    "n_success",
    "success_rate",
    "median_queries",
    "median_pixels_changed",
    "pixels_changed_histogram",
    "wall_time",
)


def _header() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "pixelguard_version": pixelguard.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def results_dict(
    run: AttackRun, *, model_info: Mapping[str, Any], data_info: Mapping[str, Any]
) -> dict[str, Any]:
    """The results report of ``run`` as plain, JSON-serialisable data.

    Args:
        run: the attack run.
        model_info: how the model was given: ``spec``, ``input_shape``, ``options``.
        data_info: how the data was given (spec, source, split, ...).

    Returns:
        ``schema_version``, ``pixelguard_version``, ``created``, ``attack`` (``name``,
        ``params``, ``seed``, ``target``), ``model``, ``data``, the headline numbers
        (``n_images``, ``clean_accuracy``, ``n_attacked``, ``n_success``,
        ``success_rate``, ``median_queries`` and ``median_pixels_changed`` over
        successes, ``wall_time``) and ``images``, one record per attacked image.
    """
    summary = run.summary()
    return {
        **_header(),
        "attack": {
            "name": run.result.attack,
            "params": run.result.params,
            "seed": run.result.seed,
            "target": run.target,
        },
        "model": dict(model_info),
        "data": dict(data_info),
        **{key: summary[key] for key in _HEADLINE},
        "images": run.images(),
    }


def write_results_json(
    path: str | Path,
    run: AttackRun,
    *,
    model_info: Mapping[str, Any],
    data_info: Mapping[str, Any],
) -> Path:
    """Write :func:`results_dict` to ``path`` atomically (a temporary file, then a rename).

    Returns:
        The path written.
    """
    return write_json(path, results_dict(run, model_info=model_info, data_info=data_info))


def write_summary_json(
    path: str | Path,
    runs: Mapping[str, AttackRun],
    *,
    model_info: Mapping[str, Any],
    data_info: Mapping[str, Any],
) -> Path:
    """Write the headline numbers of several runs over the same model and data.

    Args:
        path: the JSON file to write.
        runs: the runs by name (e.g. ``"k1"``, ``"k3"``); each name is also the
            folder holding that run's own reports.
        model_info: as for :func:`results_dict`.
        data_info: as for :func:`results_dict`.

    Returns:
        The path written.
    """
    data = {
        **_header(),
        "model": dict(model_info),
        "data": dict(data_info),
        "runs": [{"name": name, **run.summary()} for name, run in runs.items()],
    }
    return write_json(path, data)
