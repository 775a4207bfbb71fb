"""report.html and adversarial.npz of an evaluation: self-contained, faithful, readable."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pixelguard.errors import ReportError
from pixelguard.evaluate.runner import accuracy_interval, headline
from pixelguard.report.arrays import EvaluationArrays, read_evaluation_npz
from pixelguard.report.evaluation import (
    evaluation_markdown,
    read_evaluation_report,
    render_evaluation_report,
)
from pixelguard.report.evaluation_html import evaluation_html, interval_range, verdict
from pixelguard.report.html import esc
from pixelguard.report.images import BRIGHTER, DARKER, MIN_STRENGTH, difference_rgb, upscale
from pixelguard.report.summary import percent, query_curves

ATTRIBUTE_URL = re.compile(r'\b(?:src|href)="([^"]*)"')


@pytest.fixture(scope="module")
def report(report_dir) -> dict:
    return json.loads((report_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def page(report_dir) -> str:
    return (report_dir / "report.html").read_text()


def test_evaluation_writes_json_markdown_npz_and_html(report_dir):
    names = {path.name for path in report_dir.iterdir()}
    assert {"report.json", "report.md", "adversarial.npz", "report.html"} <= names


def test_npz_holds_float32_worst_cases_storing_only_changed_images(report_dir, evaluation):
    arrays = read_evaluation_npz(report_dir / "adversarial.npz")
    assert arrays.x.dtype == np.float32 and np.array_equal(arrays.x, evaluation.x.numpy())
    assert np.array_equal(arrays.y, evaluation.y.numpy())
    assert np.array_equal(arrays.clean_pred, evaluation.clean_pred.numpy())
    assert [b.label for b in arrays.budgets] == [o.label for o in evaluation.budgets]
    for stored, outcome in zip(arrays.budgets, evaluation.budgets, strict=True):
        assert stored.x_changed.dtype == np.float32
        broken = [i for i, attack in enumerate(outcome.broken_by) if attack is not None]
        assert stored.changed_index.tolist() == broken
        assert np.array_equal(stored.worst_case(arrays.x), outcome.x_adv.numpy())
        assert np.array_equal(stored.pred, outcome.pred.numpy())


def test_page_is_self_contained(page):
    urls = ATTRIBUTE_URL.findall(page)
    assert urls, "the page has images and links"
    assert all(url.startswith(("data:image/png;base64,", "#")) for url in urls), urls
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert len(re.findall(r"<img ", page)) >= 3
    assert page.count("<svg ") >= 4  # robust accuracy and queries, pixels and linf each


def test_page_shows_the_verdict_and_every_budget(page, report):
    verdict_section = page[page.index('id="verdict"') : page.index('id="robustness"')]
    assert percent(report["clean_accuracy"]) in verdict_section
    assert esc(verdict(report)) in verdict_section
    for part in headline(report["clean_accuracy"], report["robust_accuracy"]):
        shown = part.budget if part.below_half else percent(part.robust_accuracy)
        assert f'<div class="value">{shown}</div>' in verdict_section
    n = report["n_images"]
    for budget, value in report["robust_accuracy"].items():
        cells = f'<td>{budget}</td><td class="num">{percent(value)}</td>'
        assert f'{cells}<td class="num">{interval_range(value, n)}</td>' in page
    for stat in report["attacks"]:
        assert f"<td>{stat['attack']}</td>" in page
    assert "Confusion matrices" in page and "Precision" in page


def test_the_verdict_leads_with_the_smallest_budget_below_half_and_intervals(report):
    shown = copy.deepcopy(report)
    shown["clean_accuracy"] = 0.9
    shown["robust_accuracy"] = {"pixels=1": 0.6, "pixels=3": 0.4, "linf=0.1": 0.0}
    line = verdict(shown)
    assert line.startswith("Robust accuracy falls below half of clean (90.0%) at pixels=3: 40.0%")
    assert "and at linf=0.1: 0.0%" in line
    low, high = accuracy_interval(0.4, report["n_images"])
    assert interval_range(0.4, report["n_images"]) == f"{100 * low:.1f}-{100 * high:.1f}%"
    markdown = evaluation_markdown(shown)
    assert f"| pixels=3 | 40.0% | {interval_range(0.4, report['n_images'])} |" in markdown
    assert f"95% CI (n={report['n_images']})" in markdown


def test_a_report_of_schema_1_0_still_renders(report):
    old = {key: value for key, value in report.items() if key not in ("model", "data")}
    old["schema_version"] = "evaluation-1.0"
    for key in ("confidence_level", "clean_accuracy_ci", "robust_accuracy_ci", "headline"):
        del old[key]
    assert "Robust accuracy" in evaluation_html(old) and "| clean |" in evaluation_markdown(old)


def test_page_escapes_report_text_and_shows_the_defense(report, report_dir):
    hostile = copy.deepcopy(report)
    hostile["class_names"] = [f"<b>{k}</b>" for k in range(10)]
    hostile["flags"] = [{"code": "not-monotone", "message": "x <script>alert(1)</script>"}]
    hostile["defense"] = {"name": "median <3", "params": {"size": 3}, "adaptive_attacks": ["bpda"]}
    arrays = read_evaluation_npz(report_dir / "adversarial.npz")
    html = evaluation_html(hostile, arrays)
    assert "<script>" not in html and "<b>0</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;0&lt;/b&gt;" in html
    assert "median &lt;3" in html and "size=3" in html and "bpda" in html
    assert "1 warning sign" in html


def test_page_without_arrays_says_why(report):
    html = evaluation_html(report, None, images_note="adversarial.npz is missing")
    assert "<img " not in html and "adversarial.npz is missing" in html
    assert html.count("<svg ") >= 4


def test_rendering_from_files_reproduces_the_page(tmp_path, report_dir, page):
    folder = tmp_path / "copy"
    shutil.copytree(report_dir, folder)
    markdown = (folder / "report.md").read_text()
    (folder / "report.html").unlink()
    files, paths = render_evaluation_report(folder)
    assert [p.name for p in paths] == ["report.html", "report.md"]
    assert isinstance(files.arrays, EvaluationArrays)
    assert (folder / "report.html").read_text() == page
    assert (folder / "report.md").read_text() == markdown
    assert evaluation_markdown(files.report) == markdown


def test_query_curves_end_at_each_attacks_success_rate(report):
    curves = query_curves(report)
    assert [(c.budget, c.attack) for c in curves] == [
        (s["budget"], s["attack"]) for s in report["attacks"]
    ]
    for curve, stat in zip(curves, report["attacks"], strict=True):
        assert len(curve.queries) == stat["n_fooled"]
        if curve.queries:
            shares = [share for _, share in curve.cumulative()]
            assert shares == sorted(shares)
            assert shares[-1] == pytest.approx(stat["success_rate"], abs=1e-6)


def test_difference_map_shows_a_single_small_change_in_colour():
    original = np.full((1, 8, 8), 0.5, dtype=np.float32)
    adversarial = original.copy()
    adversarial[0, 2, 5] += 0.01
    adversarial[0, 6, 1] -= 0.005
    rgb, factor = difference_rgb(original, adversarial)
    assert factor == pytest.approx(100, rel=1e-3)
    assert np.allclose(rgb[2, 5], BRIGHTER, atol=1)
    backdrop = rgb[0, 0].astype(np.float32)
    assert backdrop[0] == backdrop[1] == backdrop[2] > 200
    strength = MIN_STRENGTH + (1 - MIN_STRENGTH) * 0.5
    assert np.allclose(rgb[6, 1], backdrop * (1 - strength) + DARKER * strength, atol=2)
    untouched = np.ones((8, 8), dtype=bool)
    untouched[2, 5] = untouched[6, 1] = False
    assert (rgb[untouched] == backdrop.astype(np.uint8)).all()


def test_upscale_keeps_single_pixels_crisp():
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[3, 4] = 255
    big = upscale(rgb, 96)
    assert big.shape == (96, 96, 3)
    assert (big[36:48, 48:60] == 255).all() and big.sum() == 255 * 3 * 144
    assert upscale(np.zeros((224, 224, 3), dtype=np.uint8), 96).shape == (224, 224, 3)


def test_reading_a_folder_without_report_json_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="has no report.json"):
        read_evaluation_report(tmp_path)
    (tmp_path / "report.json").write_text('{"schema_version": "results-1.0"}')
    with pytest.raises(ReportError, match="schema_version 'results-1.0'"):
        read_evaluation_report(tmp_path)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium or chromium-browser executable on PATH")


def _run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


def test_chromium_renders_the_images_and_charts(tmp_path, report_dir):
    url = (report_dir / "report.html").as_uri()
    dom = _run_chromium(tmp_path, "--dump-dom", url).stdout
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)) >= 3
    assert len(re.findall(r"<svg[^>]*class=\"chart\"", dom)) >= 4
    assert 'id="examples"' in dom and 'class="examples"' in dom

    shot = tmp_path / "page.png"
    _run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", url)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2000, 1200)
    # The example grid sits below the verdict and the charts: digits (near-black
    # blocks) and magnified changes (saturated red and blue) must be drawn there.
    grid = pixels[1000:]
    dark = (grid.max(axis=2) < 40).mean()
    red = ((grid[..., 0] > 180) & (grid[..., 1] < 90) & (grid[..., 2] < 90)).sum()
    blue = ((grid[..., 2] > 150) & (grid[..., 0] < 90)).sum()
    assert dark > 0.02 and red > 100 and blue > 100, (dark, red, blue)
    colours = {tuple(p) for p in pixels[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 200
