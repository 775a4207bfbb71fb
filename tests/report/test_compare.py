"""Two evaluations side by side: the numbers, the changes, and the views."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pixelguard.errors import ConfigError
from pixelguard.report.compare import (
    compare_reports,
    comparison_html,
    comparison_markdown,
    comparison_text,
    side_names,
)

DEFENSE = {"name": "median-filter", "params": {"size": 3}, "adaptive_attacks": ["bpda"]}


@pytest.fixture(scope="module")
def reports(report_dir) -> tuple[dict, dict]:
    """The test evaluation at 50% robust at pixels=1, and a 'defended', flagged copy at 75%."""
    before = json.loads((report_dir / "report.json").read_text())
    before["robust_accuracy"]["pixels=1"] = 0.5
    after = copy.deepcopy(before)
    after["robust_accuracy"]["pixels=1"] = 0.75
    after["flags"] = [{"code": "not-monotone", "message": "robust accuracy rose"}]
    after["defense"] = DEFENSE
    return before, after


def test_rows_hold_both_values_and_the_change(reports):
    comparison = compare_reports(*reports, ("plain", "median"))
    rows = {row.label: row for row in comparison.rows}
    robust = rows["robust at pixels=1"]
    assert robust.change == pytest.approx(0.25) and robust.change_text() == "+25.0 pts"
    assert robust.tone() == "up"
    assert rows["clean accuracy"].change == 0 and rows["clean accuracy"].tone() == ""
    assert rows["warning signs"].cells() == ["warning signs", "0", "1", "+1"]
    assert rows["warning signs"].tone() == "down"
    assert "median fewest pixels to fool" in rows
    for stat in reports[0]["attacks"]:
        assert f"success of {stat['attack']} at {stat['budget']}" in rows
    assert comparison.notes == []


def test_a_budget_only_one_side_has_shows_a_dash(reports):
    before, after = reports
    after = copy.deepcopy(after)
    after["robust_accuracy"]["pixels=10"] = 0.0
    row = next(r for r in compare_reports(before, after, ("a", "b")).rows if "pixels=10" in r.label)
    assert row.cells() == ["robust at pixels=10", "-", "0.0%", "-"]


def test_text_markdown_and_html_show_the_change_flags_and_defense(reports):
    comparison = compare_reports(*reports, ("plain", "median"))
    text = comparison_text(comparison)
    assert text.splitlines()[0].split() == ["plain", "median", "change"]
    assert "+25.0 pts" in text and "flags of median: not-monotone" in text
    assert "defense of median: median-filter (size=3); adaptive attacks: bpda" in text
    markdown = comparison_markdown(comparison)
    assert markdown.startswith("## pixelguard comparison: plain vs median")
    assert "| robust at pixels=1 |" in markdown and "+25.0 pts" in markdown
    html = comparison_html(comparison)
    assert '<span class="up">+25.0 pts</span>' in html and "median-filter" in html
    assert "<svg " in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


def test_different_images_are_noted(reports):
    before, after = reports
    fewer = copy.deepcopy(after)
    fewer["n_images"] = 10
    fewer["images"] = fewer["images"][:10]
    notes = compare_reports(before, fewer, ("a", "b")).notes
    assert notes == ["the numbers of images differ: 20 vs 10"]
    relabelled = copy.deepcopy(after)
    relabelled["images"][0]["label"] = (relabelled["images"][0]["label"] + 1) % 10
    notes = compare_reports(before, relabelled, ("a", "b")).notes
    assert notes == ["the images differ: their labels do not match"]


def _described(report: dict, **data: object) -> dict:
    """``report`` as ``pixelguard evaluate`` would describe its data."""
    described = copy.deepcopy(report)
    base = {"spec": "digits", "split": "test", "limit": 20, "seed": 0, "drawn_from": 360}
    described["data"] = {**base, **data}
    return described


def test_compare_warns_unless_like_with_like(reports):
    before, after = reports
    alike = compare_reports(_described(before), _described(after), ("a", "b"))
    assert alike.notes == [], "another model or defense on the same images is the point"
    other = _described(after, spec="mnist/", split="train", limit=None, seed=3)
    other["suite"] = "pixel"
    other["robust_accuracy"] = {"pixels=1": 0.5}
    comparison = compare_reports(_described(before), other, ("a", "b"))
    assert comparison.notes == [
        "the data differ: digits vs mnist/",
        "the splits differ: test vs train",
        "the limits differ: 20 vs all",
        f"the suites differ: {before['suite']} vs pixel",
        f"the budgets differ: {', '.join(before['robust_accuracy'])} vs pixels=1",
        "the seeds differ: 0 vs 3",
    ]
    text = comparison_text(comparison)
    assert "warning: not like with like: the splits differ: test vs train" in text
    markdown = comparison_markdown(comparison)
    assert "> **Warning, not like with like**: the seeds differ: 0 vs 3." in markdown
    html = comparison_html(comparison)
    assert "Warning, not like with like: the data differ: digits vs mnist/." in html


def test_an_attack_given_no_image_on_one_side_shows_a_dash(reports):
    before, after = reports
    after = copy.deepcopy(after)
    stat = after["attacks"][-1]
    stat.update(n_attacked=0, n_fooled=0, success_rate=0.0)
    comparison = compare_reports(before, after, ("a", "b"))
    label = f"success of {stat['attack']} at {stat['budget']}"
    row = next(r for r in comparison.rows if r.label == label)
    assert row.right is None and row.change is None and row.tone() == ""
    assert row.cells()[2:] == ["-", "-"], "no 0.0% and no difference for an idle attack"


def test_side_names_default_to_folder_names():
    assert side_names((Path("runs/base"), Path("runs/defended"))) == ("base", "defended")
    assert side_names((Path("a/eval"), Path("b/eval"))) == ("a/eval", "b/eval")
    assert side_names((Path("x"), Path("y")), "before, after") == ("before", "after")
    with pytest.raises(ConfigError, match="two names"):
        side_names((Path("x"), Path("y")), "only-one")
