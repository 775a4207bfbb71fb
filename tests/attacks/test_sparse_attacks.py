"""Corner search, sparse random search, fewest pixels and label-only: real properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelguard.attacks import CornerSearch, LabelOnly, MinPixels, PixelDE, SparseRS
from pixelguard.attacks._population import corner_table
from pixelguard.attacks.min_pixels import pixel_schedule
from pixelguard.attacks.sparse_rs import proposals_per_image, swap_fraction
from pixelguard.errors import CapabilityError, ConfigError
from pixelguard.metrics.distances import changed_pixels
from pixelguard.models.callable import CallableClassifier
from pixelguard.testing import check_attack_result


@pytest.fixture(scope="module")
def batch(correct_digits):
    x, y = correct_digits
    return x[:40], y[:40]


@pytest.fixture(scope="module")
def labels_only_model(digits_model):
    def top_label(images: np.ndarray) -> np.ndarray:
        pred = digits_model.predict(torch.from_numpy(images)).argmax(dim=1).numpy()
        return np.eye(10, dtype=np.float32)[pred]

    return CallableClassifier(top_label, (1, 8, 8))


def assert_one_minimal(model, x, result):
    """Restoring any single changed pixel of a fooling image makes it classified correctly."""
    for i in result.success.nonzero().flatten().tolist():
        changed = (
            changed_pixels(x[i : i + 1], result.x_adv[i : i + 1])[0].flatten().nonzero().flatten()
        )
        restored = result.x_adv[i].repeat(changed.numel(), 1, 1, 1).flatten(2)
        restored[torch.arange(changed.numel()), :, changed] = x[i].flatten(1)[:, changed].T
        pred = model.predict(restored.view(-1, *x.shape[1:])).argmax(dim=1)
        assert bool((pred == result.y[i]).all()), f"image {i}: a changed pixel is not needed"


def test_corner_search_is_exact_over_corners(digits_model, batch):
    x, y = batch
    # The budget is exactly the scan's cost, 2**C * H * W: no clean query on top.
    result = CornerSearch(seed=0, budget=2 * 64).run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_pixels=1, budget=2 * 64)
    # Brute force, one image at a time: an image fools iff some (position, corner) does.
    corners = corner_table(1)
    for i in range(12):
        candidates = x[i].repeat(128, 1, 1, 1).view(128, 1, 64)
        candidates[torch.arange(128), 0, torch.arange(128) // 2] = corners[torch.arange(128) % 2, 0]
        fools = (digits_model.predict(candidates.view(128, 1, 8, 8)).argmax(dim=1) != y[i]).any()
        assert bool(fools) == bool(result.success[i]), f"image {i}"


def test_corner_search_fools_at_least_as_many_as_one_pixel_de(digits_model, batch):
    x, y = batch
    corners = CornerSearch().run(digits_model, x, y)
    de = PixelDE(pixels=1, population=100, generations=20).run(digits_model, x, y)
    # Image by image: whatever one-pixel DE fools, the exact corner scan fools too.
    assert de.success.any() and bool((de.success <= corners.success).all())
    # ... for far fewer queries (seeds 0-4 of DE: about 21 times fewer in all, and 3.1
    # to 5.0 times fewer on the images both fool).
    assert int(corners.queries.max()) <= 128
    assert 10 * int(corners.queries.sum()) < int(de.queries.sum())
    both = corners.success & de.success
    assert 2 * float(corners.queries[both].float().mean()) < float(de.queries[both].float().mean())


@pytest.mark.parametrize("pixels", [3, 5])
def test_sparse_rs_successes_are_verified_and_use_corner_colours(digits_model, batch, pixels):
    x, y = batch
    result = SparseRS(pixels=pixels, steps=300, budget=301, seed=0).run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_pixels=pixels, budget=301)
    assert result.success_rate > 0.5
    changed = (result.x_adv - x).abs() > 0
    assert bool(((result.x_adv[changed] == 0) | (result.x_adv[changed] == 1)).all())


def test_sparse_rs_single_pixel_uses_the_exact_scan(digits_model, batch, count_queries):
    x, y = batch
    rs = SparseRS(pixels=1, seed=0).run(digits_model, x, y)
    scan = CornerSearch(seed=0).run(digits_model, x, y)
    assert torch.equal(rs.success, scan.success)
    model = count_queries(digits_model, x, "l0", 1)
    limited = SparseRS(pixels=1, steps=20, budget=21, seed=0).run(model, x, y)
    # Counted at the model itself: the attack's queries, then two verification passes.
    assert torch.equal(model.per_image - 2, limited.queries), "queries are reported as spent"
    assert bool((limited.queries[~limited.success] == 21).all()), "unfooled images use the budget"
    # Fooled images stop at their first success (seeds 0-4: 7.4 to 11.2 queries on average).
    assert float(limited.queries[limited.success].float().mean()) < 16


def test_sparse_rs_targeted_and_deterministic(digits_model, batch):
    x, y = batch
    target = (y + 3) % 10
    a = SparseRS(pixels=8, steps=300, seed=5).run(digits_model, x, y, target=target)
    b = SparseRS(pixels=8, steps=300, seed=5).run(digits_model, x, y, target=target)
    check_attack_result(a, digits_model, x, max_pixels=8)
    assert a.success.any()
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)


def test_swap_schedule_shrinks():
    fractions = [swap_fraction(0.3, s, 10_000) for s in (0, 30, 100, 300, 900, 9000)]
    assert fractions == sorted(fractions, reverse=True) and fractions[0] == 0.3


def test_min_pixels_finds_one_minimal_adversarials_within_budget(digits_model, batch):
    x, y = batch[0][:20], batch[1][:20]
    result = MinPixels(budget=800, max_pixels=20, stage_steps=60, seed=0).run(digits_model, x, y)
    check_attack_result(result, digits_model, x, max_pixels=20, budget=800)
    assert result.success_rate > 0.9
    assert_one_minimal(digits_model, x, result)
    # It never needs more pixels than a fixed-k search that succeeds.
    fixed = SparseRS(pixels=5, steps=200, seed=0).run(digits_model, x, y)
    both = fixed.success & result.success
    assert bool((result.l0_pixels[both] <= 5).all())


def test_pixel_schedule():
    assert pixel_schedule(10) == [2, 3, 4, 5, 7, 9, 10]
    assert pixel_schedule(1) == []


def test_label_only_attack_works_on_a_labels_only_model(labels_only_model, digits_model, batch):
    x, y = batch
    with pytest.raises(CapabilityError):
        SparseRS(pixels=3).run(labels_only_model, x, y)
    result = LabelOnly(budget=800, seed=0).run(labels_only_model, x, y)
    check_attack_result(result, labels_only_model, x, budget=800)
    assert result.success_rate > 0.9
    assert float(result.l0_pixels[result.success].float().median()) <= 6
    assert_one_minimal(labels_only_model, x, result)


def test_label_only_max_pixels_and_targeted_refusal(labels_only_model, batch):
    x, y = batch
    capped = LabelOnly(max_pixels=2, seed=0).run(labels_only_model, x, y)
    assert bool((capped.l0_pixels <= 2).all())
    with pytest.raises(ConfigError, match="untargeted"):
        LabelOnly().run(labels_only_model, x, y, target=(y + 1) % 10)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: SparseRS(pixels=0),
        lambda: SparseRS(p_init=0),
        lambda: MinPixels(budget=None),
        lambda: MinPixels(max_pixels=0),
        lambda: CornerSearch(checks=0),
        lambda: LabelOnly(max_pixels=0),
    ],
)
def test_invalid_configuration_is_refused(factory):
    with pytest.raises(ConfigError):
        factory()


def test_few_images_propose_several_candidates_within_the_budget(digits_model, batch):
    assert proposals_per_image(active=100, min_batch=64, queries_left=50) == 1
    assert proposals_per_image(active=4, min_batch=64, queries_left=50) == 16
    assert proposals_per_image(active=4, min_batch=64, queries_left=3) == 3
    x, y = batch
    x, y = x[:2], y[:2]
    for min_batch in (1, 64):
        result = SparseRS(pixels=3, steps=199, budget=200, seed=0, min_batch=min_batch).run(
            digits_model, x, y
        )
        check_attack_result(result, digits_model, x, max_pixels=3, budget=200)
        assert int(result.queries.max()) <= 200


def test_the_corner_scan_reports_progress_within_its_batch(digits_model, correct_digits):
    from pixelguard.attacks import create_attack

    x, y = correct_digits[0][:20], correct_digits[1][:20]
    seen: list[int] = []
    attack = create_attack("sparse-rs", pixels=1)
    attack.run(digits_model, x, y, progress=lambda done, total: seen.append(done))
    # reported while the scan runs (before every image is finished), never going back
    assert len(seen) >= 4 and seen == sorted(seen) and seen[0] < 20 and seen[-1] == 20
