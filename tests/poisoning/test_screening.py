"""Screening a training set: spectral signatures and activation clustering find planted poison."""

from __future__ import annotations

import math

import pytest
import torch

from pixelguard.errors import ConfigError, ShapeError
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import train_classifier
from pixelguard.poisoning.activation_clustering import ActivationClustering, two_means
from pixelguard.poisoning.features import penultimate_features
from pixelguard.poisoning.screening import screening_metrics
from pixelguard.poisoning.spectral import SpectralSignatures, two_means_1d

TARGET = 0
SOURCE = 7
N_POISON = 50


def plant(
    x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2x2 white corner square on N_POISON seeded images of SOURCE, relabelled TARGET.

    One source class to one target, as in the experiments of Tran et al. and Chen et
    al.; the poison is about a fifth of the target class.
    """
    generator = torch.Generator().manual_seed(seed)
    eligible = torch.nonzero(y == SOURCE).flatten()
    chosen = eligible[torch.randperm(eligible.numel(), generator=generator)[:N_POISON]]
    x, y = x.clone(), y.clone()
    x[chosen, :, -2:, -2:] = 1.0
    y[chosen] = TARGET
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[chosen] = True
    return x, y, mask


@pytest.fixture(scope="module", params=[0, 2])
def planted(request, digits):
    """Poisoned digits, the true mask, and the features of a small CNN trained on them."""
    seed = request.param
    x, y, mask = plant(digits[0], digits[1], seed)
    module, _ = train_classifier(
        x, y, arch="small-cnn", epochs=15, lr=2e-3, batch_size=64, seed=seed
    )
    model = TorchClassifier(module, (1, 8, 8), output="logits")
    return penultimate_features(model, x), y, mask


def test_spectral_signatures_find_the_poison(planted) -> None:
    features, labels, mask = planted
    result = SpectralSignatures().scan(features, labels)
    metrics = screening_metrics(result.flagged, mask)
    assert metrics.recall >= 0.9
    # removal_factor 1.5 flags 1.5 times the estimated poison: precision near 2/3.
    assert metrics.precision >= 0.55
    assert [c.label for c in result.classes if c.details["poisoned"]] == [TARGET]
    exact = SpectralSignatures(removal_factor=1.0).scan(features, labels)
    assert screening_metrics(exact.flagged, mask).f1 >= 0.85


def test_spectral_with_the_papers_epsilon_flags_the_share_asked(planted) -> None:
    features, labels, mask = planted
    in_target = int((labels == TARGET).sum())
    epsilon = float(mask.sum()) / in_target
    result = SpectralSignatures(epsilon=epsilon).scan(features, labels)
    for c in result.classes:
        assert c.n_flagged == min(c.n, math.ceil(1.5 * epsilon * c.n))
    target_flags = result.flagged & (labels == TARGET)
    assert screening_metrics(target_flags, mask).recall >= 0.9


def test_activation_clustering_finds_the_poison_cluster(planted) -> None:
    features, labels, mask = planted
    result = ActivationClustering(seed=3).scan(features, labels)
    assert screening_metrics(result.flagged, mask).recall >= 0.9
    target_scan = next(c for c in result.classes if c.label == TARGET)
    assert target_scan.details["poisoned"] and target_scan.details["small_share"] < 0.35
    # The paper's rule (removal_factor 1) flags the small cluster exactly: in the target
    # class it is the poison. (On 8x8 digits the relative-size rule also flags natural
    # sub-styles of some clean classes, such as 1 and 9, so precision over all classes
    # is low here; see BENCHMARKS.md for MNIST.)
    paper = ActivationClustering(seed=3, removal_factor=1.0).scan(features, labels)
    paper_target = paper.flagged & (labels == TARGET)
    assert screening_metrics(paper_target, mask).precision >= 0.9
    # The default flags 1.5 times the cluster, nearest it first.
    in_target = result.flagged & (labels == TARGET)
    assert int(in_target.sum()) == min(target_scan.n, math.ceil(1.5 * int(paper_target.sum())))
    assert bool((in_target | ~paper_target).all())
    top = result.most_suspicious(10)
    assert bool(result.flagged[top].all())
    assert bool((result.scores[top][:-1] >= result.scores[top][1:]).all())


def test_clean_features_flag_little() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(600, 32, generator=g)
    labels = torch.arange(600) % 3
    assert SpectralSignatures().scan(features, labels).n_flagged == 0
    assert ActivationClustering().scan(features, labels).n_flagged == 0


def test_scans_are_deterministic_and_leave_inputs_alone(planted) -> None:
    features, labels, _ = planted
    before = features.clone()
    a = ActivationClustering(seed=5).scan(features, labels)
    b = ActivationClustering(seed=5).scan(features, labels)
    assert torch.equal(a.flagged, b.flagged) and torch.equal(a.scores, b.scores)
    assert torch.equal(features, before)
    data = a.to_dict()
    assert data["method"] == "activation-clustering" and data["settings"]["seed"] == 5
    assert sum(c["n_flagged"] for c in data["classes"]) == data["n_flagged"] == a.n_flagged


def test_two_means_helpers() -> None:
    values = torch.tensor([0.0, 0.1, 0.2, 0.1, 5.0, 5.1])
    threshold, separation, small_high, size = two_means_1d(values)
    assert 0.2 < threshold < 5.0 and separation > 0.95 and small_high and size == 2
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(50, 3, generator=g), torch.randn(10, 3, generator=g) + 8])
    assign, centres = two_means(z, restarts=4, max_iter=50, generator=g)
    assert centres.shape == (2, 3)
    assert len(set(assign[50:].tolist())) == 1 and int((assign[:50] == assign[50]).sum()) == 0


def test_screening_metrics_counts_and_intervals() -> None:
    flagged = torch.tensor([1, 1, 1, 0, 0, 0]).bool()
    truth = torch.tensor([1, 1, 0, 1, 0, 0]).bool()
    m = screening_metrics(flagged, truth)
    assert (m.true_positives, m.false_positives, m.false_negatives, m.true_negatives) == (
        2,
        1,
        1,
        2,
    )
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.precision_ci is not None and m.precision_ci[0] < 2 / 3 < m.precision_ci[1]
    nothing = screening_metrics(torch.zeros(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool))
    assert (nothing.precision, nothing.recall, nothing.f1, nothing.precision_ci) == (
        0.0,
        0.0,
        0.0,
        None,
    )
    with pytest.raises(ShapeError):
        screening_metrics(flagged, truth[:3])


def test_bad_settings_and_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        SpectralSignatures(epsilon=0.0)
    with pytest.raises(ConfigError, match="removal_factor"):
        SpectralSignatures(removal_factor=0.5)
    with pytest.raises(ConfigError, match="size_threshold"):
        ActivationClustering(size_threshold=0.7)
    with pytest.raises(ShapeError):
        SpectralSignatures().scan(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ShapeError, match="NaN"):
        ActivationClustering().scan(
            torch.full((5, 2), float("nan")), torch.zeros(5, dtype=torch.long)
        )
