"""Numbers derived from an evaluation's report.json data, shared by its Markdown and HTML views.

Every function here reads the plain ``evaluation-1.0`` dict (:meth:`Evaluation.to_dict`,
or report.json read back), never the tensors, so reports re-render from files alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pixelguard.errors import ConfigError
from pixelguard.evaluate.runner import Evaluation
from pixelguard.evaluate.suite import PIXELS_BUDGET, parse_budget_label

Report = Mapping[str, Any]
"""An evaluation's report.json data (schema ``evaluation-1.0``)."""

FAMILY_AXIS_TITLES = {
    PIXELS_BUDGET: "pixel budget k (most pixels changed)",
    "linf": "L\u221e budget \u03b5 (largest change per value)",
}


def as_report(evaluation: Evaluation | Report) -> Report:
    """The report data of ``evaluation``: its :meth:`~Evaluation.to_dict`, or the dict itself."""
    return evaluation.to_dict() if isinstance(evaluation, Evaluation) else evaluation


def percent(value: float | None) -> str:
    """``0.981`` -> ``"98.1%"``; None -> ``"-"``."""
    return "-" if value is None else f"{100 * value:.1f}%"


def plural(count: int, noun: str) -> str:
    """``(1, "pixel")`` -> ``"1 pixel"``; ``(3, "pixel")`` -> ``"3 pixels"``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def defense_fields(defense: Mapping[str, Any] | None) -> dict[str, str]:
    """The defense a report names as ``{"name", "parameters", "adaptive attacks"}`` texts.

    Keys appear only when the report gives them; no defense gives ``{}``.
    """
    if not defense:
        return {}
    fields = {"name": str(defense.get("name", "unnamed"))}
    params = defense.get("params")
    if params:
        fields["parameters"] = ", ".join(f"{key}={value}" for key, value in dict(params).items())
    adaptive = defense.get("adaptive_attacks")
    if adaptive is not None:
        listed = ", ".join(map(str, adaptive)) if isinstance(adaptive, list | tuple) else adaptive
        fields["adaptive attacks"] = str(listed) or "none"
    return fields


def defense_text(defense: Mapping[str, Any] | None) -> str:
    """The defense a report names, in one line (empty: none).

    ``{"name": "median", "params": {"size": 3}, "adaptive_attacks": ["bpda"]}`` ->
    ``"median (size=3); adaptive attacks: bpda"``.
    """
    fields = defense_fields(defense)
    if not fields:
        return ""
    text = fields["name"]
    if "parameters" in fields:
        text += f" ({fields['parameters']})"
    if "adaptive attacks" in fields:
        text += f"; adaptive attacks: {fields['adaptive attacks']}"
    return text


def class_name(report: Report, label: int) -> str:
    """The name of class ``label``: from ``class_names`` when the report has them."""
    names = report.get("class_names")
    return str(names[label]) if names and 0 <= label < len(names) else str(label)


def budget_family(label: str) -> tuple[str, float]:
    """``"pixels=3"`` -> ``("pixels", 3.0)``; a label of another form is its own family at 0."""
    try:
        return parse_budget_label(label)
    except ConfigError:
        return label, 0.0


def budget_families(report: Report) -> dict[str, list[tuple[float, str]]]:
    """The budget labels grouped by kind, each family sorted by value.

    Returns:
        ``{"pixels": [(1.0, "pixels=1"), (3.0, "pixels=3")], "linf": [...]}`` in the
        order the kinds first appear.
    """
    families: dict[str, list[tuple[float, str]]] = {}
    for budget in report["budgets"]:
        kind, value = budget_family(budget["budget"])
        families.setdefault(kind, []).append((value, budget["budget"]))
    return {kind: sorted(members) for kind, members in families.items()}


@dataclass(frozen=True)
class FewestPixels:
    """The fewest pixels that fooled the model, per image broken at some pixel budget.

    Attributes:
        counts: pixels changed by the smallest breaking adversarial of each such image.
        n_images: the images evaluated.
    """

    counts: list[int]
    n_images: int

    @property
    def median(self) -> float | None:
        """Median of :attr:`counts` (None: no image was broken)."""
        return float(statistics.median(self.counts)) if self.counts else None


def fewest_pixels(report: Report) -> FewestPixels | None:
    """Over the pixel budgets, the fewest pixels changed to break each image (None: no such budget)."""
    pixel_budgets = [b for b in report["budgets"] if budget_family(b["budget"])[0] == PIXELS_BUDGET]
    if not pixel_budgets:
        return None
    fewest: dict[int, int] = {}
    for budget in pixel_budgets:
        for image in budget["images"]:
            if image["broken_by"] is not None:
                previous = fewest.get(image["index"], image["pixels_changed"])
                fewest[image["index"]] = min(previous, image["pixels_changed"])
    return FewestPixels(sorted(fewest.values()), report["n_images"])


@dataclass(frozen=True)
class QueryCurve:
    """How fast one attack at one budget fooled the images it was given.

    Attributes:
        budget: the budget label.
        attack: the attack's name.
        n_attacked: the images it was given.
        queries: the queries spent on each image it fooled, ascending (at that
            budget, so including the attacks that ran before it and failed).
    """

    budget: str
    attack: str
    n_attacked: int
    queries: list[int]

    def cumulative(self) -> list[tuple[int, float]]:
        """``(q, share of the attacked images fooled within q queries)`` at each distinct q."""
        points: dict[int, float] = {}
        for fooled, q in enumerate(self.queries, start=1):
            points[q] = fooled / self.n_attacked
        return list(points.items())


def query_curves(report: Report) -> list[QueryCurve]:
    """One :class:`QueryCurve` per attack and budget, in suite order."""
    images = {budget["budget"]: budget["images"] for budget in report["budgets"]}
    return [
        QueryCurve(
            budget=stat["budget"],
            attack=stat["attack"],
            n_attacked=stat["n_attacked"],
            queries=sorted(
                image["queries"]
                for image in images.get(stat["budget"], [])
                if image["broken_by"] == stat["attack"]
            ),
        )
        for stat in report["attacks"]
    ]
