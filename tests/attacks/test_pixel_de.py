"""PixelDE: verified successes, pixel and query budgets, seeding, targeting, vectorisation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pixelguard.attacks.base import create_attack, list_attacks
from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.errors import CapabilityError, ConfigError, RangeError, ShapeError
from pixelguard.models.base import ArrayClassifier
from pixelguard.testing import check_attack_result

SMALL = {"population": 60, "generations": 15}


@pytest.fixture(scope="module")
def batch(correct_digits):
    x, y = correct_digits
    return x[:40], y[:40]


@pytest.mark.parametrize("pixels", [1, 3])
def test_untargeted_successes_are_verified_and_within_budgets(digits_model, batch, pixels):
    x, y = batch
    x_before = x.clone()
    attack = PixelDE(pixels=pixels, budget=500, seed=1, **SMALL)
    result = attack.run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_pixels=pixels, budget=500)
    assert torch.equal(x, x_before), "the attack mutated its input"
    assert result.success.any(), "no image fooled at all: the search is not working"
    assert result.attack == "pixel-de" and result.params["pixels"] == pixels


def test_more_pixels_fool_more_images(digits_model, batch):
    x, y = batch
    rates = [
        PixelDE(pixels=k, seed=0, **SMALL).run(digits_model, x, y).success_rate for k in (1, 3, 5)
    ]
    assert rates[0] < rates[1] <= rates[2]
    assert rates[2] >= 0.5


def test_targeted_hits_the_target(digits_model, batch):
    x, y = batch
    target = (y + 1) % 10
    result = PixelDE(pixels=5, seed=0, **SMALL).run(digits_model, x, y, target=target)
    check_attack_result(result, digits_model, x, max_pixels=5)
    assert result.success.any()
    assert torch.equal(result.pred_after[result.success], target[result.success])


def test_one_target_for_all_and_target_equal_to_label_is_refused(digits_model, batch):
    x, y = batch
    keep = y != 3
    result = PixelDE(pixels=3, seed=0, **SMALL).run(digits_model, x[keep], y[keep], target=3)
    assert bool((result.target == 3).all())
    with pytest.raises(ConfigError, match="target equals the true label"):
        PixelDE(**SMALL).run(digits_model, x, y, target=y)


def test_same_seed_same_result_and_other_seed_differs(digits_model, batch):
    x, y = batch
    a = PixelDE(pixels=1, seed=7, **SMALL).run(digits_model, x, y)
    b = PixelDE(pixels=1, seed=7, **SMALL).run(digits_model, x, y)
    c = PixelDE(pixels=1, seed=8, **SMALL).run(digits_model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.queries, c.queries)


def test_budget_is_never_exceeded_and_caps_generations(digits_model, batch, count_queries):
    x, y = batch
    model = count_queries(digits_model, x, "l0", 1)
    result = PixelDE(pixels=1, population=40, generations=100, budget=250, seed=0).run(model, x, y)
    # Counted at the model itself: the attack's queries, then two verification passes.
    assert torch.equal(model.per_image - 2, result.queries), "queries are reported as spent"
    # The clean query, then slices of 10 candidates while a whole slice fits the budget.
    assert bool(((result.queries - 1) % 10 == 0).all())
    cap = 1 + (249 // 10) * 10
    assert bool((result.queries[~result.success] == cap).all()) and not result.success.all()
    # ... and a fooled image stops at the slice that fooled it.
    assert float(result.queries[result.success].float().mean()) < cap / 2


def test_early_stop_spends_few_queries_on_easy_images(digits_model, batch):
    x, y = batch
    result = PixelDE(pixels=5, population=100, generations=10, seed=0).run(digits_model, x, y)
    fooled_first = result.success & (result.queries <= 1 + 25)
    assert fooled_first.any(), "easy images should stop after the first slice of 25 candidates"


def test_already_misclassified_image_costs_one_query_and_no_pixels(digits_model, digits):
    x, y = digits
    pred = digits_model.predict(x[1400:]).argmax(dim=1)
    wrong = (pred != y[1400:]).nonzero().flatten()
    assert wrong.numel() > 0
    i = 1400 + int(wrong[0])
    result = PixelDE(**SMALL).run(digits_model, x[i : i + 1], y[i : i + 1])
    assert bool(result.success[0]) and int(result.queries[0]) == 1 and int(result.l0_pixels[0]) == 0


def _with_fillers(x, y, fillers_x, fillers_y, every: int):
    """``x`` with already-misclassified fillers between its images: image ``i`` at
    position ``every * i + 1``, fillers everywhere else."""
    n = x.shape[0]
    at = torch.arange(n) * every + 1
    size = n * every
    big_x = torch.empty((size, *x.shape[1:]))
    big_y = torch.empty(size, dtype=torch.int64)
    rest = torch.ones(size, dtype=torch.bool)
    rest[at] = False
    big_x[at], big_y[at] = x, y
    big_x[rest], big_y[rest] = fillers_x[: size - n], fillers_y[: size - n]
    return big_x, big_y, at, rest


def _assert_same_per_image(a, b):
    for name in ("success", "queries", "x_adv", "l0_pixels", "pred_after"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(a.conf_after, b.conf_after)


def test_vectorised_matches_per_image_runs(digits_model, correct_digits):
    """The batched attack is the same algorithm as a run on each image alone.

    Images the clean query already finds misclassified leave the search at once and
    draw no random numbers, so fillers between the attacked images change nothing:
    each image must get exactly what it gets without them, and an image among
    fillers exactly what a run on it alone gives. Any mix-up between an image's row
    in the search and its index in the batch (labels, owners, budgets, early stops,
    winners written to the wrong image) breaks the equality.
    """
    x, y = correct_digits
    xs, ys = x[:12], y[:12]
    # Correctly classified digits given a wrong label: fooled by the clean query.
    fill_x, fill_y = x[40:80], (y[40:80] + 1) % 10
    attack = PixelDE(pixels=1, seed=3, budget=500, **SMALL)  # a budget that binds

    plain = attack.run(digits_model, xs, ys)
    assert 0 < int(plain.success.sum()) < 12, "both outcomes should be compared"
    big_x, big_y, at, rest = _with_fillers(xs, ys, fill_x, fill_y, every=3)
    mixed = attack.run(digits_model, big_x, big_y)
    _assert_same_per_image(_select(mixed, at), plain)
    assert bool(mixed.success[rest].all()) and bool((mixed.queries[rest] == 1).all())
    assert torch.equal(mixed.x_adv[rest], big_x[rest])

    for i in range(4):
        alone = attack.run(digits_model, xs[i : i + 1], ys[i : i + 1])
        one_x, one_y, one_at, _ = _with_fillers(xs[i : i + 1], ys[i : i + 1], fill_x, fill_y, 5)
        among = attack.run(digits_model, one_x, one_y)
        _assert_same_per_image(_select(among, one_at), alone)


def _select(result, index):
    return SimpleNamespace(
        **{
            name: getattr(result, name)[index]
            for name in ("success", "queries", "x_adv", "l0_pixels", "pred_after", "conf_after")
        }
    )


def test_empty_batch(digits_model):
    result = PixelDE(**SMALL).run(
        digits_model, torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    )
    assert result.n_images == 0 and result.success_rate == 0.0


def test_bad_inputs_raise_typed_errors(digits_model, batch):
    x, y = batch
    with pytest.raises(RangeError):
        PixelDE(**SMALL).run(digits_model, x * 255, y)
    with pytest.raises(ShapeError):
        PixelDE(**SMALL).run(digits_model, x, y[:-1])
    with pytest.raises(ShapeError):
        PixelDE(**SMALL).run(digits_model, torch.zeros(2, 3, 8, 8), y[:2])
    with pytest.raises(RangeError):
        PixelDE(**SMALL).run(digits_model, x, y + 10)


@pytest.mark.parametrize(
    "params",
    [
        {"pixels": 0},
        {"population": 3},
        {"mutation": 0},
        {"crossover": 1.5},
        {"loss": "hinge"},
        {"budget": 0},
        {"checks_per_generation": 0},
    ],
)
def test_invalid_configuration_is_refused(params):
    with pytest.raises(ConfigError):
        PixelDE(**params)


def test_labels_only_model_is_refused_with_a_clear_error(digits_model, batch):
    class LabelsOnly(ArrayClassifier):
        def _forward(self, x: torch.Tensor) -> torch.Tensor:
            pred = digits_model.predict(x).argmax(dim=1)
            return torch.nn.functional.one_hot(pred, 10).float()

    with pytest.raises(CapabilityError, match="labels only"):
        PixelDE(**SMALL).run(LabelsOnly(input_shape=(1, 8, 8)), *batch)


def test_crossover_and_probability_loss_variants_work(digits_model, batch):
    x, y = batch
    for attack in (
        PixelDE(pixels=3, crossover=0.7, **SMALL),
        PixelDE(pixels=3, loss="probability", **SMALL),
    ):
        result = attack.run(digits_model, x, y)
        check_attack_result(result, digits_model, x, max_pixels=3)
        assert result.success.any()


def test_registry_creates_the_attack():
    assert "pixel-de" in list_attacks()
    attack = create_attack("pixel-de", pixels=2)
    assert isinstance(attack, PixelDE) and attack.pixels == 2
    with pytest.raises(ConfigError, match="unknown attack"):
        create_attack("nope")
