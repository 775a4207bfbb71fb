"""The versioned JSON report of an attack run, and the summary of several runs."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pixelguard._version import __version__
from pixelguard.evaluate.attack_run import AttackRun
from pixelguard.files import write_json

SCHEMA_VERSION = "1.1"
"""Version of the results.json layout; bumped on any change a reader must know about.

1.1 added ``attack.budget``, ``n_correct``, ``n_already_target``, ``warnings`` and ``wire``.
"""


_HEADLINE = (
    # summary keys copied to the top level of results.json, in this order
    "n_images",
    "clean_accuracy",
    "n_correct",
    "n_already_target",
    "n_attacked",
    "n_success",
    "success_rate",
    "median_queries",
    "median_pixels_changed",
    "pixels_changed_histogram",
    "wall_time",
    "warnings",
    "wire",
)


def _header() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "pixelguard_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _known_model_info(run: AttackRun) -> dict[str, Any]:
    """What ``run`` tells of its model, for a report given no ``model_info``: its input shape."""
    return {"spec": None, "input_shape": list(run.image_shape)}


def _known_data_info(run: AttackRun) -> dict[str, Any]:
    """What ``run`` tells of its data, for a report given no ``data_info``."""
    return {
        "spec": None,
        "source": run.source,
        "n_images": run.n_images,
        "image_shape": list(run.image_shape),
        "class_names": run.class_names,
    }


def results_dict(
    run: AttackRun,
    *,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results report of ``run`` as plain, JSON-serialisable data.

    Args:
        run: the attack run.
        model_info: how the model was given: ``spec``, ``input_shape``, ``options``
            (None: what the run knows, a ``spec`` of None and the input shape).
        data_info: how the data was given (spec, source, split, ...; None: what the
            run knows, a ``spec`` of None, the source, size and class names).

    Returns:
        ``schema_version``, ``pixelguard_version``, ``created``, ``attack`` (``name``,
        ``params``, ``seed``, ``budget`` in queries per image, ``target``), ``model``,
        ``data``, the headline numbers (``n_images``, ``clean_accuracy``,
        ``n_correct``, ``n_already_target`` (correctly classified images of the
        target class, not attacked), ``n_attacked``, ``n_success``, ``success_rate``,
        ``median_queries`` and ``median_pixels_changed`` over successes, the
        histogram of pixels changed, ``wall_time``), ``warnings`` (sentences; empty
        when all looks sound), ``wire`` (what went over the wire to an HTTP endpoint,
        see :class:`~pixelguard.evaluate.attack_run.WireStats`; null for other
        models) and ``images``, one record per attacked image.
    """
    summary = run.summary()
    return {
        **_header(),
        "attack": {
            "name": run.result.attack,
            "params": run.result.params,
            "seed": run.result.seed,
            "budget": run.result.budget,
            "target": run.target,
        },
        "model": dict(model_info) if model_info is not None else _known_model_info(run),
        "data": dict(data_info) if data_info is not None else _known_data_info(run),
        **{key: summary[key] for key in _HEADLINE},
        "images": run.images(),
    }


def write_results_json(
    path: str | Path,
    run: AttackRun,
    *,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
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
