"""SklearnClassifier: a logistic regression on digits, and the estimator checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from threadpoolctl import threadpool_limits

from pixelguard.errors import ModelError
from pixelguard.models import InputSpec, OutputKind, SklearnClassifier


def fit(features: np.ndarray, labels: object) -> LogisticRegression:
    """Fit on one BLAS thread: tiny fits are fastest so and avoid spin-waits on busy boxes."""
    with threadpool_limits(1):
        return LogisticRegression(max_iter=500).fit(features, labels)


@pytest.fixture(scope="module")
def logreg(digits) -> LogisticRegression:
    x, y = digits
    return fit(x[:1400].reshape(1400, -1).numpy(), y[:1400])


def test_scores_equal_predict_proba_and_classify_digits(digits, logreg) -> None:
    x, y = digits[0][1400:], digits[1][1400:]
    clf = SklearnClassifier(logreg, (1, 8, 8))
    scores = clf.predict(x)
    expected = logreg.predict_proba(x.reshape(len(x), -1).numpy())
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert float((scores.argmax(1) == y).float().mean()) >= 0.9
    assert clf.num_classes == 10
    assert clf.capabilities.output is OutputKind.PROBABILITIES
    assert not clf.capabilities.gradients


def test_chunking_and_spec(digits, logreg) -> None:
    x = digits[0][:50]
    whole = SklearnClassifier(logreg, (1, 8, 8)).predict(x)
    torch.testing.assert_close(SklearnClassifier(logreg, (1, 8, 8), batch_size=7).predict(x), whole)
    # A one-channel image flattens the same way in NHWC; the spec is flattened regardless.
    nhwc = SklearnClassifier(logreg, (1, 8, 8), spec=InputSpec(layout="nhwc"))
    assert nhwc.spec.flatten
    torch.testing.assert_close(nhwc.predict(x), whole)


def test_scale_is_applied_to_features(digits) -> None:
    x, y = digits
    flat = x[:1400].reshape(1400, -1).numpy()
    est = fit(flat * 16, y[:1400])
    clf = SklearnClassifier(est, (1, 8, 8), spec=InputSpec(scale=16.0))
    expected = est.predict_proba(flat[:20] * 16)
    np.testing.assert_allclose(clf.predict(x[:20]).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_estimator_without_predict_proba_is_refused() -> None:
    est = RidgeClassifier().fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ModelError, match="predict_proba"):
        SklearnClassifier(est, (1, 2, 2))


def test_labels_must_be_0_to_k_minus_1() -> None:
    est = fit(np.eye(4), ["cat", "dog", "cat", "dog"])
    with pytest.raises(ModelError, match=r"0\.\.K-1"):
        SklearnClassifier(est, (1, 2, 2))
    shifted = fit(np.eye(4), [1, 2, 1, 2])
    with pytest.raises(ModelError, match=r"0\.\.K-1"):
        SklearnClassifier(shifted, (1, 2, 2))


def test_unfitted_and_wrong_feature_count_are_refused() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        SklearnClassifier(LogisticRegression(), (1, 2, 2))
    est = fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ModelError, match="4 features"):
        SklearnClassifier(est, (1, 3, 3))
