"""White-box gradient attacks: FGSM, PGD, gradient descent, sparse PGD, and their template."""

from __future__ import annotations

import itertools

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from pixelguard.attacks import FGSM, PGD, GradientDescent, SparsePGD, create_attack, list_attacks
from pixelguard.attacks._gradient import objective
from pixelguard.attacks.sparse_pgd import project_pixels
from pixelguard.errors import CapabilityError, ConfigError, QueryBudgetExceeded
from pixelguard.metrics.distances import l0_pixels
from pixelguard.models.callable import CallableClassifier
from pixelguard.models.queries import QueryCounter
from pixelguard.models.sklearn import SklearnClassifier
from pixelguard.testing import check_attack_result

GRADIENT_ATTACKS = ("fgsm", "pgd", "gradient-descent", "sparse-pgd")


@pytest.fixture(scope="module")
def batch(correct_digits):
    x, y = correct_digits
    return x[:60], y[:60]


def _fresh_success(model, result):
    pred = model.predict(result.x_adv).argmax(dim=1)
    return pred != result.y if result.target is None else pred == result.target


# --- budgets and verified successes -------------------------------------------------


@pytest.mark.parametrize("attack", [FGSM(eps=0.15), PGD(eps=0.15, steps=10)], ids=["fgsm", "pgd"])
def test_linf_successes_are_verified_and_within_eps(digits_model, batch, attack):
    x, y = batch
    x_before = x.clone()
    result = attack.run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_linf=0.15)
    assert torch.equal(x, x_before), "the attack mutated its input"
    assert 0.3 < result.success_rate < 1.0
    assert result.attack == attack.name and result.params["eps"] == 0.15


@pytest.mark.parametrize(
    "attack", [FGSM(norm="l2", eps=0.8), PGD(norm="l2", eps=0.8, steps=10)], ids=["fgsm", "pgd"]
)
def test_l2_successes_are_verified_and_within_eps(digits_model, batch, attack):
    x, y = batch
    x_before = x.clone()
    result = attack.run(digits_model, x, y)
    check_attack_result(result, digits_model, x)
    assert torch.equal(x, x_before)
    assert float(result.l2.max()) <= 0.8 + 1e-5
    assert result.success.any()


@pytest.mark.parametrize("pixels", [1, 3])
def test_sparse_pgd_changes_at_most_k_pixels(digits_model, batch, pixels):
    x, y = batch
    x_before = x.clone()
    result = SparsePGD(pixels=pixels, steps=10, restarts=3).run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_pixels=pixels)
    assert torch.equal(x, x_before)
    assert result.success.any()
    assert int(result.l0_pixels[result.success].min()) >= 1


def test_query_budget_is_never_exceeded(digits_model, batch, count_queries):
    x, y = batch
    model = count_queries(digits_model, x, "linf", 0.05)
    result = PGD(eps=0.05, steps=40, restarts=3, budget=12).run(model, x, y)
    check_attack_result(result, digits_model, x, max_linf=0.05, budget=12)
    # Counted at the model itself: the attack's queries, then two verification passes.
    assert torch.equal(model.per_image - 2, result.queries), "queries are reported as spent"
    assert bool((result.queries[~result.success] == 12).all()), "robust images use the budget"
    # Fooled images stop at their first success (seeds 0-4: 5.7 to 7.3 queries on average).
    assert float(result.queries[result.success].float().mean()) < 10, "fooled images stop early"


def test_query_accounting_one_per_gradient_and_one_final_check(digits_model, batch):
    x, y = batch
    fgsm = FGSM(eps=0.01).run(digits_model, x, y)
    # The clean query, the gradient, the check of the stepped image.
    assert bool((fgsm.queries == 3).all())
    pgd = PGD(eps=0.3, steps=20, restarts=2).run(digits_model, x, y)
    assert int(pgd.queries.max()) <= 1 + 2 * (20 + 1)
    # Early stop: fooled images leave at their first success.
    assert float(pgd.queries[pgd.success].float().mean()) < 10


def test_images_already_misclassified_cost_only_the_clean_query(digits_model, batch):
    x, y = batch
    wrong = (y + 1) % 10
    result = PGD(eps=0.1, steps=5).run(digits_model, x, wrong)
    assert bool(result.success.all()) and bool((result.queries == 1).all())
    assert torch.equal(result.x_adv, x)


# --- strength ------------------------------------------------------------------------


def test_pgd_is_clearly_stronger_than_fgsm(digits_model, batch):
    x, y = batch
    # Of 60 images, seeds 0-4: eps 0.1 FGSM 22, PGD 27-28; eps 0.15 FGSM 42, PGD 49-50.
    for eps, margin in ((0.1, 3), (0.15, 5)):
        fgsm = FGSM(eps=eps).run(digits_model, x, y)
        pgd = PGD(eps=eps, steps=20, restarts=3).run(digits_model, x, y)
        gap = int(pgd.success.sum()) - int(fgsm.success.sum())
        assert gap >= margin, f"eps={eps}: pgd fools only {gap} image(s) more than fgsm"


def test_success_grows_with_eps(digits_model, batch):
    x, y = batch
    rates = [
        PGD(eps=eps, steps=10).run(digits_model, x, y).success_rate for eps in (0.05, 0.15, 0.3)
    ]
    assert rates[0] < rates[1] < rates[2] and rates[2] > 0.95


def test_margin_loss_runs_and_fools(digits_model, batch):
    x, y = batch
    result = PGD(eps=0.15, steps=10, loss="margin").run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_linf=0.15)
    assert result.success_rate > 0.3


def test_sparse_pgd_beats_random_corner_noise(digits_model, batch):
    x, y = batch
    k, tries = 5, 20
    gen = torch.Generator().manual_seed(0)
    n, _, h, w = x.shape
    fooled = torch.zeros(n, dtype=torch.bool)
    for _ in range(tries):
        positions = torch.rand((n, h * w), generator=gen).topk(k, dim=1).indices
        values = (torch.rand((n, 1, k), generator=gen) < 0.5).float()
        noisy = x.reshape(n, 1, h * w).scatter(2, positions.view(n, 1, k), values).view_as(x)
        fooled |= digits_model.predict(noisy).argmax(dim=1) != y
    baseline = float(fooled.float().mean())
    result = SparsePGD(pixels=k, steps=10, restarts=3).run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_pixels=k)
    assert result.success_rate > baseline + 0.3, (result.success_rate, baseline)
    # ... and with far fewer queries than the baseline's 20 per image.
    assert float(result.queries.float().mean()) < tries


# --- targeted ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [
        PGD(eps=0.3, steps=20),
        GradientDescent(eta=0.01, steps=30),
        SparsePGD(pixels=5, steps=10, restarts=2),
    ],
    ids=["pgd", "gradient-descent", "sparse-pgd"],
)
def test_targeted_success_means_target_reached(digits_model, batch, attack):
    x, y = batch
    target = (y + 3) % 10
    result = attack.run(digits_model, x, y, target=target)
    check_attack_result(result, digits_model, x, max_pixels=getattr(attack, "pixels", None))
    assert result.success.any()
    assert torch.equal(result.success, _fresh_success(digits_model, result))
    assert torch.equal(result.pred_after[result.success], target[result.success])


def test_gradient_descent_reports_how_often_the_target_is_reached(digits_model, batch):
    x, y = batch
    target = (y + 3) % 10
    short = GradientDescent(eta=0.01, steps=3).run(digits_model, x, y, target=target)
    long = GradientDescent(eta=0.01, steps=30).run(digits_model, x, y, target=target)
    assert torch.equal(long.success, _fresh_success(digits_model, long))
    # The descent is deterministic and stops at the target: longer runs only add images.
    assert bool((long.success | ~short.success).all())
    assert long.success_rate > short.success_rate + 0.5
    assert long.to_dict()["targeted"] is True


def test_gradient_descent_needs_a_target(digits_model, batch):
    x, y = batch
    with pytest.raises(ConfigError, match="targeted attack"):
        GradientDescent().run(digits_model, x, y)


# --- restarts and seeds --------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda r: PGD(eps=0.12, steps=3, step_size=0.02, restarts=r),
        lambda r: SparsePGD(pixels=2, steps=5, restarts=r),
    ],
    ids=["pgd", "sparse-pgd"],
)
def test_restarts_never_lower_success(digits_model, batch, make):
    x, y = batch
    one = make(1).run(digits_model, x, y)
    four = make(4).run(digits_model, x, y)
    assert bool((four.success | ~one.success).all()), "a restart lost an image the first run fooled"
    assert four.success_rate > one.success_rate
    assert torch.equal(four.x_adv[one.success], one.x_adv[one.success])


@pytest.mark.parametrize("name", ["pgd", "sparse-pgd"])
def test_same_seed_same_result_other_seed_differs(digits_model, batch, name):
    x, y = batch
    params = {"steps": 5} if name == "pgd" else {"steps": 5, "restarts": 2, "pixels": 3}
    a = create_attack(name, seed=7, **params).run(digits_model, x, y)
    b = create_attack(name, seed=7, **params).run(digits_model, x, y)
    c = create_attack(name, seed=8, **params).run(digits_model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert a.seed == 7 and not torch.equal(a.x_adv, c.x_adv)


def test_progress_is_monotone_and_finishes(digits_model, batch):
    x, y = batch
    calls: list[tuple[int, int]] = []
    PGD(eps=0.1, steps=5, restarts=2).run(
        digits_model, x, y, progress=lambda d, t: calls.append((d, t))
    )
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1] == (x.shape[0], x.shape[0])


# --- capabilities and configuration --------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_model(digits):
    x, y = digits
    est = LogisticRegression(max_iter=200).fit(x[:500].flatten(1).numpy(), y[:500].numpy())
    return SklearnClassifier(est, (1, 8, 8))


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_model_without_gradients_is_refused_naming_black_box_attacks(sklearn_model, batch, name):
    x, y = batch
    attack = create_attack(name)
    with pytest.raises(CapabilityError, match="needs gradients") as info:
        attack.run(sklearn_model, x, y, target=(y + 1) % 10)
    assert "sparse-rs" in str(info.value) and "pixel-de" in str(info.value)


def test_callable_model_is_refused_too(batch):
    x, y = batch
    model = CallableClassifier(lambda a: a.reshape(len(a), -1)[:, :10], (1, 8, 8), output="logits")
    with pytest.raises(CapabilityError, match="pgd needs gradients"):
        PGD().run(model, x, y)


@pytest.mark.parametrize(
    "name, params",
    [
        ("fgsm", {"eps": 0.0}),
        ("fgsm", {"eps": float("nan")}),
        ("fgsm", {"norm": "l1"}),
        ("pgd", {"loss": "hinge"}),
        ("pgd", {"steps": 0}),
        ("pgd", {"restarts": 0}),
        ("pgd", {"step_size": -0.1}),
        ("pgd", {"steps": 2.5}),
        ("gradient-descent", {"eta": 0}),
        ("gradient-descent", {"steps": 0}),
        ("sparse-pgd", {"pixels": 0}),
        ("sparse-pgd", {"step_size": float("inf")}),
        ("sparse-pgd", {"budget": 0}),
    ],
)
def test_invalid_configs_raise_config_error(name, params):
    with pytest.raises(ConfigError, match=name):
        create_attack(name, **params)


def test_registered_and_constructible_with_defaults():
    assert set(GRADIENT_ATTACKS) <= set(list_attacks())
    for name in GRADIENT_ATTACKS:
        attack = create_attack(name)
        assert attack.needs_gradients and attack.to_dict()["seed"] == 0


# --- building blocks -----------------------------------------------------------------


def test_objective_is_positive_exactly_when_fooled_for_margin():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    label = torch.tensor([0, 0])
    assert torch.equal(objective("margin")(logits, label, None) > 0, torch.tensor([False, True]))
    target = torch.tensor([2, 1])
    assert torch.equal(objective("margin")(logits, label, target) > 0, torch.tensor([False, True]))
    ce = objective("ce")(logits, label, target)
    assert bool((ce < 0).all()), "targeted cross-entropy objective is minus a cross-entropy"


def test_project_pixels_is_the_exact_projection():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((6, 2, 2, 2), generator=gen)
    delta = 2 * torch.randn((6, 2, 2, 2), generator=gen)
    k = 2
    out = project_pixels(delta, x, k)
    assert int(l0_pixels(x, x + out).max()) <= k
    assert float((x + out).min()) >= 0 and float((x + out).max()) <= 1
    # Brute force over every set of k kept pixels: nothing is closer to delta.
    z = (x + delta).clamp(0, 1) - x
    for i in range(x.shape[0]):
        best = min(
            float((delta[i] - z[i] * _mask(keep)).pow(2).sum())
            for keep in itertools.combinations(range(4), k)
        )
        assert float((delta[i] - out[i]).pow(2).sum()) <= best + 1e-5
    feasible = project_pixels(out, x, k)
    assert torch.allclose(feasible, out), "projecting a feasible point must not move it"


def _mask(keep: tuple[int, ...]) -> torch.Tensor:
    m = torch.zeros(4)
    m[list(keep)] = 1.0
    return m.view(1, 2, 2)


def test_query_counter_logits_counts_and_enforces_the_budget(digits_model, batch, sklearn_model):
    x, _ = batch
    counter = QueryCounter(digits_model, 3, budget=2)
    out = counter.logits(x[:4].clone().requires_grad_(True), index=torch.tensor([0, 0, 1, 2]))
    assert out.shape == (4, 10) and out.requires_grad
    assert counter.per_image.tolist() == [2, 1, 1]
    with pytest.raises(QueryBudgetExceeded):
        counter.logits(x[:1], index=torch.tensor([0]))
    with pytest.raises(CapabilityError):
        QueryCounter(sklearn_model, 1).logits(x[:1])
