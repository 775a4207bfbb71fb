"""Disguised queries: each query is a fresh random translation and noise of the image,
rejections are retried with a stronger disguise, and Blacklight stops matching them."""

from __future__ import annotations

import pytest
import torch

from pixelguard.defenses.query_disguise import DisguisedQueries, translate
from pixelguard.errors import ConfigError, QueryRejected
from pixelguard.models.base import ClassifierWrapper
from pixelguard.serve.blacklight import BlacklightDetector


def test_translate_moves_each_image_and_repeats_the_edges() -> None:
    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4) / 23
    out = translate(x, torch.tensor([1, 0]), torch.tensor([0, -2]))
    # image 0 one row down: the top row repeated
    assert torch.equal(out[0, 0, 0], x[0, 0, 0]) and torch.equal(out[0, 0, 1:], x[0, 0, :2])
    # image 1 two columns left: the right column repeated
    assert torch.equal(out[1, 0, :, :2], x[1, 0, :, 2:])
    assert torch.equal(out[1, 0, :, 2], x[1, 0, :, 3]) and torch.equal(
        out[1, 0, :, 3], x[1, 0, :, 3]
    )
    assert torch.equal(
        translate(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)), x
    )


class Recorder(ClassifierWrapper):
    """Keeps every batch it is asked about."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.seen: list[torch.Tensor] = []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return self.model.predict(x)


def test_each_query_is_disguised_afresh_within_bounds(digits_model, correct_digits) -> None:
    x = correct_digits[0][:6]
    recorder = Recorder(digits_model)
    disguised = DisguisedQueries(recorder, shift=1, noise=0.05, seed=3)
    disguised.predict(x)
    disguised.predict(x)
    first, second = recorder.seen
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, second)
    # each sent image is a translation of its image by at most 1 pixel, plus noise <= 0.05
    for sent, image in zip(first, x):
        offsets = [
            (sent - translate(image[None], torch.tensor([dy]), torch.tensor([dx]))[0]).abs().max()
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ]
        assert min(offsets) <= 0.05 + 1e-6
    again = Recorder(digits_model)
    DisguisedQueries(again, shift=1, noise=0.05, seed=3).predict(x)
    assert torch.equal(again.seen[0], first)  # seeded
    assert not disguised.capabilities.deterministic and not disguised.capabilities.gradients


class RejectsFirst(ClassifierWrapper):
    """Rejects its first ``n`` queries, like a stateful defense set to reject."""

    def __init__(self, model, n: int) -> None:
        super().__init__(model)
        self.left = n
        self.noise_sent: list[float] = []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.left > 0:
            self.left -= 1
            raise QueryRejected("HTTP 403 Forbidden: query rejected")
        return self.model.predict(x)


def test_rejections_are_retried_with_a_stronger_disguise(digits_model, correct_digits) -> None:
    x = correct_digits[0][:3]
    wrapped = DisguisedQueries(RejectsFirst(digits_model, 2), noise=0.01, retries=2, seed=0)
    assert wrapped.predict(x).shape == (3, 10)
    assert wrapped.rejections == 2
    # kept 4x stronger after two rejections, relaxed by 2 ** -0.25 per accepted image
    assert wrapped.strength == pytest.approx(4 * 2**-0.75)
    for _ in range(12):
        wrapped.predict(x)
    assert wrapped.strength == 1.0
    stubborn = DisguisedQueries(RejectsFirst(digits_model, 10), noise=0.01, retries=2, seed=0)
    with pytest.raises(QueryRejected):
        stubborn.predict(x)
    assert stubborn.rejections == 3
    for bad in ({"shift": -1}, {"noise": 1.5}, {"jpeg": 99}, {"retries": -1}, {"escalate": 0.5}):
        with pytest.raises(ConfigError):
            DisguisedQueries(digits_model, **bad)


class Watched(ClassifierWrapper):
    """Shows every image it is asked about to Blacklight, as ``pixelguard serve`` does."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.detector = BlacklightDetector(neighbours=1)
        self.flags: list[bool] = []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.flags += [self.detector.check("attacker", image) for image in pixels]
        return self.model.predict(x)


def test_disguised_queries_slip_past_blacklight(digits_model, correct_digits) -> None:
    # 40 queries of a sparse attack on one digit: each sets 1 to 3 pixels to 0 or 1.
    g = torch.Generator().manual_seed(0)
    plain_rate, disguised_rate = [], []
    for image in correct_digits[0][:4]:
        queries = image.expand(40, -1, -1, -1).clone()
        for q in queries:
            for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
                i, j = torch.randint(0, 8, (2,), generator=g)
                q[:, i, j] = float(torch.randint(0, 2, (1,), generator=g))
        for shift, rates in ((0, plain_rate), (2, disguised_rate)):
            watched = Watched(digits_model)
            model = DisguisedQueries(watched, shift=shift, noise=0.1, seed=1) if shift else watched
            for q in queries:
                model.predict(q[None])
            rates.append(sum(watched.flags) / len(watched.flags))
    # Blacklight flags 80 to 90% of the plain queries (measured on 8 digits), and 0 to 3%
    # of the same queries once each is moved by up to 2 pixels with noise of 0.1. A
    # move alone repeats among 25 moves (about 45% flagged), noise of 0.05 alone
    # leaves most windows in their bins (about 50%).
    assert min(plain_rate) > 0.6, plain_rate
    assert max(disguised_rate) < 0.15, disguised_rate


def test_jpeg_disguise_reencodes_each_query(digits_model, correct_digits) -> None:
    x = correct_digits[0][:4]
    recorder = Recorder(digits_model)
    disguised = DisguisedQueries(recorder, shift=0, jpeg=70, seed=5)
    disguised.predict(x)
    sent = recorder.seen[0]
    assert not torch.equal(sent, x)
    assert torch.equal(sent, (sent * 255).round() / 255)  # decoded 8-bit pixels
    assert (sent - x).abs().mean() < 0.1  # the same pictures
