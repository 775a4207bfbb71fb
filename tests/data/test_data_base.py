"""The Dataset record and the embedded digits default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelguard.data import Dataset, load_digits
from pixelguard.errors import ConfigError, DataError, RangeError, ShapeError


def _dataset(n: int = 6, class_names: list[str] | None = None) -> Dataset:
    x = torch.linspace(0, 1, n * 4).reshape(n, 1, 2, 2)
    y = torch.arange(n, dtype=torch.int64) % 3
    return Dataset(x, y, class_names, "test arrays")


def test_properties() -> None:
    data = _dataset()
    assert len(data) == 6
    assert data.image_shape == (1, 2, 2)
    assert data.num_classes == 3
    assert _dataset(class_names=["a", "b", "c", "d"]).num_classes == 4
    assert "n=6" in repr(data) and "test arrays" in repr(data)


@pytest.mark.parametrize(
    "indices",
    [
        slice(1, 3),
        [1, 2],
        torch.tensor([1, 2]),
        np.array([1, 2]),
        torch.tensor([False, True, True, False, False, False]),
    ],
)
def test_subset(indices: object) -> None:
    data = _dataset()
    part = data.subset(indices)  # type: ignore[arg-type]
    assert torch.equal(part.x, data.x[1:3]) and torch.equal(part.y, data.y[1:3])
    assert part.source == data.source


def test_subset_of_nothing_is_empty() -> None:
    part = _dataset().subset([])
    assert len(part) == 0 and part.num_classes == 0


def test_take_per_class_keeps_order() -> None:
    data = _dataset(9)
    part = data.take_per_class(2)
    assert part.y.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(part.x, data.x[:6])
    with pytest.raises(ConfigError):
        data.take_per_class(0)


def test_construction_validates() -> None:
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ShapeError, match="3 labels for 2 images"):
        Dataset(x, torch.zeros(3, dtype=torch.int64), None, "s")
    with pytest.raises(ShapeError, match="int64"):
        Dataset(x, torch.zeros(2, dtype=torch.int32), None, "s")
    with pytest.raises(RangeError, match="negative"):
        Dataset(x, torch.tensor([0, -1]), None, "s")
    with pytest.raises(RangeError, match="only 2 class names"):
        Dataset(x, torch.tensor([0, 2]), ["a", "b"], "s")
    with pytest.raises(RangeError, match=r"\[0, 1\]"):
        Dataset(x + 2, torch.tensor([0, 1]), None, "s")


def test_from_arrays_refuses_no_images() -> None:
    with pytest.raises(DataError, match="no images"):
        Dataset.from_arrays(np.zeros((0, 4, 4), dtype=np.uint8), [], source="empty.npy")


def test_digits_splits_are_fixed_and_disjoint() -> None:
    test, train, every = load_digits("test"), load_digits("train"), load_digits("all")
    assert (len(test), len(train), len(every)) == (360, 1437, 1797)
    assert test.image_shape == (1, 8, 8) and test.class_names == [str(d) for d in range(10)]
    assert test.source == "digits (test split)"
    assert float(every.x.min()) == 0.0 and float(every.x.max()) == 1.0
    order = np.random.default_rng(0).permutation(1797)
    assert torch.equal(test.x, every.x[torch.from_numpy(order[-360:])])
    assert torch.equal(train.y, every.y[torch.from_numpy(order[:-360])])
    assert torch.equal(load_digits().x, test.x)


def test_digits_values_are_sixteenths() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits().images
    every = load_digits("all")
    assert torch.equal(every.x[:, 0], torch.from_numpy(raw / 16).float())


def test_digits_rejects_an_unknown_split() -> None:
    with pytest.raises(ConfigError, match="split"):
        load_digits("validation")


def test_sample_draws_a_seeded_spread_subset_in_dataset_order():
    ordered = Dataset.from_arrays(
        np.repeat(np.linspace(0, 1, 10, dtype=np.float32), 30).reshape(300, 1, 1, 1),
        np.repeat(np.arange(10), 30),
    )
    picked = ordered.sample(40, seed=1)
    assert len(picked) == 40 and len(set(picked.y.tolist())) >= 8
    assert torch.equal(picked.x, ordered.sample(40, seed=1).x)
    assert not torch.equal(picked.x, ordered.sample(40, seed=2).x)
    assert bool((picked.y[1:] >= picked.y[:-1]).all())  # dataset order kept
    assert ordered.sample(None) is ordered and ordered.sample(500) is ordered
    with pytest.raises(ConfigError, match="positive number"):
        ordered.sample(0)


def test_in_class_order_relabels_by_name():
    data = Dataset.from_arrays(
        np.zeros((3, 1, 2, 2), np.float32), [0, 1, 1], class_names=["cat", "dog"]
    )
    swapped = data.in_class_order(["dog", "cat", "bird"])
    assert swapped.y.tolist() == [1, 0, 0] and swapped.class_names == ["dog", "cat", "bird"]
    with pytest.raises(ConfigError, match="cat"):
        data.in_class_order(["dog", "bird"])
    unnamed = Dataset.from_arrays(np.zeros((2, 1, 2, 2), np.float32), [0, 1])
    assert unnamed.in_class_order(["a", "b"]).class_names == ["a", "b"]
