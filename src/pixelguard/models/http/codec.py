"""Request encoding and reply decoding for a remote scoring endpoint.

:class:`Codec` turns canonical images (float32, [0, 1], NCHW) into what the endpoint
wants (a nested JSON array in its layout and scale, or a base64 PNG) inside the request
body the config describes, keys each converted image for the cache, and reads score
rows (or labels, as one-hot rows) back from a reply, raising :class:`MalformedReply`
when the reply does not hold what the config says it holds.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import math
import re
import secrets
import threading
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from pixelguard.errors import ConfigError
from pixelguard.models.base import OutputKind
from pixelguard.models.http_config import EndpointConfig, PathToken, format_json_path

_EXCERPT_CHARS = 200


class MalformedReply(Exception):
    """A 2xx reply that does not hold what the config says it holds."""


class Codec:
    """Encode requests and decode replies as ``config`` describes.

    ``num_classes`` is the config's, or learnt from the first reply with scores
    (a cache may also set it); every later reply must have as many scores per image.
    """

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.num_classes: int | None = config.num_classes
        self._lock = threading.Lock()
        token = secrets.token_hex(8)
        self._slot = "@@pixelguard-" + token + "-{}@@"
        self._slot_pattern = re.compile(r'"@@pixelguard-' + token + r'-(\d+)@@"')

    # --- converting images -------------------------------------------------------------

    def convert(self, x: torch.Tensor) -> np.ndarray:
        """Canonical batch -> per-image arrays exactly as they will be sent.

        Shape:
            x: (N, C, H, W) float32 in [0, 1]. Returns (N, H, W, C) uint8 for png, the
            json conversion (N, ...) otherwise.
        """
        if self.config.encoding == "png":
            with torch.no_grad():
                pixels = (x.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
            return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())
        return self.config.input_spec.to_model_numpy(x)

    def key(self, image: np.ndarray) -> str:
        """SHA-256 of one converted image (its values, dtype and shape)."""
        digest = hashlib.sha256(f"{self.config.encoding}:{image.dtype}:{image.shape}:".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()

    def body(self, images: Sequence[np.ndarray]) -> bytes:
        """The request body carrying ``images`` (converted by :meth:`convert`)."""
        fragments = [self._fragment(image) for image in images]
        slots = [self._slot.format(i) for i in range(len(fragments))]
        body = copy.deepcopy(self.config.extra_body)
        *parents, leaf = self.config.request_field.split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = slots if self.config.batch else slots[0]
        template = json.dumps(body, separators=(",", ":"))
        return self._slot_pattern.sub(lambda m: fragments[int(m.group(1))], template).encode()

    def _fragment(self, image: np.ndarray) -> str:
        """The JSON text of one image in a request body."""
        if self.config.encoding == "png":
            text = json.dumps(base64.b64encode(_png_bytes(image)).decode("ascii"))
        else:
            text = _json_array(image)
        if self.config.image_key is None:
            return text
        return "{" + json.dumps(self.config.image_key) + ":" + text + "}"

    # --- reading replies ------------------------------------------------------------------

    def decode(self, payload: bytes, n: int, output: OutputKind | None) -> np.ndarray:
        """Read ``n`` score rows from a reply body (one-hot rows when ``output`` is labels).

        Raises:
            MalformedReply: not JSON, path missing, wrong length, non-numeric, NaN.
        """
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise MalformedReply(f"not JSON (starts with {excerpt(payload)!r})") from None
        tokens = self.config.response_tokens
        value = _follow(doc, tokens)
        where = format_json_path(tokens)
        if self.config.batch:
            if not isinstance(value, list) or len(value) != n:
                got = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
                raise MalformedReply(
                    f"expected a list of {n} per-image results at {where}, got {got}"
                )
            items = [(item, f"{where}[{i}]") for i, item in enumerate(value)]
        else:
            items = [(value, where)]
        if output is OutputKind.LABELS:
            k = self.num_classes
            if k is None:
                raise ConfigError(
                    "num_classes (or class_names) is required to read labels from the endpoint"
                )
            return np.stack([self._one_hot(item, at, k) for item, at in items])
        rows = [self._scores(item, at) for item, at in items]
        with self._lock:
            if self.num_classes is None:
                self.num_classes = len(rows[0])
            for row, (_, at) in zip(rows, items, strict=True):
                if len(row) != self.num_classes:
                    raise MalformedReply(
                        f"expected {self.num_classes} scores per image at {at}, got {len(row)}"
                    )
        return np.stack(rows)

    def _scores(self, item: object, where: str) -> np.ndarray:
        if self.config.top_k_fields is not None:
            return self._top_k(item, where)
        if (
            not self.config.batch
            and isinstance(item, list)
            and len(item) == 1
            and isinstance(item[0], list)
        ):
            item, where = item[0], f"{where}[0]"
        if not isinstance(item, list):
            raise MalformedReply(f"expected a list of scores at {where}, got {_kind(item)}")
        for j, value in enumerate(item):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise MalformedReply(f"non-numeric score {_kind(value)} at {where}[{j}]")
            if not math.isfinite(value):
                raise MalformedReply(f"non-finite score {value} at {where}[{j}]")
        if len(item) < 2:
            raise MalformedReply(f"expected at least 2 scores at {where}, got {len(item)}")
        return np.asarray(item, dtype=np.float32)

    def _top_k(self, item: object, where: str) -> np.ndarray:
        """A full score row from a list of ``{class: ..., score: ...}`` objects; the
        classes left out score 0."""
        class_field, score_field = self.config.top_k_fields or ("", "")
        k = self.num_classes or 0
        if not isinstance(item, list) or not item:
            raise MalformedReply(
                f"expected a non-empty list of top classes at {where}, got {_kind(item)}"
            )
        row = np.zeros(k, dtype=np.float32)
        for j, entry in enumerate(item):
            at = f"{where}[{j}]"
            if not isinstance(entry, dict) or class_field not in entry or score_field not in entry:
                raise MalformedReply(
                    f"expected an object with {class_field!r} and {score_field!r} at {at}, "
                    f"got {excerpt(json.dumps(entry).encode())!r}"
                )
            label = self._one_hot(entry[class_field], f"{at}.{class_field}", k).argmax()
            score = entry[score_field]
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                raise MalformedReply(f"non-numeric score {_kind(score)} at {at}.{score_field}")
            if not math.isfinite(score):
                raise MalformedReply(f"non-finite score {score} at {at}.{score_field}")
            row[label] = score
        return row

    def _one_hot(self, item: object, where: str, k: int) -> np.ndarray:
        names = self.config.class_names
        if isinstance(item, str) and names is not None and item in names:
            label = names.index(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < k:
            label = item
        else:
            expected = "a class index" + (" or one of class_names" if names else "")
            raise MalformedReply(f"expected {expected} at {where}, got {item!r:.60}")
        row = np.zeros(k, dtype=np.float32)
        row[label] = 1.0
        return row


def excerpt(data: bytes) -> str:
    """The start of a reply body on one line, for messages."""
    text = data.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


def _follow(doc: object, tokens: tuple[PathToken, ...]) -> object:
    """The value at ``tokens`` in ``doc``, or a :class:`MalformedReply` saying where not."""
    node = doc
    for depth, token in enumerate(tokens):
        here = format_json_path(tokens[:depth])
        if isinstance(token, int):
            if not isinstance(node, list):
                raise MalformedReply(f"expected a list at {here}, got {_kind(node)}")
            if not -len(node) <= token < len(node):
                raise MalformedReply(f"index [{token}] out of range at {here} (length {len(node)})")
        elif not isinstance(node, dict):
            raise MalformedReply(f"expected an object at {here}, got {_kind(node)}")
        elif token not in node:
            keys = ", ".join(list(map(str, node))[:8]) or "none"
            raise MalformedReply(f"no key {token!r} in the object at {here} (keys: {keys})")
        node = node[token]  # type: ignore[index]
    return node


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _json_array(array: np.ndarray) -> str:
    """Nested JSON array text of ``array`` with the shortest exact number strings."""
    text = array.astype(str)

    def nest(a: np.ndarray) -> str:
        if a.ndim == 1:
            return "[" + ",".join(a.tolist()) + "]"
        return "[" + ",".join(nest(sub) for sub in a) + "]"

    return nest(text)


PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNGs sent: lossless at every level, and at 768 x 768 a photo encodes
in about a quarter of the time of PIL's default 6 for files some 17% larger; an attack
sends thousands, so encoding time is what counts."""


def _png_bytes(image: np.ndarray) -> bytes:
    """PNG of one uint8 image, at :data:`PNG_COMPRESS_LEVEL`.

    Shape:
        image: (H, W, C) uint8 with C in (1, 3, 4).
    """
    channels = image.shape[2]
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
