"""Two evaluations side by side, e.g. a model before and after a defense.

:func:`compare_folders` reads two report folders; the comparison prints as an aligned
table (:func:`comparison_text`), and writes as compare.md and a self-contained
compare.html (:func:`write_comparison`). Different models and defenses are the point of
comparing; different data, splits, image counts, suites, budgets or seeds are not, and
every view warns of them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pixelguard.errors import ConfigError
from pixelguard.files import write_text
from pixelguard.report.evaluation import read_evaluation_report
from pixelguard.report.evaluation_html import headline_tiles, verdict
from pixelguard.report.html import (
    Html,
    defense_box,
    figure,
    flags_box,
    join,
    page,
    points,
    section,
    table,
    tag,
    tile,
)
from pixelguard.report.summary import Report, defense_text, fewest_pixels, percent
from pixelguard.report.svg import PALETTE, grouped_bar_chart, percent_axis

K = TypeVar("K", bound=Hashable)

COMPARE_MD = "compare.md"
COMPARE_HTML = "compare.html"
NOT_LIKE_WITH_LIKE = "not like with like"
"""How every view introduces a difference in what the two sides evaluated."""


@dataclass(frozen=True)
class Row:
    """One number of both evaluations.

    Attributes:
        group: the table it belongs to: ``"accuracy"``, ``"attack success"`` or ``"other"``.
        label: what it is, e.g. ``"robust at pixels=3"``.
        left, right: its value in each evaluation (None: that one lacks it, or an
            attack was given no image there).
        share: a share in [0, 1] (shown as a percentage, differences in points),
            else a plain number.
        higher_is_better: for the evaluated model; decides which change is good.
    """

    group: str
    label: str
    left: float | None
    right: float | None
    share: bool = True
    higher_is_better: bool = True

    @property
    def change(self) -> float | None:
        """``right - left`` (None unless both are known)."""
        return None if self.left is None or self.right is None else self.right - self.left

    def value_text(self, value: float | None) -> str:
        """One side's value: a percentage, a number, or ``"-"`` when missing."""
        if value is None:
            return "-"
        return percent(value) if self.share else f"{value:g}"

    def change_text(self) -> str:
        """The change: percentage points for shares, else a signed number."""
        change = self.change
        if change is None or self.share:
            return points(change)
        return f"{change:+g}" if change else "0"

    def tone(self) -> str:
        """``"up"`` when the change helps the model, ``"down"`` when it hurts, else ``""``."""
        change = self.change
        if not change:
            return ""
        return "up" if (change > 0) == self.higher_is_better else "down"

    def cells(self) -> list[str]:
        """Label, left value, right value, change."""
        return [
            self.label,
            self.value_text(self.left),
            self.value_text(self.right),
            self.change_text(),
        ]


@dataclass(frozen=True)
class Comparison:
    """Two evaluations and the numbers that differ between them.

    Attributes:
        names: the labels of the two sides.
        reports: their report.json data.
        rows: the compared numbers, in table order.
        notes: how the two differ in what they evaluated (data, split, images,
            suite, budgets, seed): reasons the numbers are not like with like.
    """

    names: tuple[str, str]
    reports: tuple[Report, Report]
    rows: list[Row]
    notes: list[str]

    def group(self, name: str) -> list[Row]:
        """The rows of one table."""
        return [row for row in self.rows if row.group == name]


def _union(*keys: Iterable[K]) -> list[K]:
    """The keys of every sequence, each once, in first-seen order."""
    return list(dict.fromkeys(key for sequence in keys for key in sequence))


def compare_reports(left: Report, right: Report, names: tuple[str, str]) -> Comparison:
    """Compare two evaluations' report.json data; ``names`` label the two sides."""
    rows = [Row("accuracy", "clean accuracy", left["clean_accuracy"], right["clean_accuracy"])]
    for label in _union(left["robust_accuracy"], right["robust_accuracy"]):
        rows.append(
            Row(
                "accuracy",
                f"robust at {label}",
                left["robust_accuracy"].get(label),
                right["robust_accuracy"].get(label),
            )
        )
    success = [
        {
            (s["budget"], s["attack"]): s["success_rate"] if s["n_attacked"] else None
            for s in report["attacks"]
        }
        for report in (left, right)
    ]
    for budget, attack in _union(*success):
        rows.append(
            Row(
                "attack success",
                f"success of {attack} at {budget}",
                success[0].get((budget, attack)),
                success[1].get((budget, attack)),
                higher_is_better=False,
            )
        )
    fewest = [fewest_pixels(report) for report in (left, right)]
    if any(f is not None for f in fewest):
        left_median, right_median = (f.median if f is not None else None for f in fewest)
        rows.append(
            Row("other", "median fewest pixels to fool", left_median, right_median, share=False)
        )
    rows.append(
        Row(
            "other",
            "warning signs",
            len(left["flags"]),
            len(right["flags"]),
            share=False,
            higher_is_better=False,
        )
    )
    return Comparison(names, (left, right), rows, _notes(left, right))


def _notes(left: Report, right: Report) -> list[str]:
    """How the two evaluated different things, one phrase each (empty: like with like)."""
    data = [report.get("data") or {} for report in (left, right)]
    described = all(data)  # a report of the library alone may not say how data was given
    given = (("data", "spec"), ("splits", "split"), ("limits", "limit")) if described else ()
    pairs = [(what, data[0].get(key), data[1].get(key)) for what, key in given]
    pairs += [
        ("numbers of images", left["n_images"], right["n_images"]),
        ("suites", left.get("suite"), right.get("suite")),
        ("budgets", ", ".join(left["robust_accuracy"]), ", ".join(right["robust_accuracy"])),
    ]
    if described:
        pairs.append(("seeds", data[0].get("seed"), data[1].get("seed")))
    notes = [f"the {what} differ: {_shown(a)} vs {_shown(b)}" for what, a, b in pairs if a != b]
    same_count = left["n_images"] == right["n_images"]
    if same_count and [i["label"] for i in left["images"]] != [i["label"] for i in right["images"]]:
        notes.append("the images differ: their labels do not match")
    return notes


def _shown(value: Any) -> str:
    """A setting as the notes show it (None, i.e. no --limit: ``"all"``)."""
    if value is None:
        return "all"
    return f"{value:,}" if isinstance(value, int) else str(value)


def side_names(folders: tuple[Path, Path], names: str | None = None) -> tuple[str, str]:
    """The labels of two sides: ``names`` as ``"A,B"``, else the folder names.

    Folders of the same name are told apart by their paths as given.

    Raises:
        ConfigError: ``names`` is not two non-empty names separated by a comma.
    """
    if names is not None:
        parts = [part.strip() for part in names.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--names must be two names separated by a comma, got {names!r}")
        return parts[0], parts[1]
    left, right = (folder.resolve().name or str(folder) for folder in folders)
    return (left, right) if left != right else (str(folders[0]), str(folders[1]))


def compare_folders(left: str | Path, right: str | Path, names: str | None = None) -> Comparison:
    """Compare the evaluations in two report folders (see :func:`side_names` for ``names``).

    Raises:
        ReportError: a folder lacks a readable report.json of a known schema.
        ConfigError: bad ``names``.
    """
    folders = (Path(left), Path(right))
    labels = side_names(folders, names)
    reports = [read_evaluation_report(folder).report for folder in folders]
    return compare_reports(reports[0], reports[1], labels)


def _flag_lines(comparison: Comparison) -> list[tuple[str, str]]:
    """``(side name, "code: message" or "none")`` for every flag of each side."""
    lines = []
    for name, report in zip(comparison.names, comparison.reports, strict=True):
        if not report["flags"]:
            lines.append((name, "none"))
        lines += [(name, f"{flag['code']}: {flag['message']}") for flag in report["flags"]]
    return lines


def _defense_lines(comparison: Comparison) -> list[tuple[str, str]]:
    """``(side name, defense)`` for the sides that name a defense."""
    texts = (defense_text(report.get("defense")) for report in comparison.reports)
    return [(name, text) for name, text in zip(comparison.names, texts, strict=True) if text]


def comparison_text(comparison: Comparison) -> str:
    """The comparison as an aligned plain-text table for the terminal."""
    head = ["", *comparison.names, "change"]
    body = [row.cells() for row in comparison.rows]
    widths = [max(len(cells[i]) for cells in [head, *body]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    lines = [line(head), *(line(cells) for cells in body)]
    lines += [f"flags of {name}: {text}" for name, text in _flag_lines(comparison)]
    lines += [f"defense of {name}: {text}" for name, text in _defense_lines(comparison)]
    lines += [f"warning: {NOT_LIKE_WITH_LIKE}: {note}" for note in comparison.notes]
    return "\n".join(lines) + "\n"


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown, for a pull request."""
    left, right = comparison.names
    lines = [f"## pixelguard comparison: {left} vs {right}", ""]
    if comparison.notes:
        lines += [f"> **Warning, {NOT_LIKE_WITH_LIKE}**: {note}." for note in comparison.notes]
        lines.append("")
    lines += [
        f"- **{name}**: {verdict(report)}"
        for name, report in zip(comparison.names, comparison.reports, strict=True)
    ]
    lines += [f"- defense of **{name}**: {text}" for name, text in _defense_lines(comparison)]
    lines += ["", f"| | {left} | {right} | change |", "| --- | ---: | ---: | ---: |"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in comparison.rows]
    lines += ["", "### Flags", ""]
    lines += [f"- {name}: {text}" for name, text in _flag_lines(comparison)]
    return "\n".join(lines) + "\n"


def _side_summary(name: str, report: Report, colour: str) -> Html:
    tiles = [tile("Clean accuracy", percent(report["clean_accuracy"])), *headline_tiles(report)]
    heading = tag(
        "h3", join([tag("span", "", class_="swatch", style=f"background:{colour}"), name])
    )
    return tag(
        "div",
        join(
            [
                heading,
                tag("div", join(tiles), class_="tiles"),
                flags_box(report["flags"]),
                defense_box(report.get("defense")),
            ]
        ),
    )


def _change_cell(row: Row) -> Html:
    return tag("span", row.change_text(), class_=row.tone() or None)


def comparison_html(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page."""
    left, right = comparison.names
    colours = PALETTE[0], PALETTE[1]
    sides = join(
        _side_summary(name, report, colour)
        for name, report, colour in zip(comparison.names, comparison.reports, colours, strict=True)
    )
    summary = [tag("div", sides, class_="sides")]
    summary = [
        tag("div", f"Warning, {NOT_LIKE_WITH_LIKE}: {note}.", class_="callout warn")
        for note in comparison.notes
    ] + summary
    accuracy = comparison.group("accuracy")
    chart = grouped_bar_chart(
        [row.label.removeprefix("robust at ").removesuffix(" accuracy") for row in accuracy],
        [
            (name, [getattr(row, side) for row in accuracy], colour)
            for name, side, colour in zip(comparison.names, ("left", "right"), colours, strict=True)
        ],
        title=f"Accuracy of {left} and {right}, clean and per budget",
        x_label="budget",
        y=percent_axis("accuracy"),
    )
    head = ["", left, right, "change"]

    def rows_table(group: str) -> Html:
        rows = [[*row.cells()[:3], _change_cell(row)] for row in comparison.group(group)]
        return table(head, rows, numeric=(1, 2, 3))

    body = [
        section("summary", "Summary", *summary),
        section(
            "accuracy",
            "Accuracy",
            tag(
                "div",
                join(
                    [
                        figure(chart, [(left, colours[0]), (right, colours[1])]),
                        rows_table("accuracy"),
                    ]
                ),
                class_="charts",
            ),
            intro=f"Clean and robust accuracy of both; the change is {right} minus {left}, "
            "green where it helps the model.",
        ),
        section(
            "attacks",
            "Attack success",
            rows_table("attack success"),
            rows_table("other"),
            intro="Success rate of each attack over the images it was given (lower is better "
            "for the model); the fewest pixels that fooled an image, median over the images "
            "a pixel attack broke.",
        ),
    ]
    subtitle = " \u00b7 ".join(
        f"{name}: {report.get('suite', '?')} suite, {report['n_images']:,} images"
        for name, report in zip(comparison.names, comparison.reports, strict=True)
    )
    nav = (("summary", "Summary"), ("accuracy", "Accuracy"), ("attacks", "Attack success"))
    return page(f"pixelguard comparison: {left} vs {right}", subtitle, nav, body)


def write_comparison(out_dir: str | Path, comparison: Comparison) -> list[Path]:
    """Write compare.md and compare.html into ``out_dir``.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    return [
        write_text(out / COMPARE_MD, comparison_markdown(comparison)),
        write_text(out / COMPARE_HTML, comparison_html(comparison)),
    ]
