"""Screen a training set for poison end to end: features, scan, scores, retraining, reports.

``pixelguard scan-data`` runs :func:`scan_training_set` then :func:`write_scan_reports`:
penultimate features of the model (see :mod:`pixelguard.poisoning.features`), one
screening method, precision/recall/F1 against the true poison mask when the data
carries one, and optionally a network retrained without the flagged images with its
clean accuracy and attack success rate on clean test images.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelguard.data.base import Dataset
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.models.base import Classifier
from pixelguard.models.training import TrainProgress
from pixelguard.poisoning.activation_clustering import ActivationClustering
from pixelguard.poisoning.backdoor import backdoor_metrics
from pixelguard.poisoning.features import penultimate_features
from pixelguard.poisoning.screening import ScanResult, ScreeningMetrics, screening_metrics
from pixelguard.poisoning.spectral import SpectralSignatures
from pixelguard.poisoning.triggers import Trigger

SCHEMA_VERSION = "pixelguard-scan/1"
"""The ``schema_version`` of ``scan.json``."""

METHODS: dict[str, type[SpectralSignatures] | type[ActivationClustering]] = {
    "spectral": SpectralSignatures,
    "activation-clustering": ActivationClustering,
}
"""The screening methods by name."""

Screen = SpectralSignatures | ActivationClustering

REPORT_IMAGES = 48
"""Most flagged images shown in ``report.html``."""
IMAGE_SIDE = 72


def create_screen(method: str, **settings: Any) -> Screen:
    """A screening method by name (see :data:`METHODS`) with its settings.

    Raises:
        ConfigError: an unknown method or setting, or a bad value.
    """
    cls = METHODS.get(method)
    if cls is None:
        raise ConfigError(f"unknown screening method {method!r}; choose {', '.join(METHODS)}")
    try:
        return cls(**settings)
    except TypeError as exc:
        fields = ", ".join(cls.__dataclass_fields__)
        raise ConfigError(f"{method} takes the settings {fields}; got {sorted(settings)}") from exc


@dataclass(frozen=True)
class Backdoor:
    """What the ASR after retraining is measured against: the trigger and its target."""

    trigger: Trigger
    target: int | None
    mode: str


@dataclass(frozen=True)
class ScreeningRun:
    """One screen of a training set, scored and (optionally) followed by retraining.

    Attributes:
        scan: the flags.
        metrics: flags against the true poison mask (None when it is unknown).
        poison_mask: the true mask, when known.
        retrain: the retrained network's numbers: ``n_kept``, ``n_removed``,
            ``arch``, ``epochs``, ``seed``, ``train_accuracy``, ``seconds``, and with
            test data ``clean_accuracy``, ``attack_success_rate`` (and intervals).
        before: the screened model's clean accuracy and ASR on the same test data.
        seconds: time for features and scan.
    """

    scan: ScanResult
    metrics: ScreeningMetrics | None
    poison_mask: torch.Tensor | None
    retrain: dict[str, Any] | None
    before: dict[str, Any] | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The body of ``scan.json`` (without model and data descriptions)."""
        scan = self.scan.to_dict()
        return {
            "schema_version": SCHEMA_VERSION,
            "method": scan["method"],
            "settings": scan["settings"],
            "n_images": scan["n_images"],
            "n_flagged": scan["n_flagged"],
            "flagged_indices": torch.nonzero(self.scan.flagged).flatten().tolist(),
            "classes": scan["classes"],
            "poison_mask_known": self.poison_mask is not None,
            "n_poisoned": None if self.poison_mask is None else int(self.poison_mask.sum()),
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "before": self.before,
            "retrain": self.retrain,
            "seconds": round(self.seconds, 3),
        }


def check_screenable(model: Classifier, dataset: Dataset) -> None:
    """Refuse, before any work, a model whose features cannot be read or that does not
    fit the data.

    Raises:
        CapabilityError: a model other than a torch one with a last ``nn.Linear``
            (see :mod:`pixelguard.poisoning.features`).
        ShapeError: images of another shape than the model's input, or labels
            beyond the model's classes.
    """
    penultimate_features(model, dataset.x[:2])  # type: ignore[arg-type]
    if tuple(model.input_shape) != tuple(dataset.image_shape):
        raise ShapeError(
            f"the model takes images of shape {tuple(model.input_shape)}, the data's are "
            f"{dataset.image_shape}"
        )
    if len(dataset) and int(dataset.y.max()) >= model.num_classes:
        raise ShapeError(
            f"labels reach {int(dataset.y.max())} but the model has {model.num_classes} classes"
        )


def scan_training_set(
    model: Classifier,
    dataset: Dataset,
    screen: Screen,
    *,
    poison_mask: torch.Tensor | None = None,
    backdoor: Backdoor | None = None,
    test: Dataset | None = None,
    retrain: bool = False,
    arch: str = "small-cnn",
    epochs: int = 20,
    seed: int = 0,
    progress: TrainProgress | None = None,
) -> ScreeningRun:
    """Screen ``dataset`` (the training set of ``model``) for poison.

    Args:
        model: the model trained on ``dataset``: a torch model with a last
            ``nn.Linear`` (see :mod:`pixelguard.poisoning.features`).
        dataset: the training images and the labels the model was trained on.
        screen: the method, e.g. ``SpectralSignatures()``.
        poison_mask: which images are truly poisoned, when known (for P/R/F1).
        backdoor: the trigger and target, for the attack success rate on ``test``.
        test: clean test images for accuracy and ASR, before and after retraining.
        retrain: train a fresh ``arch`` network on the images not flagged.
        arch: the zoo architecture to retrain.
        epochs: passes over the kept images.
        seed: seed of the retraining.
        progress: called after each retraining epoch.

    Returns:
        The scan, its scores and the retraining results.

    Shape:
        dataset.x: (N, C, H, W) float32 in [0, 1]; poison_mask: (N,) bool.

    Raises:
        CapabilityError: a model whose features cannot be read.
        ShapeError: a mask or test set that does not fit the data.
    """
    check_screenable(model, dataset)
    if poison_mask is not None and tuple(poison_mask.shape) != (len(dataset),):
        raise ShapeError(
            f"the poison mask has shape {tuple(poison_mask.shape)}, the data {len(dataset)} images"
        )
    if test is not None and test.image_shape != dataset.image_shape:
        raise ShapeError(
            f"test images have shape {test.image_shape}, training images {dataset.image_shape}"
        )
    start = time.perf_counter()
    features = penultimate_features(model, dataset.x)  # type: ignore[arg-type]
    result = screen.scan(features, dataset.y)
    seconds = time.perf_counter() - start
    mask = None if poison_mask is None else poison_mask.detach().cpu().bool()
    metrics = None if mask is None else screening_metrics(result.flagged, mask)
    before = _test_numbers(model, test, backdoor)
    retrained = None
    if retrain:
        retrained = retrain_without(
            dataset, result.flagged, test=test, backdoor=backdoor, arch=arch,
            epochs=epochs, seed=seed, progress=progress,
        )  # fmt: skip
    return ScreeningRun(result, metrics, mask, retrained, before, seconds)


def retrain_without(
    dataset: Dataset,
    flagged: torch.Tensor,
    *,
    test: Dataset | None = None,
    backdoor: Backdoor | None = None,
    arch: str = "small-cnn",
    epochs: int = 20,
    seed: int = 0,
    progress: TrainProgress | None = None,
) -> dict[str, Any]:
    """Train a fresh network on the images not ``flagged`` and measure it on ``test``.

    Raises:
        ConfigError: every image flagged, or bad training settings.
    """
    from pixelguard.workflows.training import train_on_dataset

    keep = torch.nonzero(~flagged.bool()).flatten()
    if keep.numel() == 0:
        raise ConfigError("every training image was flagged: nothing left to retrain on")
    trained = train_on_dataset(
        dataset.subset(keep), arch=arch, epochs=epochs, seed=seed, progress=progress
    )
    numbers: dict[str, Any] = {
        "n_kept": int(keep.numel()),
        "n_removed": int(flagged.sum()),
        "arch": arch,
        "epochs": epochs,
        "seed": seed,
        "train_accuracy": round(float(trained.metrics["train_accuracy"]), 6),
        "seconds": round(float(trained.metrics["seconds"]), 3),
    }
    return {**numbers, **(_test_numbers(trained.classifier(), test, backdoor) or {})}


def _test_numbers(
    model: Classifier, test: Dataset | None, backdoor: Backdoor | None
) -> dict[str, Any] | None:
    """Clean accuracy (and ASR with a backdoor) of ``model`` on ``test``; None without test."""
    if test is None:
        return None
    if backdoor is None:
        pred = model.predict(test.x).argmax(dim=1).cpu()
        return {"clean_accuracy": round(float((pred == test.y).float().mean()), 6)}
    measured = backdoor_metrics(
        model, test, backdoor.trigger, target=backdoor.target, mode=backdoor.mode
    )
    return measured.to_dict()


def headline(run: ScreeningRun) -> str:
    """The result in one sentence."""
    data = run.to_dict()
    text = f"{data['method']} flagged {data['n_flagged']:,} of {data['n_images']:,} training images"
    if run.metrics is not None:
        m = run.metrics
        text += (
            f": {m.true_positives:,} of the {data['n_poisoned']:,} poisoned images found "
            f"(recall {m.recall:.1%}), {m.false_positives:,} clean images flagged "
            f"(precision {m.precision:.1%}, F1 {m.f1:.3f})"
        )
    retrained = run.retrain or {}
    if "attack_success_rate" in retrained:
        was = (run.before or {}).get("attack_success_rate")
        before = "" if was is None else f" (was {was:.1%})"
        text += (
            f"; retrained without them, the backdoor succeeds on "
            f"{retrained['attack_success_rate']:.1%} of triggered test images{before} at "
            f"{retrained['clean_accuracy']:.1%} clean accuracy"
        )
    return text + "."


def write_scan_reports(
    out: str | Path, run: ScreeningRun, dataset: Dataset, extra: Mapping[str, Any]
) -> list[Path]:
    """Write ``out/scan.json`` and ``out/report.html`` (atomically; the folder is created).

    Args:
        out: the output folder.
        run: the screen.
        dataset: the screened images (shown in the report).
        extra: more top-level fields for ``scan.json`` (model and data descriptions).
    """
    from pixelguard.files import write_json, write_text

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    data = {**run.to_dict(), "headline": headline(run), **extra}
    html = scan_html(run, dataset, data)
    return [write_json(folder / "scan.json", data), write_text(folder / "report.html", html)]


def scan_html(run: ScreeningRun, dataset: Dataset, data: Mapping[str, Any]) -> str:
    """The self-contained HTML page of a screen: headline, tiles, classes, flagged images."""
    from pixelguard.report.html import Html, esc, join, page, section, table, tag, tile
    from pixelguard.report.images import png_data_uri, to_rgb, upscale

    tiles = [tile("flagged", f"{data['n_flagged']:,}", f"of {data['n_images']:,} images")]
    if run.metrics is not None:
        m = run.metrics
        tiles += [
            tile("precision", f"{m.precision:.1%}", f"{m.true_positives:,} true positives"),
            tile("recall", f"{m.recall:.1%}", f"of {data['n_poisoned']:,} poisoned"),
            tile("F1", f"{m.f1:.3f}"),
        ]
    retrained = run.retrain or {}
    if "attack_success_rate" in retrained:
        tiles.append(
            tile(
                "ASR after retraining",
                f"{retrained['attack_success_rate']:.1%}",
                f"clean accuracy {retrained['clean_accuracy']:.1%}",
                tone="good" if retrained["attack_success_rate"] < 0.05 else "bad",
            )
        )
    summary = section(
        "summary",
        "Summary",
        tag("p", headline(run)),
        tag("div", join(tiles), class_="tiles"),
        tag("p", f"settings: {data['settings']}", class_="muted"),
    )
    names = dataset.class_names
    rows = []
    for c in data["classes"]:
        label = c["label"]
        rows.append(
            [
                label if names is None else f"{label} ({names[label]})",
                f"{c['n']:,}",
                f"{c['n_flagged']:,}",
                "yes" if c.get("poisoned", c["n_flagged"] > 0) else "no",
                ", ".join(
                    f"{k} {v}"
                    for k, v in c.items()
                    if k not in {"label", "n", "n_flagged", "poisoned"}
                ),
            ]
        )
    classes = section(
        "classes",
        "Per class",
        table(
            ["class", "images", "flagged", "flagged as poisoned", "details"], rows, numeric=[1, 2]
        ),
    )
    shown = run.scan.most_suspicious(REPORT_IMAGES).tolist()
    cards = []
    for index in shown:
        rgb = upscale(to_rgb(dataset.x[index].numpy()), IMAGE_SIDE)
        label = int(dataset.y[index])
        caption = f"#{index} label {label if names is None else names[label]}"
        verdict = ""
        if run.poison_mask is not None:
            verdict = "poisoned" if bool(run.poison_mask[index]) else "clean (false positive)"
        image = Html(f'<img src="{png_data_uri(rgb)}" alt="{esc(caption)}">')
        parts = [image, tag("span", caption)]
        if verdict:
            colour = "var(--good)" if verdict == "poisoned" else "var(--bad)"
            parts.append(tag("span", verdict, style=f"display:block;color:{colour}"))
        cards.append(tag("div", join(parts), class_="panel"))
    intro = f"The {len(shown)} most suspicious flagged images (highest score first)" + (
        "; marked with the truth from the poison mask." if run.poison_mask is not None else "."
    )
    images = section(
        "flagged",
        "Flagged images",
        tag("div", join(cards), class_="panels", style="flex-wrap:wrap")
        if cards
        else tag("p", "No image was flagged.", class_="muted"),
        intro=intro,
    )
    source = esc(data.get("data", {}).get("source", dataset.source))
    return page(
        "pixelguard scan-data",
        f"{data['method']} screen of {source}",
        [("summary", "Summary"), ("classes", "Per class"), ("flagged", "Flagged images")],
        [summary, classes, images],
    )
