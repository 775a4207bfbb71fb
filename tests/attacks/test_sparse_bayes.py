"""Bayesian sparse search: its proposals, and that it fools with fewer queries than Sparse-RS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelguard.attacks import SparseBayes, SparseRS, create_attack
from pixelguard.attacks._population import corner_table
from pixelguard.attacks.sparse_bayes import (
    PositionPosterior,
    far_corners,
    local_share,
    neighbours_of,
    speculative_proposals,
    weighted_sample,
)
from pixelguard.errors import ConfigError
from pixelguard.models.torch import TorchClassifier
from pixelguard.testing import check_attack_result


@pytest.fixture(scope="module")
def batch(correct_digits):
    x, y = correct_digits
    return x[:40], y[:40]


def test_weighted_sample_draws_distinct_positions_by_weight() -> None:
    generator = torch.Generator().manual_seed(0)
    weights = torch.ones(2000, 10)
    weights[:, 0] = 20.0  # 20 times as likely as each other column
    weights[:, 9] = 0.0
    drawn = weighted_sample(generator, weights, 3)
    assert all(len(set(row.tolist())) == 3 for row in drawn)
    assert not bool((drawn == 9).any()), "a position of weight 0 is never drawn"
    first = (drawn[:, 0] == 0).float().mean()
    assert 0.65 < float(first) < 0.78  # exactly 20 / 28 = 0.714
    second = (drawn[:, 1] == 0).float().mean()
    assert 0.17 < float(second) < 0.29  # 8/28 * 20/27 = 0.212: drawn without replacement


def test_weighted_sample_stays_exact_when_the_weight_sits_on_few_positions() -> None:
    generator = torch.Generator().manual_seed(3)
    weights = torch.full((500, 50), 1e-6)
    weights[:, :2] = 1.0
    weights[:, 49] = 0.0
    drawn = weighted_sample(generator, weights, 5)
    assert all(len(set(row.tolist())) == 5 for row in drawn)
    assert not bool((drawn == 49).any())
    assert bool(((drawn[:, :2] == 0) | (drawn[:, :2] == 1)).all()), "the heavy positions go first"


def test_neighbours_lie_within_the_radius_and_repeat_nothing() -> None:
    generator = torch.Generator().manual_seed(1)
    rows, k, h, w = 500, 6, 12, 12
    kept = torch.rand(rows, h * w, generator=generator).topk(k, dim=1).indices
    fallback = torch.rand(rows, h * w, generator=generator).scatter(1, kept, -1.0)
    fallback = fallback.topk(3, dim=1).indices
    moved = neighbours_of(generator, kept, kept, fallback, 1.0, 1, (h, w))
    assert not bool((moved.unsqueeze(2) == kept.unsqueeze(1)).any()), "a kept pixel is re-drawn"
    assert all(len(set(row.tolist())) == 3 for row in moved)
    local = moved != fallback
    assert float(local.float().mean()) > 0.5
    near = (moved.unsqueeze(2) // w - kept.unsqueeze(1) // w).abs().le(1) & (
        moved.unsqueeze(2) % w - kept.unsqueeze(1) % w
    ).abs().le(1)
    assert bool(near.any(dim=2)[local].all()), "a local move lands next to a kept pixel"
    never = neighbours_of(generator, kept, kept, fallback, 0.0, 1, (h, w))
    assert torch.equal(never, fallback)


def test_far_corners_prefer_the_opposite_colour() -> None:
    generator = torch.Generator().manual_seed(2)
    corners = corner_table(3)
    colours = torch.tensor([0.1, 0.9, 0.2]).expand(1000, 1, 3)
    drawn = far_corners(generator, colours, corners, bias=3.0)
    opposite = int(((1 - colours[0, 0]).round() * torch.tensor([1, 2, 4])).sum())
    share = float((drawn == opposite).float().mean())
    assert share > 0.3, f"the farthest corner is drawn {share:.0%} of the time"
    uniform = far_corners(generator, colours, corners, bias=0.0)
    assert len(set(uniform.flatten().tolist())) == 8


def test_the_posterior_favours_positions_that_improved_the_loss() -> None:
    posterior = PositionPosterior.empty(2, 5, strength=2.0, shared=True, device=torch.device("cpu"))
    for improved in (True, True, False):
        added = torch.tensor([[1 if improved else 2], [4]])
        removed = torch.tensor([[3 if improved else 4], [0]])
        posterior.update(torch.arange(2), added, removed, torch.tensor([improved, False]))
    own = posterior.mean()[0]
    assert int(own.argmax()) == 1 and own[2] < own[0] and own[3] < own[0]
    posterior.keep(torch.tensor([False, True]))
    other = posterior.mean()[0]
    assert other[1] > other[2], "the pooled prior carries image 0's evidence to image 1"
    assert other[4] < other[0], "image 1's own misses at position 4 count"


@pytest.mark.parametrize("pixels", [2, 5])
def test_successes_are_verified_within_budget_on_corner_colours(digits_model, batch, pixels):
    x, y = batch
    result = SparseBayes(pixels=pixels, budget=300, seed=0).run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_pixels=pixels, budget=300)
    assert result.success_rate > 0.5
    changed = (result.x_adv - x).abs() > 0
    assert bool(((result.x_adv[changed] == 0) | (result.x_adv[changed] == 1)).all())


def test_targeted_and_deterministic(digits_model, batch):
    x, y = batch
    target = (y + 3) % 10
    a = SparseBayes(pixels=8, budget=300, seed=5).run(digits_model, x, y, target=target)
    b = SparseBayes(pixels=8, budget=300, seed=5).run(digits_model, x, y, target=target)
    check_attack_result(a, digits_model, x, max_pixels=8, budget=300)
    assert bool(a.success.any()) and bool((a.pred_after[a.success] == target[a.success]).all())
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


def test_single_pixel_runs_the_exact_scan_when_the_budget_covers_it(digits_model, batch):
    x, y = batch
    bayes = SparseBayes(pixels=1, budget=128).run(digits_model, x, y)
    rs = SparseRS(pixels=1, budget=128).run(digits_model, x, y)
    assert torch.equal(bayes.success, rs.success)


def test_fools_as_many_as_sparse_rs_with_fewer_queries(digits_model, batch):
    """The posterior search on its own (``additive_features=0``; by default these small
    images go to the additive model first, tested in ``test_additive_search.py``).
    Measured on these 40 digits at k = 3 and 200 queries: equal or more images fooled
    on each seed (give or take one), and 10-30% fewer queries in all over three seeds (a
    failure counts the budget; single seeds range from 3% more to 30% fewer)."""
    x, y = batch
    spent = {"bayes": 0, "rs": 0}
    for seed in (0, 1, 2):
        bayes = SparseBayes(pixels=3, budget=200, seed=seed, additive_features=0).run(
            digits_model, x, y
        )
        rs = SparseRS(pixels=3, steps=199, budget=200, seed=seed, min_batch=1).run(
            digits_model, x, y
        )
        assert int(bayes.success.sum()) >= int(rs.success.sum()) - 1
        spent["bayes"] += int(bayes.queries.sum())
        spent["rs"] += int(rs.queries.sum())
    assert spent["bayes"] < 0.95 * spent["rs"]


def test_speculative_proposals_fill_calls_only_while_proposals_rarely_improve() -> None:
    assert speculative_proposals(2, 8, 0.01, 0.0, 100) == 1, "speculation 0 turns it off"
    assert speculative_proposals(2, 8, 0.5, 0.25, 100) == 1, "proposals improve too often"
    assert speculative_proposals(2, 8, 0.01, 0.25, 100) == 4, "fills a call of 8"
    assert speculative_proposals(2, 8, 0.1, 0.25, 100) == 2, "at most 0.25 / 0.1"
    assert speculative_proposals(2, 8, 0.01, 0.25, 3) == 3, "never past the queries left"
    assert speculative_proposals(20, 8, 0.01, 0.25, 100) == 1, "the call is full already"


def test_local_moves_grow_in_over_the_warmup() -> None:
    assert local_share(0.7, 0, 100) == 0.0, "the first pixels are random: no local moves yet"
    assert local_share(0.7, 50, 100) == pytest.approx(0.35)
    assert local_share(0.7, 100, 100) == pytest.approx(0.7)
    assert local_share(0.7, 5000, 100) == pytest.approx(0.7), "never past local"
    assert local_share(0.7, 1, 0) == pytest.approx(0.7), "warmup 0: local from the start"


class CallSizes(nn.Module):
    """Records how many images each forward call of ``module`` holds."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.sizes = module, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        return self.module(x)


def test_few_images_fill_the_models_calls_within_their_budget(digits_model, batch):
    x, y = batch
    recorder = CallSizes(digits_model.module)
    model = TorchClassifier(recorder, (1, 8, 8), batch_size=64)
    result = SparseBayes(
        pixels=1, budget=400, exact_single_pixel=False, additive_features=0, seed=0
    ).run(model, x[:3], y[:3])
    check_attack_result(result, digits_model, x[:3], max_pixels=1, budget=400)
    assert max(recorder.sizes) > 3, "with proposals failing, 3 images fill calls of more"
    unfooled = ~result.success
    assert bool((result.queries[unfooled] == 400).all()), "a failure spends its whole budget"


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="local"):
        create_attack("sparse-bayes", local=1.5)
    with pytest.raises(ConfigError, match="prior_strength"):
        create_attack("sparse-bayes", prior_strength=0)
    with pytest.raises(ConfigError, match="local_warmup"):
        create_attack("sparse-bayes", local_warmup=-1)


def test_a_result_moves_to_the_cpu_whole(digits_model, batch):
    x, y = batch
    result = SparseBayes(pixels=2, budget=20).run(digits_model, x[:4], y[:4])
    assert result.cpu() is result, "a CPU result is returned as it is"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_attack_dataset_runs_where_the_model_runs(digits, digits_model):
    import pixelguard as pg
    from pixelguard.models.torch import TorchClassifier

    on_gpu = TorchClassifier(digits_model.module, (1, 8, 8), output="logits", device="cuda")
    data = pg.load_data("digits", split="test")
    run = pg.attack_dataset(on_gpu, data, SparseBayes(pixels=2, budget=50), limit=8)
    assert run.result.x_adv.device.type == "cpu" and run.result.n_images > 0
