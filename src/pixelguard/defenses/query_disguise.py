"""Disguised queries: the adaptive attacker of a stateful defense (Blacklight, k-NN).

A stateful defense remembers the queries it has answered and flags a query that is a
near-duplicate of one of them. A query attack is a long run of near-duplicates, so it
is flagged within a few queries, unless every query it sends is disguised so that no
two look alike to the defense. :class:`DisguisedQueries` wraps the model an attack
queries (an :class:`~pixelguard.models.http.HttpClassifier`, say) and sends each image
randomly transformed: translated by up to ``shift`` pixels (edges replicated), with
uniform noise of up to ``noise`` added to every pixel, and saved as a JPEG of a random
quality from ``jpeg`` to 95. The attack then searches for an
image that is misclassified *under these random transforms*, as in expectation over
transformation, and every image the server sees is new to its memory.

When the endpoint rejects a query as an attack
(:class:`~pixelguard.errors.QueryRejected`, e.g. HTTP 403 from ``pixelguard serve
--on-detect reject``), the query is sent again with a fresh transform ``escalate``
times as strong, up to ``retries`` times, and the stronger disguise is kept for the
next queries; each accepted query relaxes it by ``escalate ** -0.25``, never below
the starting strength. So the defense's own rejections steer the disguise to the
weakest one it lets through, after OARS. Every try is a query the server sees.

What success means changes: the server answers on the disguised image, so a query the
server misclassifies is an image that fooled it, but it is the original photo shifted
and noised plus the attack's pixels, not the original plus ``k`` pixels. Benchmarks
report both: whether the server was fooled, and whether the attack's undisguised image
fools the model.

References:
    Feng, Tramèr, Sitawarin, Carlini, Ghiasi, Mahloujifar, Jha. "Stateful defenses for
    machine learning models are not yet secure against black-box attacks" (OARS).
    CCS 2023. arXiv:2303.06280.
    Li, Shan, Wenger, Zhang, Zheng, Zhao. "Blacklight: scalable defense for neural
    networks against query-based black-box attacks." USENIX Security 2022.
"""

from __future__ import annotations

import dataclasses
import secrets

import torch

from pixelguard.checks import check_images
from pixelguard.defenses.filters import jpeg_compress
from pixelguard.errors import ConfigError, QueryRejected
from pixelguard.models.base import Capabilities, Classifier, ClassifierWrapper


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) moved by its own (``dy``, ``dx``) pixels, with
    the edge pixels repeated into the space it leaves.

    Args:
        x: images.
        dy: (N,) integer rows to move down (negative: up).
        dx: (N,) integer columns to move right (negative: left).
    """
    n, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device) - dy.view(n, 1).to(x.device)).clamp_(0, h - 1)
    cols = (torch.arange(w, device=x.device) - dx.view(n, 1).to(x.device)).clamp_(0, w - 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # (N, H, W, C) by advanced indexing, back to (N, C, H, W)
    return x.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)


class DisguisedQueries(ClassifierWrapper):
    """Sends every image to ``model`` randomly translated and noised (see module doc).

    Args:
        model: the classifier the attack queries (usually a remote endpoint).
        shift: largest translation in pixels, per axis (0: none).
        noise: largest uniform noise per pixel, in [0, 1] units (0: none).
        jpeg: lowest quality of the JPEG re-encoding of each query, 1 to 95; each query
            gets its own quality from ``jpeg`` to 95 (0: no re-encoding). Not escalated.
        retries: how often a rejected query is sent again with a new disguise.
        escalate: factor on ``shift`` and ``noise`` after a rejected query (kept for
            later queries; each accepted one relaxes it by ``escalate ** -0.25``).
        seed: seed of the random transforms (None: fresh randomness).

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> the model's (N, K) scores.

    Raises:
        ConfigError: a negative shift, noise or retries, noise over 1, a JPEG quality
            outside 1..95, or escalate < 1.
    """

    def __init__(
        self,
        model: Classifier,
        *,
        shift: int = 2,
        noise: float = 0.0,
        jpeg: int = 0,
        retries: int = 0,
        escalate: float = 2.0,
        seed: int | None = None,
    ) -> None:
        if not isinstance(shift, int) or shift < 0:
            raise ConfigError(f"shift must be a non-negative integer, got {shift!r}")
        if not 0.0 <= noise <= 1.0:
            raise ConfigError(f"noise must be in [0, 1], got {noise!r}")
        if not isinstance(jpeg, int) or not (jpeg == 0 or 1 <= jpeg <= 95):
            raise ConfigError(f"jpeg must be 0 (none) or a quality from 1 to 95, got {jpeg!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, got {retries!r}")
        if escalate < 1.0:
            raise ConfigError(f"escalate must be >= 1, got {escalate!r}")
        super().__init__(model)
        self.shift = shift
        self.noise = noise
        self.jpeg = jpeg
        self.retries = retries
        self.escalate = escalate
        self.seed = seed if seed is not None else secrets.randbits(31)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.rejections = 0
        """Queries the endpoint rejected (each was sent again while retries lasted)."""
        self.strength = 1.0
        """The disguise's current strength, a factor on ``shift`` and ``noise``."""

    @property
    def capabilities(self) -> Capabilities:
        """The model's, non-deterministic and without gradients: the disguise is drawn
        afresh for every query."""
        caps = self.model.capabilities
        return dataclasses.replace(caps, gradients=False, deterministic=False)

    def params(self) -> dict[str, object]:
        """The configuration as plain data, for reports."""
        return {
            "wrapper": "disguised-queries",
            "shift": self.shift,
            "noise": self.noise,
            "jpeg": self.jpeg,
            "retries": self.retries,
            "escalate": self.escalate,
            "seed": self.seed,
            **self.model.params(),
        }

    def disguise(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """``x`` translated by up to ``shift * strength`` pixels, noised by up to
        ``noise * strength`` (clipped to [0, 1]) and re-encoded as a JPEG, fresh
        randomness for every image."""
        n = x.shape[0]
        out = x
        reach = min(round(self.shift * strength), min(x.shape[2:]) - 1)
        if reach > 0:
            moves = torch.randint(-reach, reach + 1, (2, n), generator=self.generator)
            out = translate(out, moves[0], moves[1])
        amplitude = min(1.0, self.noise * strength)
        if amplitude > 0:
            noise = torch.rand(x.shape, generator=self.generator).mul_(2).sub_(1)
            out = (out + amplitude * noise.to(x.device)).clamp_(0.0, 1.0)
        if self.jpeg:
            qualities = torch.randint(self.jpeg, 96, (n,), generator=self.generator).tolist()
            out = torch.cat([jpeg_compress(out[i : i + 1], q) for i, q in enumerate(qualities)])
        return out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The model's scores on disguised copies of ``x``. With ``retries``, images are
        sent one at a time, so a rejection costs only its own image's retry."""
        check_images(x)
        if self.retries == 0:
            return self.model.predict(self.disguise(x))
        return torch.cat([self._send(x[i : i + 1]) for i in range(x.shape[0])])

    def _send(self, x: torch.Tensor) -> torch.Tensor:
        """One image, sent again with a stronger disguise after each rejection."""
        attempt = 0
        while True:
            try:
                scores = self.model.predict(self.disguise(x, self.strength))
            except QueryRejected:
                self.rejections += 1
                if attempt == self.retries:
                    raise
                attempt += 1
                self.strength *= self.escalate
                continue
            self.strength = max(1.0, self.strength * self.escalate**-0.25)
            return scores
