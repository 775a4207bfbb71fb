"""CallableClassifier: numpy at the edge, output kinds, chunking, bad outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelguard.errors import ConfigError, ModelError
from pixelguard.models import CallableClassifier, InputSpec, OutputKind


def known_images() -> torch.Tensor:
    """Two 3x4x4 images whose channels have distinct, exactly known means."""
    base = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(2, 3, 4, 4).clone()
    base[1] = base[1].flip(0)
    return base


def nchw_means(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=(2, 3))


def nhwc_means(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=(1, 2))


def test_nchw_round_trip() -> None:
    x = known_images()
    clf = CallableClassifier(nchw_means, (3, 4, 4), output="logits")
    torch.testing.assert_close(clf.predict(x), x.mean(dim=(2, 3)))


def test_nhwc_scale_mean_std() -> None:
    x = known_images()
    spec = InputSpec(layout="nhwc", scale=255.0, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    clf = CallableClassifier(nhwc_means, (3, 4, 4), spec, output="logits")
    expected = (255.0 * x.mean(dim=(2, 3)) - torch.tensor([10.0, 20.0, 30.0])) / torch.tensor(
        [2.0, 4.0, 8.0]
    )
    torch.testing.assert_close(clf.predict(x), expected)


def test_function_receives_model_dtype_and_layout() -> None:
    seen: list[np.ndarray] = []

    def fn(a: np.ndarray) -> np.ndarray:
        seen.append(a)
        return a.reshape(len(a), -1)[:, :2].astype(np.float64)

    clf = CallableClassifier(fn, (1, 2, 2), InputSpec(scale=255.0, dtype="uint8"), output="logits")
    x = torch.tensor([[[[0.0, 0.5], [1.0, 0.2]]]])
    scores = clf.predict(x)
    assert seen[-1].dtype == np.uint8 and seen[-1].shape == (1, 1, 2, 2)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, torch.tensor([[0.0, 128.0]]))


def _probabilities(a: np.ndarray) -> np.ndarray:
    z = np.exp(a.reshape(len(a), -1)[:, :3])
    return z / z.sum(axis=1, keepdims=True)


def _labels(a: np.ndarray) -> np.ndarray:
    return np.eye(3)[a.reshape(len(a), -1)[:, :3].argmax(axis=1)]


@pytest.mark.parametrize(
    ("fn", "kind"),
    [
        (lambda a: a.reshape(len(a), -1)[:, :3] * 4 - 2, OutputKind.LOGITS),
        (_probabilities, OutputKind.PROBABILITIES),
        (_labels, OutputKind.LABELS),
    ],
)
def test_output_kind_is_detected(fn, kind: OutputKind) -> None:
    clf = CallableClassifier(fn, (1, 2, 2))
    assert clf.capabilities.output is kind
    assert clf.capabilities.scores is (kind is not OutputKind.LABELS)
    assert not clf.capabilities.gradients
    assert clf.num_classes == 3


def test_declared_output_is_not_overridden() -> None:
    clf = CallableClassifier(_probabilities, (1, 2, 2), output="logits")
    assert clf.capabilities.output is OutputKind.LOGITS


def test_chunking_calls_in_batches_and_matches_one_call() -> None:
    sizes: list[int] = []

    def fn(a: np.ndarray) -> np.ndarray:
        sizes.append(len(a))
        return a.reshape(len(a), -1)[:, :4] * 3

    x = torch.rand(10, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    chunked = CallableClassifier(fn, (1, 2, 2), batch_size=4, output="logits")
    whole = CallableClassifier(fn, (1, 2, 2), output="logits")
    a = chunked.predict(x)
    assert sizes == [4, 4, 2]
    torch.testing.assert_close(a, whole.predict(x))


def test_lists_and_tensors_are_accepted() -> None:
    x = torch.rand(2, 1, 2, 2)
    as_list = CallableClassifier(lambda a: [[1.0, 2.0]] * len(a), (1, 2, 2), output="logits")
    as_tensor = CallableClassifier(lambda a: torch.ones(len(a), 2), (1, 2, 2), output="logits")
    assert as_list.predict(x).tolist() == [[1.0, 2.0], [1.0, 2.0]]
    assert as_tensor.predict(x).shape == (2, 2)


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda a: np.zeros(len(a)), "shape"),
        (lambda a: np.zeros((len(a) + 1, 3)), "shape"),
        (lambda a: np.full((len(a), 3), np.nan), "NaN"),
        (lambda a: [["a", "b"]] * len(a), "not an"),
        (lambda a: np.zeros((len(a), 1)), "fewer than 2"),
    ],
)
def test_bad_outputs_raise_model_error(fn, match: str) -> None:
    clf = CallableClassifier(fn, (1, 2, 2), output="logits")
    with pytest.raises(ModelError, match=match):
        clf.predict(torch.rand(2, 1, 2, 2))


def test_function_errors_become_model_errors_with_the_cause() -> None:
    def fn(a: np.ndarray) -> np.ndarray:
        raise ValueError("boom")

    clf = CallableClassifier(fn, (1, 2, 2), output="logits")
    with pytest.raises(ModelError, match="ValueError.*boom") as info:
        clf.predict(torch.rand(2, 1, 2, 2))
    assert isinstance(info.value.__cause__, ValueError)


def test_input_is_not_mutated_and_shape_is_checked() -> None:
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    clf = CallableClassifier(nchw_means, (3, 4, 4), output="logits")
    clf.predict(x)
    assert torch.equal(x, before)
    with pytest.raises(ModelError, match="expects images of shape"):
        clf.predict(torch.rand(3, 3, 5, 5))


def test_not_callable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="callable"):
        CallableClassifier(42, (1, 2, 2))  # type: ignore[arg-type]
