"""Feature-space k-NN stateful detection of query-based black-box attacks.

Reference: S. Chen, N. Carlini, D. Wagner, "Stateful Detection of Black-Box Adversarial
Attacks", arXiv:1907.05587 (2019); ACM Workshop on Security and Privacy on AI, 2020.

A query attack (Sparse-RS, Square, HopSkipJump, ...) sends long runs of queries that
differ from one another by a small perturbation. An encoder maps every query to a
feature vector; the detector keeps the features of recent queries and flags a query
whose mean distance to its ``k`` nearest stored neighbours is below a threshold. The
threshold is calibrated on clean images (:func:`calibrate_threshold`), as in the
paper: the ``fpr`` quantile (0.1% by default) of the same statistic on clean images.

Choices made here, and how they differ from the paper:

- **Encoder.** The paper trains a similarity encoder. Here the default encoder is the
  served model's own penultimate layer (the input of its last ``nn.Linear``, see
  :func:`penultimate_encoder`), which needs no training; any torch module mapping
  images to ``(N, D)`` features can replace it (:func:`load_encoder`). A classifier's
  penultimate layer draws images of one class together, so near-duplicates stand out
  less than with the paper's encoder, the more so the larger one changed pixel is
  relative to the image (see the numbers below).
- **Unit norm.** Features are scaled to unit L2 norm (an all-zero row stays zero), so
  distances lie in ``[0, 2]`` whatever the encoder's scale and thresholds compare
  across encoders. Raw features flagged 15 of 797 clean 8x8 digits at a threshold
  calibrated for 0.1% on 1,000 others; unit-norm ones flagged none.
- **Scope.** ``scope="all"`` (the default) keeps one buffer for every account and
  compares a query with the recent queries of all of them, as Blacklight does here:
  the paper's per-account buffers are defeated by an attacker who spreads an attack
  over many (Sybil) accounts. ``scope="key"`` compares a query only with earlier
  queries of the same key (the paper's setting): no cross-talk between unrelated
  users, no protection against Sybil accounts. Either way the buffer holds at most
  ``max_entries`` queries of all keys together, the oldest evicted first.
- **Warm-up.** A query is never flagged while fewer than ``k`` queries are in its
  scope (the statistic needs ``k`` neighbours); it is still stored. So an attack on an
  empty buffer (or, with ``scope="key"``, a new key) is flagged at query ``k + 1`` at
  the earliest.
- **Exact re-sends.** A query whose image bytes equal those of a stored query (in its
  scope) is neither flagged nor stored: a deterministic model gives the same answer
  again, which tells an attacker nothing new, while users re-sending the same photo
  are common. A re-encoded, resized or slightly edited copy is a new query, and many
  of them can be flagged like an attack.
- **Buffer size.** The statistic falls as the buffer fills; the threshold holds for a
  buffer of about as many clean queries as it was calibrated on (see
  :func:`calibrate_threshold`).
- **Default ``k=10``** (the paper: 50, with a trained encoder on CIFAR-10). Smaller
  ``k`` flags an attack sooner; larger ``k`` tolerates more benign near-duplicates
  (copies of one photo, each JPEG-encoded anew). Measured on MNIST (the small CNN
  trained on the first 6,000 test images, 96.7% on the last 2,000; thresholds
  calibrated on 2,000 others; 300 clean digits already in the buffer): the Sparse-RS
  attack (10 pixels) was first flagged at query 5 to 11 with ``k=5``, 9 to 11 with
  ``k=10`` and 14 to 20 with ``k=20`` (10 runs), and then 91-97% of its queries in the
  runs that went past 100 queries; JPEG copies of one clean digit (quality 96, 94,
  ...) were flagged from the 4th or 5th copy with ``k=5`` and from the 6th to 9th with
  ``k=10`` (20 digits); of 2,000 held-out clean digits, none was flagged on an empty
  buffer, and 2 (``k=5``), 5 (``k=10``) and 10 (``k=20``) after the 2,000
  calibration digits (a buffer of up to 4,000, twice what was calibrated for).
  ``k=10`` keeps detection within about ten queries and lets a user re-send a photo
  a few times. On 8x8 digits, where one pixel is 1.6% of the image, a run setting one
  pixel per query is flagged later: at query 15.5 (10 to 28) for ``k=10``, median of
  30 runs.

Cost. Every :meth:`FeatureKnnDetector.check` runs the encoder once (with the default
encoder, one more forward pass of the served model per query, on a private copy of
the model) and one matrix product of the query's features with the whole buffer, no
Python loop over entries. On one CPU thread, with the small CNN on MNIST (``D =
128``), a check takes 1.3 ms with 10,000 stored queries (0.75 ms of it the encoder),
and about 11 ms with 100,000 (the product reads the whole buffer). Memory: the buffer
holds ``max_entries x D`` float32 features, so 100,000 queries take 51 MB for ``D =
128``, 205 MB for ``D = 512`` and 819 MB for ``D = 2048`` (a ResNet-50), plus about
200 bytes of bookkeeping per query.

With ``db_path`` the state is also kept in SQLite (WAL) and loaded again at start, so
a restart keeps it. The file records the encoder's input shape, feature size and its
features of a fixed probe image: state made with another encoder (or by Blacklight)
is refused. ``k``, ``threshold``, ``scope`` and ``max_entries`` may change between runs.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixelguard.checks import check_images
from pixelguard.errors import CapabilityError, ConfigError, ModelError, ShapeError
from pixelguard.models.base import Classifier, _wrapped
from pixelguard.models.loader import load_model
from pixelguard.models.torch import TorchClassifier
from pixelguard.poisoning.features import last_linear, penultimate_features
from pixelguard.serve.state import DetectorState, open_state, pixel_digest

__all__ = [
    "DEFAULT_FPR",
    "DEFAULT_K",
    "DEFAULT_MAX_ENTRIES",
    "FeatureEncoder",
    "FeatureKnnDetector",
    "calibrate_threshold",
    "load_encoder",
    "penultimate_encoder",
]

logger = logging.getLogger(__name__)

DEFAULT_K = 10
"""Neighbours averaged (the paper uses 50; see the module docstring)."""
DEFAULT_MAX_ENTRIES = 100_000
"""Queries kept in the buffer."""
DEFAULT_FPR = 0.001
"""Target false-positive rate of the calibration (the paper's 0.1st percentile)."""
SCOPES = ("all", "key")
_CHUNK = 1024
"""Most images per encoder call."""
_PROBE_TOLERANCE = 1e-3
"""Largest difference of the stored and the current probe features (unit rows) that
still counts as the same encoder (rounding differences between devices are far smaller)."""
_DETECTOR = "feature-knn"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS knn_probe (features BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS knn_queries (
    id INTEGER PRIMARY KEY, key_id TEXT NOT NULL, ts REAL NOT NULL,
    digest BLOB NOT NULL, features BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class FeatureEncoder:
    """Maps canonical images to unit-norm feature rows.

    Attributes:
        features: canonical images -> raw ``(N, D)`` features (any scale, any device).
        input_shape: ``(C, H, W)`` of the images it takes.
        description: what it is, for messages.

    Shape:
        ``encoder(x)``: x (N, C, H, W) float32 in [0, 1] -> (N, D) float32 on the CPU,
        each row of L2 norm 1 (or 0 where the raw row is 0).
    """

    features: Callable[[torch.Tensor], torch.Tensor]
    input_shape: tuple[int, int, int]
    description: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm features of ``x``, computed in chunks.

        Raises:
            ModelError: the encoder returned something other than finite (N, D) rows.
        """
        check_images(x)
        rows = []
        for chunk in torch.split(x, _CHUNK):
            out = self.features(chunk)
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(chunk):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ModelError(
                    f"{self.description} returned {got} for {len(chunk)} images; "
                    f"expected ({len(chunk)}, D) features"
                )
            out = out.detach().to("cpu", torch.float32)
            if not bool(torch.isfinite(out).all()):
                raise ModelError(f"{self.description} returned NaN or infinite features")
            rows.append(torch.nn.functional.normalize(out, dim=1))
        return torch.cat(rows)


def penultimate_encoder(model: Classifier) -> FeatureEncoder:
    """The served model's penultimate layer (the input of its last ``nn.Linear``).

    The torch model is found under any wrappers (preprocessing defences): the features
    are those of the undefended model on the query as sent. The detector runs a
    private copy of it, so its forward hook never sees the server's own calls.

    Raises:
        ConfigError: no torch model under the wrappers, a TorchScript module, a module
            without an ``nn.Linear`` that gives the class scores, or a wrapper that
            changes the input shape (pass an encoder instead).
    """
    inner = next((m for m in _wrapped(model) if isinstance(m, TorchClassifier)), None)
    hint = "; give the detector an encoder (--knn-encoder file.py:factory)"
    if inner is None:
        raise ConfigError(f"a {type(model).__name__} model exposes no penultimate layer{hint}")
    if tuple(inner.input_shape) != tuple(model.input_shape):
        raise ConfigError(
            f"the torch model takes {inner.input_shape}, not the served {model.input_shape}{hint}"
        )
    try:
        last_linear(inner.module)
        own = copy.deepcopy(inner)
        penultimate_features(own, torch.zeros(1, *inner.input_shape))
    except CapabilityError as exc:
        raise ConfigError(f"{exc}{hint}") from None
    return FeatureEncoder(
        lambda x: penultimate_features(own, x),
        inner.input_shape,
        f"the penultimate layer of {type(inner.module).__name__}",
    )


def load_encoder(
    spec: str | Path | nn.Module,
    input_shape: tuple[int, int, int],
    *,
    device: str | None = None,
    trust_pickle: bool = False,
) -> FeatureEncoder:
    """A torch module as an encoder: an ``nn.Module``, ``"file.py:factory"`` or a
    TorchScript ``.pt``, loaded by :func:`~pixelguard.models.loader.load_model` (so a
    factory file runs only when named, and a pickle only with ``trust_pickle``).

    The module takes float32 NCHW images in [0, 1] and returns ``(N, D)`` features.

    Args:
        spec: the module or where it is.
        input_shape: ``(C, H, W)`` of the served model's images.
        device: where it runs (see ``load_model``); default: where its weights are.
        trust_pickle: allow a fully pickled module file.

    Raises:
        ConfigError: ``spec`` is not a torch module, or it fails on images of
            ``input_shape``.
        ModelError, UnsafeLoadError: see ``load_model``.
    """
    model = load_model(
        spec, input_shape=input_shape, output="logits", device=device, trust_pickle=trust_pickle
    )
    if not isinstance(model, TorchClassifier):
        raise ConfigError(
            f"the encoder {spec} must be a torch.nn.Module, got {type(model).__name__}"
        )
    encoder = FeatureEncoder(model.predict, model.input_shape, f"the encoder {spec}")
    try:
        encoder(torch.zeros(1, *input_shape))
    except ModelError as exc:
        raise ConfigError(f"{exc} (on images of shape {input_shape})") from None
    return encoder


def _squared_distances(
    queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor
) -> torch.Tensor:
    """Squared L2 distances of feature rows to the bank's: (m, D), (n, D), (n,) -> (m, n).

    One matrix product (``torch.cdist`` is several times slower for a single query);
    ``bank_sq`` holds the bank rows' squared norms (1, or 0 for an all-zero row).
    """
    return queries.square().sum(dim=1, keepdim=True) + (bank_sq - 2 * queries @ bank.T)


def _knn_mean(squared: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` smallest distances of each row, from squared ones: (m, n) -> (m,)."""
    return squared.topk(k, dim=1, largest=False).values.clamp_min(0).sqrt().mean(dim=1)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"feature k-NN {name} must be an integer >= 1, got {value!r}")


def calibrate_threshold(
    encoder: FeatureEncoder,
    clean: torch.Tensor,
    *,
    k: int = DEFAULT_K,
    fpr: float = DEFAULT_FPR,
) -> float:
    """The threshold at which at most ``fpr`` of distinct clean images are flagged.

    Each distinct image (exact duplicates are dropped, as the detector skips them) is
    put through the detector's own statistic as if it came last, to a buffer holding
    all the others: its mean distance to its ``k`` nearest other images. The threshold
    is the ``floor(fpr * m)``-th smallest of these ``m`` statistics, so at most
    ``floor(fpr * m)`` of them fall strictly below it (with fewer than ``1 / fpr``
    images: their minimum). A buffer of fewer clean queries than ``m`` flags fewer.

    The statistic falls as the buffer fills (more images, closer neighbours): with a
    buffer that holds many more queries than were calibrated on, more than ``fpr`` of
    clean queries are flagged. Calibrate on about as many images as the buffer will
    hold: on MNIST (``k=10``, target 0.1%), a threshold from 2,000 digits flagged none
    of 2,000 others sent to an empty buffer, but 0.25% of them sent after the 2,000.
    Computed as chunked batched distances, ``m x m`` in all, 64 MB at a time (10,000
    MNIST digits take 8 s on one CPU thread).

    Args:
        encoder: the detector's encoder.
        clean: clean images of the kind the server will see (rounded to the uint8
            grid first, as queries are).
        k: neighbours averaged, as the detector's.
        fpr: the largest share of clean images flagged, in (0, 1).

    Returns:
        The threshold, for ``FeatureKnnDetector(threshold=...)``.

    Shape:
        clean: (N, C, H, W) float32 in [0, 1], more than ``k`` distinct images.

    Raises:
        ConfigError: ``fpr`` not in (0, 1), a bad ``k``, or not more than ``k``
            distinct images.
        ShapeError, RangeError: invalid images.
    """
    _check_count("k", k)
    if isinstance(fpr, bool) or not isinstance(fpr, float | int) or not 0 < fpr < 1:
        raise ConfigError(f"fpr must be in (0, 1), got {fpr!r}")
    check_images(clean, name="clean")
    pixels = (clean * 255).round().to(torch.uint8)
    seen: set[bytes] = set()
    keep = []
    for i, image in enumerate(pixels.numpy()):
        digest = pixel_digest(image)
        if digest not in seen:
            seen.add(digest)
            keep.append(i)
    if len(keep) <= k:
        raise ConfigError(
            f"calibration needs more than k={k} distinct clean images, got {len(keep)}"
        )
    features = encoder(pixels[keep].float() / 255)
    n = len(features)
    norms = features.square().sum(dim=1)
    rows = max(1, 2**24 // n)
    stats = []
    for start in range(0, n, rows):
        dist = _squared_distances(features[start : start + rows], features, norms)
        own = torch.arange(len(dist))
        dist[own, own + start] = math.inf  # not its own neighbour
        stats.append(_knn_mean(dist, k))
    ordered = torch.cat(stats).sort().values
    if n < 1 / fpr:
        logger.info(
            "%d clean images estimate a %.3g false-positive rate coarsely; the threshold "
            "is the smallest statistic",
            n,
            fpr,
        )
    return float(ordered[math.floor(fpr * n)])


class FeatureKnnDetector(DetectorState):
    """Flags queries close in feature space to ``k`` recent queries (Chen et al., 2019).

    A query is flagged when the mean L2 distance of its unit-norm features to their
    ``k`` nearest neighbours among the stored queries in its scope is below
    ``threshold`` (take it from :func:`calibrate_threshold`). Flagged queries are
    stored too; exact re-sends are neither flagged nor stored (see the module
    docstring for the scope, the warm-up and the memory).

    Thread-safe: :meth:`check` may be called from several threads.

    Args:
        encoder: maps images to features (:func:`penultimate_encoder`,
            :func:`load_encoder`).
        db_path: SQLite file for the state, or ``None`` for memory only.
        threshold: mean k-NN distance below which a query is flagged, in (0, 2].
        k: neighbours averaged.
        max_entries: queries kept, of all keys together; the oldest go first.
        scope: ``"all"`` (compare with every key's queries) or ``"key"`` (with the
            same key's only).

    Raises:
        ConfigError: a parameter is out of range, or ``db_path`` holds state made by
            another detector or another encoder.
    """

    def __init__(
        self,
        encoder: FeatureEncoder,
        db_path: str | Path | None = None,
        *,
        threshold: float,
        k: int = DEFAULT_K,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        scope: str = "all",
    ) -> None:
        if not isinstance(encoder, FeatureEncoder):
            raise ConfigError(f"encoder must be a FeatureEncoder, got {type(encoder).__name__}")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, float | int)
            or not 0 < threshold <= 2
        ):
            raise ConfigError(
                f"feature k-NN threshold must be in (0, 2] (distances of unit vectors), "
                f"got {threshold!r}"
            )
        _check_count("k", k)
        _check_count("max_entries", max_entries)
        if max_entries < k:
            raise ConfigError(f"feature k-NN max_entries {max_entries} is below k {k}")
        if scope not in SCOPES:
            raise ConfigError(f"feature k-NN scope must be all or key, got {scope!r}")
        self.encoder = encoder
        self.threshold = float(threshold)
        self.k = k
        self.max_entries = max_entries
        self.scope = scope
        probe = torch.rand((2, *encoder.input_shape), generator=torch.Generator().manual_seed(0))
        self._probe = encoder((probe * 255).round() / 255)  # checks the encoder early too
        self.dim = int(self._probe.shape[1])
        self._lock = threading.Lock()
        # A ring buffer: slots [0, n) in use; once full, ``_head`` is the oldest slot.
        self._features = torch.zeros(0, self.dim)
        self._sq = torch.zeros(0)  # squared norms of the rows: 1, or 0 for a zero row
        self._codes = torch.zeros(0, dtype=torch.int64)  # the key of each row, as a code
        self._slots: list[tuple[int, bytes]] = []  # per slot: (query id, digest)
        self._head = 0
        self._key_codes: dict[str, int] = {}
        self._seen: Counter[Hashable] = Counter()
        self._next_id = 1
        self._load(db_path)

    # -- persistence -----------------------------------------------------------------

    def _params(self) -> dict[str, str]:
        return {
            "detector": _DETECTOR,
            "input_shape": ",".join(map(str, self.encoder.input_shape)),
            "dim": str(self.dim),
        }

    def _open(self, path: Path) -> None:
        db = open_state(path, self._params(), "feature k-NN")
        try:
            db.executescript(_SCHEMA)
            probe = db.execute("SELECT features FROM knn_probe").fetchone()
            if probe is None:
                db.execute("INSERT INTO knn_probe VALUES (?)", (self._probe.numpy().tobytes(),))
            elif not torch.allclose(
                torch.from_numpy(
                    np.frombuffer(probe[0], np.float32).reshape(self._probe.shape).copy()
                ),
                self._probe,
                atol=_PROBE_TOLERANCE,
                rtol=0,
            ):
                raise ConfigError(
                    f"feature k-NN state in {path} was made with another encoder: its "
                    f"features of a probe image differ from {self.encoder.description}'s"
                )
            db.execute(
                "DELETE FROM knn_queries WHERE id NOT IN "
                "(SELECT id FROM knn_queries ORDER BY id DESC LIMIT ?)",
                (self.max_entries,),
            )
            db.commit()
            rows = db.execute(
                "SELECT id, key_id, digest, features FROM knn_queries ORDER BY id"
            ).fetchall()
        except BaseException:
            db.close()
            raise
        if rows:
            features = np.frombuffer(b"".join(r[3] for r in rows), np.float32)
            self._features = torch.from_numpy(features.reshape(len(rows), self.dim).copy())
            self._sq = self._features.square().sum(dim=1)
            self._codes = torch.tensor([self._code(r[1]) for r in rows], dtype=torch.int64)
            self._slots = [(r[0], r[2]) for r in rows]
            self._seen.update(
                self._dup_key(code, digest)
                for code, (_, digest) in zip(self._codes.tolist(), self._slots)
            )
            self._next_id = rows[-1][0] + 1
        self._db = db

    # -- state -----------------------------------------------------------------------

    def _code(self, key_id: str) -> int:
        return self._key_codes.setdefault(key_id, len(self._key_codes))

    def _dup_key(self, code: int, digest: bytes) -> Hashable:
        """What makes two stored queries exact re-sends of each other in this scope."""
        return digest if self.scope == "all" else (code, digest)

    def _statistic(self, code: int, features: torch.Tensor) -> float | None:
        """The mean distance of ``features`` (1, D) to its ``k`` nearest stored queries
        in scope, or None while fewer than ``k`` are stored."""
        n = len(self._slots)
        bank, sq = self._features[:n], self._sq[:n]
        if self.scope == "key":
            mine = self._codes[:n] == code
            bank, sq = bank[mine], sq[mine]
        if len(bank) < self.k:
            return None
        return float(_knn_mean(_squared_distances(features, bank, sq), self.k)[0])

    def _store(self, qid: int, code: int, digest: bytes, features: torch.Tensor) -> int | None:
        """Keep a query; returns the id of the query it evicted, if any."""
        n = len(self._slots)
        if n < self.max_entries:
            if n == len(self._features):
                grown = min(self.max_entries, max(1024, 2 * n))
                self._features = torch.cat([self._features, torch.zeros(grown - n, self.dim)])
                self._sq = torch.cat([self._sq, torch.zeros(grown - n)])
                self._codes = torch.cat([self._codes, torch.zeros(grown - n, dtype=torch.int64)])
            slot, evicted = n, None
            self._slots.append((qid, digest))
        else:
            slot = self._head
            self._head = (self._head + 1) % self.max_entries
            evicted, old_digest = self._slots[slot]
            old = self._dup_key(int(self._codes[slot]), old_digest)
            self._seen[old] -= 1
            if not self._seen[old]:
                del self._seen[old]
            self._slots[slot] = (qid, digest)
        self._features[slot] = features[0]
        self._sq[slot] = features[0].square().sum()
        self._codes[slot] = code
        self._seen[self._dup_key(code, digest)] += 1
        return evicted

    def _image_batch(self, image: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """The image as HxWxC uint8 and as a canonical batch of one."""
        arr = np.asarray(image)
        c, h, w = self.encoder.input_shape
        if arr.ndim == 2 and c == 1:
            arr = arr[..., None]
        if arr.dtype != np.uint8 or arr.shape != (h, w, c):
            raise ShapeError(
                f"the feature k-NN detector needs a uint8 {h}x{w}x{c} image, "
                f"got {arr.dtype} of shape {arr.shape}"
            )
        arr = np.ascontiguousarray(arr)
        return arr, torch.tensor(arr).permute(2, 0, 1)[None].float().div_(255.0)

    def distance(self, key_id: str, image: np.ndarray) -> float | None:
        """The query's mean distance to its ``k`` nearest stored queries in scope, or None
        while fewer than ``k`` are stored (stores nothing)."""
        _, x = self._image_batch(image)
        with self._lock:
            return self._statistic(self._code(key_id), self.encoder(x))

    def check(self, key_id: str, image: np.ndarray) -> bool:
        """Whether the query is close to ``k`` stored queries in its scope; then stores it.

        Args:
            key_id: the account that sent the query.
            image: uint8, HxWxC (or HxW for one channel) of the encoder's input size.

        Returns:
            ``True`` when the mean distance to its ``k`` nearest stored queries is below
            the threshold; ``False`` for an exact re-send (not stored again).

        Raises:
            ShapeError: the image is not uint8 of the encoder's input size.
        """
        arr, x = self._image_batch(image)
        digest = pixel_digest(arr)
        ts = time.time()
        with self._lock:
            code = self._code(key_id)
            if self._dup_key(code, digest) in self._seen:
                return False
            features = self.encoder(x)
            statistic = self._statistic(code, features)
            flagged = statistic is not None and statistic < self.threshold
            qid = self._next_id
            self._next_id += 1
            evicted = self._store(qid, code, digest, features)
            if self._db is not None:
                with self._db:
                    self._db.execute(
                        "INSERT INTO knn_queries VALUES (?, ?, ?, ?, ?)",
                        (qid, key_id, ts, digest, features[0].numpy().tobytes()),
                    )
                    if evicted is not None:
                        self._db.execute("DELETE FROM knn_queries WHERE id = ?", (evicted,))
        return flagged

    def reset(self) -> None:
        """Forget every stored query (in memory and in the database)."""
        with self._lock:
            self._features = torch.zeros(0, self.dim)
            self._sq = torch.zeros(0)
            self._codes = torch.zeros(0, dtype=torch.int64)
            self._slots.clear()
            self._head = 0
            self._seen.clear()
            self._next_id = 1
            if self._db is not None:
                with self._db:
                    self._db.execute("DELETE FROM knn_queries")

    def _size(self) -> int:
        return len(self._slots)
