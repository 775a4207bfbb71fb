"""Building blocks of pixelguard's self-contained HTML pages: the page, sections, tables.

Every page carries its own style sheet and no script; images are data URIs and charts
inline SVG, so a page works offline, attached to an e-mail or a CI artefact. Text from
report data is escaped: plain ``str`` values are escaped where they are placed, and
only :class:`Html` values (built here from escaped parts) go in as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from pixelguard.report.summary import defense_fields, plural


class Html(str):
    """Text that is already HTML; every plain ``str`` is escaped before it is placed."""


def esc(value: object) -> str:
    """``value`` as text with ``& < > " '`` escaped."""
    return escape(str(value))


def render(value: object) -> str:
    """An :class:`Html` value as it is; anything else escaped."""
    return value if isinstance(value, Html) else esc(value)


def join(parts: Iterable[str]) -> Html:
    """Concatenate already-rendered HTML fragments."""
    return Html("".join(parts))


def tag(name: str, content: object = "", **attributes: object) -> Html:
    """``<name attr="...">content</name>``; ``class_`` gives ``class``; content is rendered."""
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
        for key, value in attributes.items()
        if value is not None
    )
    return Html(f"<{name}{attrs}>{render(content)}</{name}>")


def points(delta: float | None) -> str:
    """A difference of two shares in percentage points: ``0.05`` -> ``"+5.0 pts"``."""
    if delta is None:
        return "-"
    return "0.0 pts" if round(100 * delta, 1) == 0 else f"{100 * delta:+.1f} pts"


def table(
    head: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    class_: str | None = None,
) -> Html:
    """A table; cells are rendered (escaped unless :class:`Html`).

    Args:
        head: the column headings.
        rows: the cells of each row.
        numeric: the columns to right-align with tabular figures.
        class_: a CSS class for the table.
    """
    right = set(numeric)

    def cells(values: Sequence[object], cell: str) -> Html:
        return join(
            tag(cell, value, class_="num" if i in right else None) for i, value in enumerate(values)
        )

    body = join(tag("tr", cells(row, "td")) for row in rows)
    head_row = tag("thead", tag("tr", cells(head, "th")))
    return tag(
        "div", tag("table", join([head_row, tag("tbody", body)]), class_=class_), class_="scroll"
    )


@dataclass(frozen=True)
class HeatCell:
    """One cell of a :func:`heat_table`.

    Attributes:
        text: what the cell shows.
        strength: how strongly it is shaded, in [0, 1].
        colour: the shade at strength 1, as ``"r, g, b"``.
        tooltip: shown on hover (empty: none).
    """

    text: str
    strength: float
    colour: str
    tooltip: str = ""

    def render(self) -> Html:
        ink = "#fff" if self.strength > 0.55 else "inherit"
        style = f"background:rgba({self.colour},{self.strength:.3f});color:{ink}"
        return tag("td", self.text, class_="num", style=style, title=self.tooltip or None)


def heat_table(
    corner: str,
    columns: Sequence[str],
    rows: Sequence[tuple[str, Sequence[HeatCell]]],
    *,
    class_: str | None = None,
) -> Html:
    """A table of shaded cells, e.g. a confusion matrix.

    Args:
        corner: the top-left heading.
        columns: the column headings.
        rows: ``(row heading, cells)``.
        class_: a CSS class for the table.
    """
    head = tag("tr", join([tag("th", corner), *(tag("th", name) for name in columns)]))
    body = join(
        tag("tr", join([tag("th", heading), *(cell.render() for cell in cells)]))
        for heading, cells in rows
    )
    inner = join([tag("thead", head), tag("tbody", body)])
    return tag("div", tag("table", inner, class_=class_), class_="scroll")


def section(anchor: str, title: str, *content: object, intro: str = "") -> Html:
    """A titled card of the page, reachable as ``#anchor``."""
    parts: list[str] = [tag("h2", title)]
    if intro:
        parts.append(tag("p", intro, class_="intro"))
    parts += [render(part) for part in content]
    return tag("section", join(parts), id=anchor, class_="card")


def figure(svg: str, legend: Sequence[tuple[str, str]] = (), caption: str = "") -> Html:
    """An inline SVG chart with a legend of ``(name, colour)`` and a caption.

    ``svg`` must come from :mod:`pixelguard.report.svg`, which escapes its text.
    """
    parts = [svg]
    if legend:
        items = (
            tag(
                "li",
                join([tag("span", "", class_="swatch", style=f"background:{colour}"), esc(name)]),
            )
            for name, colour in legend
        )
        parts.append(tag("ul", join(items), class_="legend"))
    if caption:
        parts.append(tag("figcaption", caption))
    return tag("figure", join(parts))


def tile(label: str, value: str, note: str = "", *, tone: str = "") -> Html:
    """A headline number: ``label`` above a large ``value``, a small ``note`` below."""
    parts = [tag("div", label, class_="label"), tag("div", value, class_="value")]
    if note:
        parts.append(tag("div", note, class_="note"))
    return tag("div", join(parts), class_=f"tile {tone}".strip())


def flags_box(flags: Sequence[Mapping[str, Any]]) -> Html:
    """The warning signs, prominent; a calm line when there are none."""
    if not flags:
        return tag(
            "div",
            Html("<strong>No warning signs.</strong> No sign of gradient masking was found."),
            class_="callout ok",
        )
    items = join(
        tag("li", join([tag("strong", flag["code"]), esc(": " + str(flag["message"]))]))
        for flag in flags
    )
    heading = f"{plural(len(flags), 'warning sign')}: the attacks may underestimate the model"
    return tag("div", join([tag("strong", heading), tag("ul", items)]), class_="callout warn")


def defense_box(defense: Mapping[str, Any] | None) -> Html:
    """The defense the evaluated model ran behind, if the report names one."""
    fields = defense_fields(defense)
    if not fields:
        return Html("")
    rows = [
        join([tag("dt", "defense" if key == "name" else key), tag("dd", value)])
        for key, value in fields.items()
    ]
    return tag("dl", join(rows), class_="defense")


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: Iterable[str]) -> str:
    """A complete HTML document with pixelguard's style sheet.

    Args:
        title: the page title and main heading.
        subtitle: one line under the heading.
        nav: ``(anchor, label)`` links to the page's sections.
        body: the rendered sections.
    """
    links = join(tag("a", label, href=f"#{anchor}") for anchor, label in nav)
    header = tag(
        "header",
        tag(
            "div",
            join([tag("h1", title), tag("p", subtitle, class_="sub"), tag("nav", links)]),
            class_="wrap",
        ),
        class_="top",
    )
    main = tag("main", join(body), class_="wrap")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{header}\n{main}\n</body>\n</html>\n"
    )


STYLE = """
:root {
  --ink: #1d2939; --muted: #667085; --line: #e4e7ec; --page: #f5f6f8; --card: #fff;
  --accent: #4e79a7; --bad: #c4320a; --good: #067647; --warn: #f79009;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
}
* { box-sizing: border-box; }
body {
  margin: 0; color: var(--ink); background: var(--page);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    "DejaVu Sans", Arial, sans-serif;
}
.wrap { max-width: 1180px; margin: 0 auto; padding: 0 28px; }
header.top { background: #101828; color: #fff; padding: 26px 0 16px; }
header h1 { margin: 0; font-size: 26px; font-weight: 650; letter-spacing: -0.01em; }
header .sub { margin: 4px 0 12px; color: #d0d5dd; font-size: 14px; }
header nav a { color: #b2ccff; margin-right: 18px; font-size: 14px; text-decoration: none; }
header nav a:hover { text-decoration: underline; }
main { padding-bottom: 40px; }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 20px 26px 24px; margin: 22px 0; box-shadow: 0 1px 2px rgba(16, 24, 40, .05);
}
h2 { font-size: 19px; margin: 0 0 10px; }
h3 { font-size: 15px; margin: 18px 0 8px; }
p.intro, figcaption, .muted { color: var(--muted); font-size: 14px; }
p.intro { margin: 0 0 14px; max-width: 80ch; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 14px; }
.tile { border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; }
.tile .label { color: var(--muted); font-size: 13px; text-transform: uppercase; letter-spacing: .04em; }
.tile .value { font-size: 32px; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.25; }
.tile .note { color: var(--muted); font-size: 13px; }
.tile.bad .value { color: var(--bad); }
.tile.good .value { color: var(--good); }
.tile.warn { border-color: #fedf89; background: #fffaeb; }
.tile.warn .value { color: #b54708; }
.verdict { font-size: 16px; margin: 16px 0 0; }
.callout { border-radius: 10px; padding: 12px 18px; margin-top: 16px; border: 1px solid; border-left-width: 5px; }
.callout.warn { background: #fffaeb; border-color: #fedf89; border-left-color: var(--warn); }
.callout.ok { background: #ecfdf3; border-color: #abefc6; border-left-color: var(--good); }
.callout ul { margin: 6px 0 0; padding-left: 20px; }
.callout li { margin: 3px 0; }
dl.defense { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 16px 0 0;
  padding: 12px 18px; border: 1px solid var(--line); border-radius: 10px; background: #f9fafb; }
dl.defense dt { color: var(--muted); }
dl.defense dd { margin: 0; }
code { font-family: var(--mono); font-size: 12.5px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; font-variant-numeric: tabular-nums; margin: 4px 0 8px; }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { font-weight: 600; color: #344054; background: #f9fafb; white-space: nowrap; }
tbody tr:hover td { background: #f9fafb; }
.num { text-align: right; }
td { white-space: nowrap; }
td code { color: var(--muted); white-space: normal; }
.up { color: var(--good); font-weight: 600; }
.down { color: var(--bad); font-weight: 600; }
.meter { display: inline-block; width: 80px; height: 8px; border-radius: 4px; background: #eaecf0;
  vertical-align: middle; margin-right: 8px; overflow: hidden; }
.meter span { display: block; height: 100%; background: var(--bad); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 22px; }
figure { margin: 0; }
svg.chart { width: 100%; height: auto; display: block; }
.legend { list-style: none; padding: 0; margin: 4px 0 6px; display: flex; flex-wrap: wrap;
  gap: 4px 16px; font-size: 13px; color: #344054; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 6px;
  vertical-align: -1px; }
.examples { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 14px; }
.example { border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px 8px; margin: 0; }
.panels { display: flex; gap: 8px; }
.panel { text-align: center; font-size: 12px; color: var(--muted); }
.panel img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated;
  border: 1px solid var(--line); border-radius: 4px; background: #fff; display: block; }
.example figcaption { margin-top: 6px; color: var(--ink); font-size: 13px; }
.example .was { color: var(--muted); }
.example .now { color: var(--bad); font-weight: 600; }
.table-grid { display: flex; flex-wrap: wrap; gap: 20px 28px; }
table.heat th, table.heat td { padding: 4px 10px; font-size: 13px; }
table.confusion { font-size: 11px; background: #f6f7f9; }
table.confusion th, table.confusion td { padding: 2px 4px; min-width: 26px; height: 24px;
  text-align: center; border: 1px solid #fff; }
table.confusion th { background: none; color: var(--muted); font-weight: 500; }
table.confusion td.num { text-align: center; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 22px; }
footer { color: var(--muted); font-size: 13px; padding: 0 0 30px; }
"""
"""The style sheet of every page."""
