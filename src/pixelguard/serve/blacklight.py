"""Blacklight: stateful detection of query-based black-box attacks.

Reference: H. Li, S. Shan, E. Wenger, J. Zhang, H. Zheng, B. Y. Zhao, "Blacklight:
Scalable Defense for Neural Networks against Query-Based Black-Box Attacks", USENIX
Security 2022.

Query-based attacks (Square, Sparse-RS, HopSkipJump, ...) send long runs of
near-duplicate images: each query differs from the last in a few pixels. Blacklight
fingerprints every query by the hashes of the windows of its quantised pixels and flags
a query that shares many of them with any one earlier query, from any account. Distinct
natural images share almost no windows.

Fingerprint of an image (uint8, HxW or HxWxC):

1. quantise: ``round(pixel / quantization)`` (step 50 gives 6 bins on 0..255), so that
   small perturbations (e.g. +-8/255) mostly leave the bins unchanged;
2. flatten (row-major, channels last) and slide a window of ``window`` values with
   ``stride``; the window is shrunk for small images (see :func:`effective_window`);
3. hash each window that is not constant, together with its offset (a 64-bit
   polynomial hash mixed by SplitMix64's finaliser, as a 63-bit integer), all windows
   at once in ``window`` vectorised steps: the paper's SHA-256 of each window took
   3.9 ms per 32x32 RGB query, called from Python once per window;
4. keep the ``top_n`` numerically largest hashes, a pseudo-random but deterministic
   sample that two near-duplicates sample alike.

Two departures from the paper, which hashes the window contents alone: the offset is
hashed too, and constant (background) windows are skipped. Without them, distinct MNIST
digits share their many background and stroke-edge windows: 132 of the first 2,000 MNIST
test images were flagged, against none with them.

A query is flagged when it shares at least ``threshold`` of its hashes with a single
earlier query (the threshold is scaled down in proportion when the image has fewer than
``top_n`` hashed windows; an image without any, e.g. a blank one, is never flagged).

A third: the bins are centred on multiples of the step, not started at them. With the
paper's ``pixel // 50``, white (255) sits 5 grey levels above the edge at 250, and an
adaptive attacker that adds noise of 0.05 to every query (DisguisedQueries) moved most
MNIST windows and was flagged at 10% of its queries, against 84% with centred bins; on
10,000 MNIST test images both flag none (benchmarks/bench_serve_attacks.py).

A fourth: a query is flagged when it is a near-duplicate of ``neighbours`` (4) earlier
queries, not of one. A user who saves a photo again and re-sends it sends a
near-duplicate; with the paper's rule 1,816 of 1,953 such JPEG re-sends of MNIST digits
were flagged, with 4 none (each photo sent 2 to 4 times). A query attack sends dozens
of near-duplicates of one image and is flagged at its 5th query instead of its 2nd.

A fifth: an exact re-send of a stored query (the same pixels) is neither
flagged nor stored again. Users re-send their photos; Blacklight as published flags the
second copy, since it matches itself. An identical query tells an attacker nothing new
about a deterministic model, so letting it through costs the defense nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from pixelguard.errors import ConfigError, ShapeError
from pixelguard.serve.state import DetectorState, open_state, pixel_digest

__all__ = ["BlacklightDetector", "effective_window", "fingerprint"]

_HASH = "polynomial64-splitmix"
"""The window hash, recorded with the state: state hashed otherwise is refused."""

_BEFORE = {"centred": "False", "hash": "sha256"}
"""The settings of state files written before they were recorded."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY, key_id TEXT NOT NULL, ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hashes (hash INTEGER NOT NULL, query_id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS hashes_query ON hashes (query_id);
CREATE TABLE IF NOT EXISTS digests (query_id INTEGER PRIMARY KEY, digest BLOB NOT NULL);
"""


def effective_window(n_values: int, window: int) -> int:
    """The window length used for an image of ``n_values`` values (``H * W * C``).

    ``window`` applies as given to images of at least ``16 * window`` values (28x28 grey
    and 32x32 RGB with the default 20). Smaller images get ``n_values // 8`` (at least
    2), so that one changed pixel spoils at most an eighth of the windows: 8 for 8x8
    grey digits (4 gave 16 false positives on the 1,797 scikit-learn digits, 8 gives 5,
    16 gives none but flags a Sparse-RS-like run only after 2 to 7 queries).
    """
    if n_values >= 16 * window:
        return window
    return max(2, min(window, n_values // 8, n_values))


def fingerprint(
    image: np.ndarray,
    *,
    quantization: int = 50,
    window: int = 20,
    stride: int = 1,
    top_n: int = 50,
    centred: bool = True,
) -> list[int]:
    """The image's Blacklight hashes: the ``top_n`` largest, in decreasing order.

    Args:
        image: uint8, HxW or HxWxC.
        quantization: the bin width on 0..255.
        window: the window length in quantised values (shrunk for small images).
        stride: the step between windows.
        top_n: how many hashes to keep.
        centred: bins centred on multiples of ``quantization`` (``round(pixel / q)``)
            instead of starting at them (``pixel // q``, the paper's): black and white
            pixels then sit half a bin from the nearest edge, instead of 5 grey levels
            from one (250 is an edge of the floored bins of width 50), so that noise of
            up to 0.05 per pixel, which leaves most windows of an MNIST query unchanged,
            no longer moves them.

    Raises:
        ShapeError: the image is not a non-empty 2-D or 3-D uint8 array.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or arr.size == 0:
        raise ShapeError(
            f"Blacklight needs a non-empty uint8 HxW or HxWxC image, "
            f"got {arr.dtype} of shape {arr.shape}"
        )
    if centred:
        flat = (arr.reshape(-1).astype(np.uint16) + quantization // 2) // quantization
        flat = flat.astype(np.uint8)
    else:
        flat = np.ascontiguousarray(arr.reshape(-1) // np.uint8(quantization))
    w = effective_window(flat.size, window)
    n = flat.size - w + 1
    values = flat.astype(np.uint64) + np.uint64(1)
    # A polynomial hash of every window at once, in w vectorised steps (modulo 2**64).
    code = np.zeros(n, dtype=np.uint64)
    for j in range(w):
        code = code * _MULTIPLIER + values[j : j + n]
    # Constant windows (plain background) carry no information about the image.
    changes = np.concatenate(([0], np.cumsum(flat[1:] != flat[:-1])))
    varied = changes[w - 1 :] != changes[:n]
    offsets = np.arange(n, dtype=np.uint64)
    picked = (varied & (offsets % np.uint64(stride) == 0)).nonzero()[0]
    hashes = _mix(code[picked] ^ (offsets[picked] * _OFFSET_MULTIPLIER)) >> np.uint64(1)
    if hashes.size > top_n:  # the top_n largest without sorting them all
        hashes = np.partition(hashes, hashes.size - top_n)[-top_n:]
    return sorted({int(h) for h in hashes}, reverse=True)  # 63-bit: SQLite's INTEGER


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_OFFSET_MULTIPLIER = np.uint64(0xD1B54A32D192ED03)
"""Odd 64-bit constants of the window hash: ``sum_j v_j * M**(w-1-j)`` modulo 2**64,
with the window's offset folded in, then mixed."""


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every bit of the result depends on every bit of ``x``, so
    the largest hashes are a pseudo-random sample of the windows."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class BlacklightDetector(DetectorState):
    """Flags queries that are near-duplicates of an earlier query (Li et al., 2022).

    Defaults (chosen for 28x28 grey and 32x32 RGB; measured on MNIST and 8x8 digits;
    ``neighbours=4`` and ``centred=True`` differ from the paper, see the module doc):
    ``quantization=50`` (6 bins), ``window=20`` (shrunk to ``H*W*C // 8`` for images
    under 320 values, e.g. 8 for 8x8 digits), ``stride=1``, ``top_n=50`` and
    ``threshold=25`` (half of the hashes). The state holds at most ``max_entries``
    queries, the oldest evicted first; with ``db_path`` it is also kept in SQLite (WAL)
    and loaded again at start, so a restart keeps it.

    Thread-safe: :meth:`check` may be called from several threads.

    Args:
        db_path: SQLite file for the state, or ``None`` for memory only.
        quantization: bin width on 0..255.
        window: window length in quantised values.
        stride: step between windows.
        top_n: hashes kept per query.
        threshold: shared hashes with one earlier query that flag a query.
        max_entries: queries kept; the oldest go first (about 5 KB each in memory:
            100,000 queries are about 500 MB).
        centred: quantise with bins centred on multiples of ``quantization`` (see
            :func:`fingerprint`).
        neighbours: earlier near-duplicates (stored queries that share ``threshold``
            hashes with it) that flag a query. 1 is the paper's rule, under which a
            photo sent again as a new JPEG is flagged (93% of such re-sends of MNIST
            digits); 4 lets a photo be sent 4 times, saved anew each time, and flags a
            query attack at its 5th query instead of its 2nd.

    Raises:
        ConfigError: a parameter is out of range, or ``db_path`` holds state made with
            other parameters.
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        quantization: int = 50,
        window: int = 20,
        stride: int = 1,
        top_n: int = 50,
        threshold: int = 25,
        max_entries: int = 100_000,
        centred: bool = True,
        neighbours: int = 4,
    ) -> None:
        for name, value, low in (
            ("quantization", quantization, 1),
            ("window", window, 1),
            ("stride", stride, 1),
            ("top_n", top_n, 1),
            ("threshold", threshold, 1),
            ("max_entries", max_entries, 1),
            ("neighbours", neighbours, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"Blacklight {name} must be an integer >= {low}, got {value!r}")
        if quantization > 255:
            raise ConfigError(f"Blacklight quantization must be <= 255, got {quantization}")
        if threshold > top_n:
            raise ConfigError(f"Blacklight threshold {threshold} exceeds top_n {top_n}")
        self.quantization = quantization
        self.centred = centred
        self.neighbours = neighbours
        self.window = window
        self.stride = stride
        self.top_n = top_n
        self.threshold = threshold
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # hash -> id of the stored query that has it, or a set of ids when several have
        # it (a set for each of the ~50 hashes of every query would triple the memory)
        self._index: dict[int, int | set[int]] = {}
        # query id -> (key id, time, hashes, pixel digest), oldest first
        self._queries: OrderedDict[int, tuple[str, float, tuple[int, ...], bytes]] = OrderedDict()
        # pixel digest -> id of the stored query with exactly these pixels
        self._digests: dict[bytes, int] = {}
        self._next_id = 1
        self._load(db_path)

    # -- persistence -----------------------------------------------------------------

    def _params(self) -> dict[str, str]:
        return {
            "hash": _HASH,
            "quantization": str(self.quantization),
            "centred": str(self.centred),
            "window": str(self.window),
            "stride": str(self.stride),
            "top_n": str(self.top_n),
        }

    def _open(self, path: Path) -> None:
        db = open_state(path, self._params(), "Blacklight", before=_BEFORE)
        try:
            db.executescript(_SCHEMA)
            # Keep only the newest max_entries queries.
            db.execute(
                "DELETE FROM queries WHERE id NOT IN "
                "(SELECT id FROM queries ORDER BY id DESC LIMIT ?)",
                (self.max_entries,),
            )
            for table in ("hashes", "digests"):
                db.execute(f"DELETE FROM {table} WHERE query_id NOT IN (SELECT id FROM queries)")
            db.commit()
            rows = db.execute("SELECT id, key_id, ts FROM queries ORDER BY id").fetchall()
            per_query: dict[int, list[int]] = {qid: [] for qid, _, _ in rows}
            for h, qid in db.execute("SELECT hash, query_id FROM hashes"):
                per_query[qid].append(h)
            digests = dict(db.execute("SELECT query_id, digest FROM digests"))
        except BaseException:
            db.close()
            raise
        for qid, key_id, ts in rows:
            self._store(qid, key_id, ts, tuple(per_query[qid]), bytes(digests.get(qid, b"")))
        self._next_id = rows[-1][0] + 1 if rows else 1
        self._db = db

    # -- state -----------------------------------------------------------------------

    def _store(
        self, qid: int, key_id: str, ts: float, hashes: tuple[int, ...], pixels: bytes
    ) -> None:
        self._queries[qid] = (key_id, ts, hashes, pixels)
        self._digests[pixels] = qid
        index = self._index
        for h in hashes:
            ids = index.get(h)
            if ids is None:
                index[h] = qid
            elif isinstance(ids, set):
                ids.add(qid)
            elif ids != qid:
                index[h] = {ids, qid}

    def _evict_oldest(self) -> int:
        qid, (_, _, hashes, pixels) = self._queries.popitem(last=False)
        if self._digests.get(pixels) == qid:
            del self._digests[pixels]
        index = self._index
        for h in hashes:
            ids = index.get(h)
            if isinstance(ids, set):
                ids.discard(qid)
                if len(ids) == 1:
                    index[h] = ids.pop()
            elif ids == qid:
                del index[h]
        return qid

    def fingerprint(self, image: np.ndarray) -> list[int]:
        """The image's top-N hashes under this detector's parameters."""
        return fingerprint(
            image,
            quantization=self.quantization,
            centred=self.centred,
            window=self.window,
            stride=self.stride,
            top_n=self.top_n,
        )

    def required_matches(self, n_hashes: int) -> int:
        """Shared hashes that flag a query with ``n_hashes`` hashes: ``threshold``, scaled
        down in proportion when the image has fewer than ``top_n`` hashed windows."""
        return max(1, min(self.threshold, math.ceil(self.threshold * n_hashes / self.top_n)))

    def max_matches(self, image: np.ndarray) -> int:
        """The most hashes the image shares with one stored query (stores nothing)."""
        hashes = self.fingerprint(image)
        with self._lock:
            return max(self._shared(hashes).values(), default=0)

    def _shared(self, hashes: list[int]) -> Counter[int]:
        """Stored query id -> how many of ``hashes`` it has (those with any)."""
        counts: Counter[int] = Counter()
        singles = []
        for h in hashes:
            ids = self._index.get(h)
            if isinstance(ids, set):
                counts.update(ids)
            elif ids is not None:
                singles.append(ids)
        counts.update(singles)
        return counts

    def check(self, key_id: str, image: np.ndarray) -> bool:
        """Whether the query is a near-duplicate of an earlier one; then records it.

        Args:
            key_id: the account that sent the query (stored for audit).
            image: uint8, HxW or HxWxC.

        Returns:
            ``True`` when at least ``neighbours`` stored queries each share at least
            :meth:`required_matches` of this image's hashes; ``False`` for an exact
            re-send of a stored query, which is not stored again.
        """
        pixels = pixel_digest(image)
        hashes = self.fingerprint(image)
        ts = time.time()
        with self._lock:
            if pixels in self._digests:
                return False
            required = self.required_matches(len(hashes))
            near = sum(n >= required for n in self._shared(hashes).values())
            flagged = near >= self.neighbours
            qid = self._next_id
            self._next_id += 1
            self._store(qid, key_id, ts, tuple(hashes), pixels)
            evicted = []
            while len(self._queries) > self.max_entries:
                evicted.append(self._evict_oldest())
            if self._db is not None:
                with self._db:
                    self._db.execute("INSERT INTO queries VALUES (?, ?, ?)", (qid, key_id, ts))
                    self._db.executemany(
                        "INSERT INTO hashes VALUES (?, ?)", [(h, qid) for h in hashes]
                    )
                    self._db.execute("INSERT INTO digests VALUES (?, ?)", (qid, pixels))
                    for old in evicted:
                        for table in ("hashes", "digests"):
                            self._db.execute(f"DELETE FROM {table} WHERE query_id = ?", (old,))
                        self._db.execute("DELETE FROM queries WHERE id = ?", (old,))
        return flagged

    def reset(self) -> None:
        """Forget every stored query (in memory and in the database)."""
        with self._lock:
            self._index.clear()
            self._queries.clear()
            self._digests.clear()
            self._next_id = 1
            if self._db is not None:
                with self._db:
                    for table in ("hashes", "digests", "queries"):
                        self._db.execute(f"DELETE FROM {table}")

    def _size(self) -> int:
        return len(self._queries)
