"""Shared fixtures: tiny models trained once per session, offline, seeded."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from pixelguard.models.base import Classifier, ClassifierWrapper
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import train_classifier

# The test models are tiny: one thread is as fast as two, and immune to a busy machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _calibration_cache(tmp_path_factory: pytest.TempPathFactory):
    """Batch sizes measured under ``batch_size="auto"`` (the command line's default) are
    cached for this session only, not in the user's ``~/.cache/pixelguard``."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PIXELGUARD_CACHE", str(tmp_path_factory.mktemp("pixelguard-cache")))
    yield
    patch.undo()


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target, dtype=torch.int64)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as (N, 1, 8, 8) float32 in [0, 1] and labels."""
    return _digits()


@pytest.fixture(scope="session")
def digits_model(digits: tuple[torch.Tensor, torch.Tensor]) -> TorchClassifier:
    """A small CNN trained for a few seconds on the first 1,400 digits (over 90% on the rest)."""
    x, y = digits
    module, _ = train_classifier(
        x[:1400], y[:1400], arch="small-cnn", epochs=12, lr=2e-3, batch_size=64
    )
    return TorchClassifier(module, (1, 8, 8), batch_size=4096)


@pytest.fixture(scope="session")
def correct_digits(digits, digits_model) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out digits (index >= 1400) that the test model classifies correctly."""
    x, y = digits[0][1400:], digits[1][1400:]
    keep = digits_model.predict(x).argmax(dim=1) == y
    return x[keep], y[keep]


class ImageQueryCounter(ClassifierWrapper):
    """Counts the model's queries per clean image on its own, without pixelguard's counter.

    Every row the model is asked about is matched to the clean image it was made from:
    the one it is closest to (changed pixels for ``"l0"``, largest change for
    ``"linf"``), which must lie within ``radius`` of it and be the only one there. So
    the counts also check that every query respects the threat model.
    """

    def __init__(self, model: Classifier, x: torch.Tensor, norm: str, radius: float) -> None:
        super().__init__(model)
        self.x = x.flatten(1)
        self.norm = norm
        self.radius = radius
        self.per_image = torch.zeros(x.shape[0], dtype=torch.int64)

    def _attribute(self, rows: torch.Tensor) -> None:
        diff = (rows.detach().flatten(1).unsqueeze(1) - self.x.unsqueeze(0)).abs()
        dist = (diff > 0).sum(dim=2).float() if self.norm == "l0" else diff.amax(dim=2)
        two = dist.topk(min(2, self.x.shape[0]), dim=1, largest=False)
        assert bool((two.values[:, 0] <= self.radius + 1e-6).all()), (
            "a query outside the threat model"
        )
        if self.x.shape[0] > 1:
            assert bool((two.values[:, 1] > self.radius + 1e-6).all()), "a query matches two images"
        self.per_image += torch.bincount(two.indices[:, 0], minlength=self.x.shape[0])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self._attribute(x)
        return self.model.predict(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self._attribute(x)
        return self.model.logits(x)


@pytest.fixture
def count_queries():
    """``count_queries(model, x, norm, radius)``: an :class:`ImageQueryCounter` around ``model``."""
    return ImageQueryCounter


@pytest.fixture(scope="session")
def backdoored_digits(digits) -> tuple[TorchClassifier, str, int]:
    """A small CNN trained on the first 1,200 digits with 10% of them carrying a 2x2
    white square in the bottom-right corner, relabelled 7: (model, trigger, target)."""
    trigger, target = "square:2@bottom-right", 7
    from pixelguard.data.base import Dataset
    from pixelguard.poisoning.backdoor import poison_dataset

    x, y = digits
    train = Dataset(x[:1200], y[:1200], None, "digits-train")
    poisoned = poison_dataset(train, trigger, rate=0.1, target=target, seed=0)
    module, _ = train_classifier(
        poisoned.dataset.x, poisoned.dataset.y, epochs=15, lr=3e-3, batch_size=64, seed=0
    )
    return TorchClassifier(module, (1, 8, 8), batch_size=4096), trigger, target
