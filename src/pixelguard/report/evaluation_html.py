"""report.html: an evaluation as one self-contained page a person wants to read.

Rendered from the report.json data and, for the example images, the arrays of
adversarial.npz, so ``pixelguard report DIR`` re-renders it from files alone. The
headline, the intervals and what was evaluated are shared with report.md, the
comparison and the command line; they need only fields every report.json has
(schema 1.0 on), so older reports render too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from pixelguard.evaluate.runner import (
    CONFIDENCE_LEVEL,
    accuracy_interval,
    headline,
    headline_text,
)
from pixelguard.metrics.classification import confusion_matrix
from pixelguard.report.arrays import EvaluationArrays
from pixelguard.report.html import (
    HeatCell,
    Html,
    defense_box,
    esc,
    figure,
    flags_box,
    heat_table,
    join,
    page,
    points,
    section,
    table,
    tag,
    tile,
)
from pixelguard.report.images import difference_rgb, png_data_uri, to_rgb, upscale
from pixelguard.report.summary import (
    FAMILY_AXIS_TITLES,
    Report,
    budget_families,
    class_name,
    fewest_pixels,
    percent,
    plural,
    query_curves,
)
from pixelguard.report.svg import PALETTE, Axis, Series, line_chart, log_ticks, percent_axis

EXAMPLES_PER_BUDGET = 6
"""Most example images shown per budget."""
IMAGE_SIDE = 96
"""Side in pixels the example images are upscaled to (nearest neighbour)."""
MAX_CONFUSION_CLASSES = 30
"""Confusion matrices of more classes are left out: they would not be readable."""
NO_ARRAYS = "no adversarial.npz was given, so there are no images to show"
"""Why the image grid is missing when the page is rendered without arrays."""

METRIC_SHADE = "78, 121, 167"
CORRECT_SHADE = "89, 161, 79"
WRONG_SHADE = "225, 87, 89"

NAV = (
    ("verdict", "Verdict"),
    ("robustness", "Robust accuracy"),
    ("examples", "Examples"),
    ("attacks", "Attacks"),
    ("classes", "Per class"),
    ("confusion", "Confusion"),
)


def interval_range(accuracy: float, n: int) -> str:
    """The :data:`CONFIDENCE_LEVEL` interval of an accuracy over ``n`` images: ``"35.2-45.1%"``."""
    low, high = accuracy_interval(accuracy, n)
    return f"{100 * low:.1f}-{100 * high:.1f}%"


def interval_text(accuracy: float, n: int) -> str:
    """An accuracy with its interval: ``"40.1% (95% CI 35.2-45.1%, n=400)"``."""
    return f"{percent(accuracy)} ({CONFIDENCE_LEVEL:.0%} CI {interval_range(accuracy, n)}, n={n:,})"


def accuracy_rows(report: Report) -> list[tuple[str, str]]:
    """``("clean", interval text)``, then ``(budget, interval text)`` per budget in suite order."""
    n = report["n_images"]
    rows = [("clean", interval_text(report["clean_accuracy"], n))]
    return rows + [
        (label, interval_text(acc, n)) for label, acc in report["robust_accuracy"].items()
    ]


def verdict(report: Report) -> str:
    """One line: the headline (:func:`~pixelguard.evaluate.runner.headline_text`) and the
    number of warning signs."""
    line = headline_text(report["clean_accuracy"], report["robust_accuracy"])
    count = len(report["flags"])
    if count:
        line += f"; {plural(count, 'warning sign')}, see Flags"
    return line + "."


def evaluated_rows(report: Report) -> list[tuple[str, str]]:
    """What was evaluated, as far as the report says: model, data, images, suite, seed."""
    model = report.get("model") or {}
    data = report.get("data") or {}
    rows = []
    if model.get("spec"):
        rows.append(("model", str(model["spec"])))
    if data.get("spec"):
        split = f", {data['split']} split" if data.get("split") else ""
        rows.append(("data", f"{data['spec']}{split}"))
    n, drawn_from = report["n_images"], data.get("drawn_from")
    if data.get("limit") is not None and drawn_from is not None and n < drawn_from:
        images = f"{n:,} of {drawn_from:,}, drawn at random (--limit {data['limit']})"
    else:
        images = f"{n:,}, all of the data" if drawn_from is not None else f"{n:,}"
    rows.append(("images", images))
    rows.append(("suite", f"{report.get('suite', '?')}: {', '.join(report['robust_accuracy'])}"))
    if data.get("seed") is not None:
        rows.append(("seed", str(data["seed"])))
    return rows


def headline_tiles(report: Report) -> list[Html]:
    """Per kind of budget, a tile: the smallest budget below half of clean, else the worst."""
    n = report["n_images"]
    tiles = []
    for part in headline(report["clean_accuracy"], report["robust_accuracy"]):
        accuracy = percent(part.robust_accuracy)
        interval = f"CI {interval_range(part.robust_accuracy, n)}"
        if part.below_half:
            note = f"robust accuracy {accuracy}, {interval}"
            tiles.append(tile("Below half of clean at", part.budget, note, tone="bad"))
        else:
            title = f"{part.kind}: holds half of clean"
            tiles.append(tile(title, accuracy, f"worst, at {part.budget}; {interval}", tone="good"))
    return tiles


def evaluation_html(
    report: Report, arrays: EvaluationArrays | None = None, *, images_note: str = NO_ARRAYS
) -> str:
    """The evaluation page.

    Args:
        report: the report.json data (schema ``evaluation-1.0``).
        arrays: the images (None: the page shows no example grid and says why).
        images_note: why ``arrays`` is None, shown in place of the grid.

    Returns:
        The complete HTML document.
    """
    suite = report.get("suite", "")
    subtitle = " \u00b7 ".join(
        part
        for part in (
            _source(report),
            f"{report['n_images']:,} images",
            f"{report.get('num_classes', '?')} classes",
            f"model outputs {report.get('output', '?')}",
            f"pixelguard {report.get('pixelguard_version', '?')}",
            report.get("created", ""),
        )
        if part
    )
    body = [
        _verdict_section(report),
        _robustness_section(report),
        _examples_section(report, arrays, images_note),
        _attacks_section(report),
        _per_class_section(report),
        _confusion_section(report),
        tag(
            "footer",
            "An image counts as robust at a budget only if every attack of that budget failed; "
            "robust accuracy is over all images, so it never exceeds the clean accuracy.",
        ),
    ]
    return page(f"pixelguard evaluation: {suite} suite", subtitle, NAV, body)


def _source(report: Report) -> str:
    """The model and data the report names, when it names them."""
    return ", ".join(
        f"{what} {text}" for what, text in evaluated_rows(report) if what in ("model", "data")
    )


def _verdict_section(report: Report) -> Html:
    clean, n = report["clean_accuracy"], report["n_images"]
    correct = sum(image["label"] == image["clean_pred"] for image in report["images"])
    note = f"{correct:,} of {n:,} images; {CONFIDENCE_LEVEL:.0%} CI {interval_range(clean, n)}"
    tiles = [tile("Clean accuracy", percent(clean), note), *headline_tiles(report)]
    fewest = fewest_pixels(report)
    if fewest is not None and fewest.median is not None:
        note = f"median over the {len(fewest.counts)} images a pixel attack broke"
        tiles.append(tile("Fewest pixels to fool", f"{fewest.median:g}", note))
    count = len(report["flags"])
    tiles.append(
        tile(
            "Warning signs",
            str(count),
            "see below" if count else "none",
            tone="warn" if count else "good",
        )
    )
    return section(
        "verdict",
        "Verdict",
        tag("div", join(tiles), class_="tiles"),
        tag("p", tag("strong", verdict(report)), class_="verdict"),
        table(["evaluated", ""], evaluated_rows(report)),
        flags_box(report["flags"]),
        defense_box(report.get("defense")),
    )


def _robustness_section(report: Report) -> Html:
    clean = report["clean_accuracy"]
    charts = []
    for kind, members in budget_families(report).items():
        values = [value for value, _ in members]
        line = Series(
            "robust accuracy",
            [(0.0, clean)]
            + [(value, report["robust_accuracy"][label]) for value, label in members],
            PALETTE[0],
        )
        svg = line_chart(
            [line],
            title=f"Robust accuracy against the {kind} budget",
            x=Axis(FAMILY_AXIS_TITLES.get(kind, f"{kind} budget"), [0.0, *values]),
            y=percent_axis("robust accuracy"),
        )
        charts.append(figure(svg))
    rows = []
    for budget in report["budgets"]:
        label, robust = budget["budget"], budget["robust_accuracy"]
        breakers = Counter(i["broken_by"] for i in budget["images"] if i["broken_by"] is not None)
        rows.append(
            [
                label,
                percent(robust),
                interval_range(robust, report["n_images"]),
                points(robust - clean),
                str(sum(breakers.values())),
                ", ".join(f"{name} {n}" for name, n in breakers.items()) or "-",
            ]
        )
    return section(
        "robustness",
        "Robust accuracy",
        tag("div", join(charts), class_="charts"),
        table(
            [
                "budget",
                "robust accuracy",
                f"{CONFIDENCE_LEVEL:.0%} CI",
                "vs clean",
                "broken",
                "broken by",
            ],
            rows,
            numeric=(1, 2, 3, 4),
        ),
        intro="The share of all images still classified correctly after every attack of a budget "
        "tried, one chart per kind of budget; budget 0 is the clean accuracy. The interval "
        f"(Clopper-Pearson, {CONFIDENCE_LEVEL:.0%}) is how far the share could be off for "
        f"this number of images ({report['n_images']:,}).",
    )


def _examples_section(report: Report, arrays: EvaluationArrays | None, note: str) -> Html:
    title = "Adversarial examples"
    if arrays is not None and arrays.x.shape[0] != report["n_images"]:
        note = (
            f"adversarial.npz holds {arrays.x.shape[0]} images but report.json "
            f"{report['n_images']}: they are not of the same evaluation"
        )
        arrays = None
    if arrays is None:
        return section("examples", title, tag("p", f"No images: {note}.", class_="callout warn"))
    parts = []
    for budget in report["budgets"]:
        stored = arrays.budget(budget["budget"])
        broken = [image for image in budget["images"] if image["broken_by"] is not None]
        heading = f"{budget['budget']} \u00b7 {len(broken)} of {report['n_images']} images broken"
        parts.append(tag("h3", heading))
        if stored is None:
            parts.append(tag("p", "adversarial.npz does not hold this budget.", class_="muted"))
            continue
        if not broken:
            parts.append(tag("p", "No image was broken at this budget.", class_="muted"))
            continue
        shown = sorted(broken, key=lambda i: (i["pixels_changed"], -i["confidence"]))
        cards = []
        for image in shown[:EXAMPLES_PER_BUDGET]:
            index = image["index"]
            adversarial = stored.image(index, arrays.x)
            cards.append(_example(report, image, arrays.x[index], adversarial))
        parts.append(tag("div", join(cards), class_="examples"))
    return section(
        "examples",
        title,
        *parts,
        intro="Original, adversarial, and the change magnified (red: brightened, blue: darkened; "
        "the factor scales the largest change to full colour). The fewest changed pixels first, "
        f"at most {EXAMPLES_PER_BUDGET} per budget.",
    )


def _panel(rgb: np.ndarray, caption: str, alt: str) -> Html:
    image = Html(f'<img src="{png_data_uri(upscale(rgb, IMAGE_SIDE))}" alt="{esc(alt)}">')
    return tag("div", join([image, tag("span", caption)]), class_="panel")


def _example(
    report: Report, image: Mapping[str, Any], original: np.ndarray, adversarial: np.ndarray
) -> Html:
    index = image["index"]
    clean = report["images"][index]
    difference, factor = difference_rgb(original, adversarial)
    panels = join(
        [
            _panel(to_rgb(original), "original", f"original image {index}"),
            _panel(to_rgb(adversarial), "adversarial", f"adversarial image {index}"),
            _panel(
                difference, f"difference \u00d7{factor:.3g}", f"changed pixels of image {index}"
            ),
        ]
    )
    before = f"{class_name(report, clean['clean_pred'])} ({percent(clean['clean_confidence'])})"
    after = f"{class_name(report, image['pred'])} ({percent(image['confidence'])})"
    details = (
        f"by {image['broken_by']} \u00b7 {plural(image['pixels_changed'], 'pixel')} \u00b7 "
        f"L\u221e {image['linf']:.3g} \u00b7 {image['queries']:,} queries"
    )
    caption = join(
        [
            esc(f"#{index} \u00b7 true {class_name(report, clean['label'])} \u00b7 predicted "),
            tag("span", before, class_="was"),
            " \u2192 ",
            tag("span", after, class_="now"),
            Html("<br>"),
            tag("span", details, class_="muted"),
        ]
    )
    return tag(
        "figure",
        join([tag("div", panels, class_="panels"), tag("figcaption", caption)]),
        class_="example",
    )


def _attacks_section(report: Report) -> Html:
    rows = []
    for stat in report["attacks"]:
        rate = stat["success_rate"]
        meter = Html(f'<span class="meter"><span style="width:{100 * rate:.1f}%"></span></span>')
        params = ", ".join(f"{k}={v}" for k, v in stat.get("params", {}).items())
        queries = stat["median_queries"]
        rows.append(
            [
                stat["budget"],
                stat["attack"],
                "white-box" if stat["white_box"] else "black-box",
                f"{stat['n_attacked']:,}",
                f"{stat['n_fooled']:,}",
                join([meter, esc(percent(rate))]),
                "-" if queries is None else f"{queries:g}",
                f"{stat['seconds']:.1f} s",
                tag("code", params),
            ]
        )
    head = [
        "budget",
        "attack",
        "access",
        "attacked",
        "fooled",
        "success rate",
        "median queries",
        "time",
        "parameters",
    ]
    return section(
        "attacks",
        "Attacks",
        table(head, rows, numeric=(3, 4, 5, 6, 7)),
        tag("h3", "Success against queries"),
        tag("div", join(_query_charts(report)), class_="charts"),
        intro="Within a budget the attacks run in order, each on the images the earlier ones "
        "left unbroken; success rate is over the images an attack was given.",
    )


def _query_charts(report: Report) -> list[Html]:
    curves = query_curves(report)
    charts = []
    for kind, members in budget_families(report).items():
        labels = {label for _, label in members}
        chosen = [curve for curve in curves if curve.budget in labels]
        spent = [max(q, 1) for curve in chosen for q in curve.queries]
        ticks = log_ticks(min(spent, default=1), max(spent, default=10))
        series, legend = [], []
        for i, curve in enumerate(chosen):
            colour = PALETTE[i % len(PALETTE)]
            steps = [(float(max(q, 1)), share) for q, share in curve.cumulative()]
            final = steps[-1][1] if steps else 0.0
            name = f"{curve.attack} at {curve.budget}"
            series.append(
                Series(name, [(ticks[0], 0.0), *steps, (ticks[-1], final)], colour, steps=True)
            )
            legend.append((f"{name}: {len(curve.queries)} of {curve.n_attacked}", colour))
        svg = line_chart(
            series,
            title=f"Success against queries, {kind} budgets",
            x=Axis("model queries per image (log scale)", ticks, log=True),
            y=percent_axis("attacked images fooled"),
        )
        caption = (
            "Share of the images an attack was given that it fooled within q queries; "
            "q counts every query spent on the image at that budget, earlier attacks included."
        )
        charts.append(figure(svg, legend, caption))
    return charts


def _settings(report: Report) -> list[str]:
    """``"clean"`` and the budget labels that have per-class reports, in suite order."""
    per_class = report.get("per_class", {})
    return [
        name for name in ("clean", *(b["budget"] for b in report["budgets"])) if name in per_class
    ]


def _per_class_section(report: Report) -> Html:
    settings = _settings(report)
    if not settings:
        return section(
            "classes", "Per class", tag("p", "The report has no per-class metrics.", class_="muted")
        )
    per_class = report["per_class"]
    tables = []
    for metric, title in (("f1", "F1"), ("precision", "Precision"), ("recall", "Recall")):
        rows = [
            (
                f"{class_name(report, row['class'])} ({row['support']})",
                [
                    HeatCell(f"{value:.2f}", value, METRIC_SHADE)
                    for value in (per_class[name][k][metric] for name in settings)
                ],
            )
            for k, row in enumerate(per_class[settings[0]])
        ]
        tables.append(
            tag(
                "div",
                join(
                    [tag("h3", title), heat_table("class (images)", settings, rows, class_="heat")]
                ),
            )
        )
    return section(
        "classes",
        "Per class",
        tag("div", join(tables), class_="table-grid"),
        intro="Precision, recall and F1 of each class without attack and under the worst case "
        "of each budget: the classes an attacker pushes images into lose precision, the "
        "classes it pulls images out of lose recall.",
    )


def _confusion_section(report: Report) -> Html:
    k = report["num_classes"]
    if k > MAX_CONFUSION_CLASSES:
        note = f"{k} classes are too many to draw readable confusion matrices."
        return section("confusion", "Confusion matrices", tag("p", note, class_="muted"))
    labels = [image["label"] for image in report["images"]]
    predictions = {"clean": [image["clean_pred"] for image in report["images"]]}
    for budget in report["budgets"]:
        predictions[budget["budget"]] = [image["pred"] for image in budget["images"]]
    names = [class_name(report, c) for c in range(k)]
    matrices = []
    for setting, predicted in predictions.items():
        matrix = confusion_matrix(labels, predicted, k).tolist()
        rows = []
        for t, counts in enumerate(matrix):
            total = max(1, sum(counts))
            cells = [
                HeatCell(
                    str(n) if n else "",
                    n / total,
                    CORRECT_SHADE if p == t else WRONG_SHADE,
                    f"true {names[t]}, predicted {names[p]}: {plural(n, 'image')}",
                )
                for p, n in enumerate(counts)
            ]
            rows.append((names[t], cells))
        table_html = heat_table("true \u2193 predicted \u2192", names, rows, class_="confusion")
        matrices.append(tag("div", join([tag("h3", setting), table_html])))
    return section(
        "confusion",
        "Confusion matrices",
        tag("div", join(matrices), class_="table-grid"),
        intro="Rows: true class; columns: predicted class; counts of images, shaded by the share "
        "of their row. Green on the diagonal is right, red off it is wrong.",
    )
