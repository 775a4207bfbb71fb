"""A model's reject class ("input rejected") never counts as fooling it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from pixelguard.attacks import PGD, SparsePGD, SparseRS
from pixelguard.attacks._gradient import objective
from pixelguard.attacks._population import margin_loss, probability_loss
from pixelguard.attacks.base import fools
from pixelguard.defenses.preprocess import MedianFilter
from pixelguard.errors import ConfigError
from pixelguard.models.base import Capabilities, ClassifierWrapper, OutputKind
from pixelguard.models.queries import QueryCounter

REJECT = 2


class RejectsEverything(ClassifierWrapper):
    """The digits model plus an 11th class, "rejected", that always wins."""

    @property
    def num_classes(self) -> int:
        return self.model.num_classes + 1

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(self.model.capabilities, reject_class=self.model.num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model.logits(x)
        return torch.cat([z, z.amax(dim=1, keepdim=True) + 1.0], dim=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(x)


def test_fools_excludes_the_reject_class_only_when_untargeted():
    pred, label = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 0])
    assert fools(pred, label, None).tolist() == [False, True, True]
    assert fools(pred, label, None, REJECT).tolist() == [False, True, False]
    assert fools(pred, label, torch.tensor([1, 1, 2]), REJECT).tolist() == [False, True, True]


def test_untargeted_losses_push_towards_the_best_class_that_is_not_rejected():
    logits = torch.tensor([[2.0, 1.0, 5.0]])  # class 2 (reject) leads, class 1 is the runner-up
    label = torch.tensor([0])
    margin = margin_loss(OutputKind.LOGITS, REJECT)(logits, label, None)
    assert torch.allclose(margin, torch.tensor([1.0]))  # log p_0 - log p_1, not - log p_2
    assert float(margin_loss(OutputKind.LOGITS)(logits, label, None)) < 0
    assert torch.allclose(objective("margin", REJECT)(logits, label, None), torch.tensor([-1.0]))
    p = F.softmax(logits, dim=1)
    ce = objective("ce", REJECT)(logits, label, None)
    assert torch.allclose(ce, -torch.log(p[:, 0] + p[:, REJECT]))
    fitness = probability_loss(OutputKind.LOGITS, REJECT)(logits, label, None)
    assert torch.allclose(fitness, p[:, 0] + p[:, REJECT])


def test_reject_class_passes_through_wrappers(digits_model):
    rejecting = RejectsEverything(digits_model)
    assert QueryCounter(rejecting, 1).capabilities.reject_class == 10
    assert MedianFilter(rejecting).capabilities.reject_class == 10
    with pytest.raises(ConfigError, match="reject_class"):
        Capabilities(reject_class=-1)


@pytest.mark.parametrize(
    "attack",
    [PGD(eps=0.3, steps=5), SparsePGD(pixels=3, steps=5, restarts=2), SparseRS(pixels=3, steps=50)],
    ids=["pgd", "sparse-pgd", "sparse-rs"],
)
def test_a_model_that_rejects_everything_is_never_fooled(digits_model, correct_digits, attack):
    x, y = correct_digits[0][:10], correct_digits[1][:10]
    result = attack.run(RejectsEverything(digits_model), x, y)
    assert not bool(result.success.any())
    assert torch.equal(result.x_adv, x)


def test_targeting_the_reject_class_is_a_config_error(digits_model, correct_digits):
    x, y = correct_digits[0][:3], correct_digits[1][:3]
    with pytest.raises(ConfigError, match="reject class"):
        PGD(steps=2).run(RejectsEverything(digits_model), x, y, target=10)
