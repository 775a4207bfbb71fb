"""A small finished attack run and a small evaluation on the held-out digits, shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.data import Dataset
from pixelguard.evaluate import AttackRun, Evaluation, attack_dataset, build_suite, evaluate
from pixelguard.report.evaluation import write_evaluation_report


@pytest.fixture(scope="session")
def held_out_digits(digits: tuple[torch.Tensor, torch.Tensor]) -> Dataset:
    x, y = digits
    return Dataset(x[1400:], y[1400:], [str(d) for d in range(10)], "held-out digits")


@pytest.fixture(scope="session")
def run(digits_model, held_out_digits: Dataset) -> AttackRun:
    """Ten attacked digits, some fooled and some not."""
    attack = PixelDE(pixels=3, population=20, generations=3, seed=0)
    result = attack_dataset(digits_model, held_out_digits, attack, limit=10)
    assert 0 < result.n_success < 10, "the report tests need successes and failures"
    return result


@pytest.fixture(scope="session")
def evaluation(digits_model, held_out_digits: Dataset) -> Evaluation:
    """A full suite (pixels 1 and 3, Linf 0.1) on 20 held-out digits: some broken, some not."""
    suite = build_suite("full", pixels=(1, 3), eps=(0.1,), budget=200, gradients=True)
    result = evaluate(digits_model, held_out_digits, suite, limit=20)
    broken = [outcome.robust_accuracy for outcome in result.budgets]
    assert any(acc < result.clean_accuracy for acc in broken), "the tests need broken images"
    return result


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory, evaluation: Evaluation) -> Path:
    """The reports of :func:`evaluation`, written once; copy before changing them."""
    folder = tmp_path_factory.mktemp("evaluation")
    write_evaluation_report(folder, evaluation)
    return folder
