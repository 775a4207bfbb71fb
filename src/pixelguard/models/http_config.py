"""Configuration of a remote scoring endpoint: :class:`EndpointConfig` and its JSON paths.

An HTTP endpoint cannot be probed for its input shape or request format, so everything
the adapter needs is declared here, in a JSON or YAML file (see ``docs/endpoints.md``).
Header values may name environment variables as ``${NAME}``; they are resolved when the
config is built, kept out of ``repr`` and ``to_dict``, and never logged.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pixelguard.errors import ConfigError, require
from pixelguard.models.base import InputSpec, OutputKind

Encoding = Literal["json", "png"]
Method = Literal["POST", "PUT"]
PathToken = str | int

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")
_IDENTIFIER = re.compile(r"^[^.\[\]]+$")


@dataclass(frozen=True, kw_only=True)
class EndpointConfig:
    """How to send canonical images to a remote scoring endpoint and read its reply.

    Field names are the keys of a config file; ``from_file`` / ``from_dict`` build it and
    ``__post_init__`` validates it, raising :class:`ConfigError` that names the bad field.

    Args:
        url: the endpoint, ``http://`` or ``https://``.
        input_shape: ``(C, H, W)`` of the images the endpoint classifies (required).
        method: HTTP method of a scoring request.
        batch: send up to ``max_batch`` images per request (``request_field`` holds a
            list), or one image per request (``request_field`` holds the image).
        max_batch: the most images in one batched request.
        encoding: ``"json"`` (nested array of numbers, converted with ``layout``,
            ``scale``, ``mean``, ``std``, ``dtype``, ``flatten``) or ``"png"`` (base64 PNG
            of the uint8 image).
        layout: ``"nchw"`` (each image CHW) or ``"nhwc"`` (each image HWC), json only.
        scale: pixel scale, e.g. 255 for 0..255 input, json only.
        mean: per-channel mean subtracted after scaling, json only.
        std: per-channel std divided by after subtracting the mean, json only.
        dtype: ``"float32"``, ``"float64"`` or ``"uint8"`` (whole numbers), json only.
        flatten: send each image as one flat list, json only.
        request_field: where the image(s) go in the JSON body; dots nest, e.g.
            ``"inputs.image"``.
        image_key: wrap each image as ``{image_key: image}``, e.g. ``"b64"`` for the
            TF-Serving binary convention; None sends the image itself.
        extra_body: other fields of the JSON body, merged under the images.
        headers: HTTP headers; values may reference environment variables as
            ``${NAME}``.
        response_path: where the scores are in the reply, e.g. ``"predictions"``,
            ``"result.scores"``, ``"data[0].probs"``; ``""`` is the whole reply. For
            batched requests it points at the list of per-image results.
        top_k_fields: for a reply that lists only the top classes, as objects such as
            ``{"class": 3, "probability": 0.91}``: the names of the class field (an
            index, or a name from ``class_names``) and of the score field, e.g.
            ``["class", "probability"]``. The classes left out score 0. Needs
            ``num_classes`` or ``class_names``.
        output: ``"logits"``, ``"probabilities"`` or ``"labels"`` (the reply holds a
            class index, or a class name from ``class_names``); None detects scores
            from the first reply.
        class_names: names of the classes in index order, for endpoints that answer
            with a name.
        num_classes: number of classes; required for labels unless ``class_names``
            gives it, otherwise read from the first reply.
        concurrency: requests in flight at once.
        timeout_s: seconds to wait for one reply.
        max_retries: retries of a failed request (429, 5xx, connection error, timeout,
            malformed reply) after the first attempt.
        backoff_s: first wait between attempts; doubles each retry.
        backoff_max_s: the longest single wait; a ``Retry-After`` asking for more
            stops the run with :class:`ModelError` instead of sleeping.
        failed_requests_count: whether the server charges a failed request against the
            query budget (failed attempts then count toward ``max_images`` /
            ``max_requests``).
        cache: never send the same image twice; answer repeats from a local cache.
        cache_path: a ``.jsonl`` (appended per reply) or ``.npz`` (rewritten
            atomically after each call) file that keeps the cache across runs.
    """

    url: str
    input_shape: tuple[int, int, int]
    method: Method = "POST"
    batch: bool = False
    max_batch: int = 32
    encoding: Encoding = "json"
    layout: str = "nchw"
    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dtype: str = "float32"
    flatten: bool = False
    request_field: str = "instances"
    image_key: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    response_path: str = "predictions"
    top_k_fields: tuple[str, str] | None = None
    output: OutputKind | None = None
    class_names: tuple[str, ...] | None = None
    num_classes: int | None = None
    concurrency: int = 4
    timeout_s: float = 10.0
    max_retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 60.0
    failed_requests_count: bool = False
    cache: bool = True
    cache_path: str | None = None
    _resolved_headers: dict[str, str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _response_tokens: tuple[PathToken, ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._check_url()
        self._check_shape_and_encoding()
        self._check_numbers()
        self._check_body()
        self._check_output()
        set_ = object.__setattr__
        set_(self, "headers", dict(self.headers))
        set_(self, "_resolved_headers", _resolve_headers(self.headers))
        set_(self, "_response_tokens", parse_json_path(self.response_path, "response_path"))
        if self.cache_path is not None:
            if not self.cache:
                raise ConfigError("cache_path is set but cache is false; drop one of them")
            if Path(self.cache_path).suffix not in (".jsonl", ".npz"):
                raise ConfigError(f"cache_path must end in .jsonl or .npz, got {self.cache_path!r}")

    def _check_url(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ConfigError("url is required: the endpoint's http:// or https:// address")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"url must be an http:// or https:// address, got scheme {parts.scheme!r}"
            )
        if self.method not in get_args(Method):
            raise ConfigError(f"method must be one of {get_args(Method)}, got {self.method!r}")

    def _check_shape_and_encoding(self) -> None:
        shape = self.input_shape
        if (
            not isinstance(shape, (tuple, list))
            or len(shape) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        ):
            raise ConfigError(f"input_shape must be three positive integers (C, H, W), got {shape}")
        object.__setattr__(self, "input_shape", tuple(shape))
        if self.encoding not in get_args(Encoding):
            raise ConfigError(
                f"encoding must be one of {get_args(Encoding)}, got {self.encoding!r}"
            )
        if self.encoding == "png" and shape[0] not in (1, 3, 4):
            raise ConfigError(f"input_shape has {shape[0]} channels; png encoding needs 1, 3 or 4")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                try:
                    object.__setattr__(self, name, tuple(float(v) for v in value))
                except (TypeError, ValueError):
                    raise ConfigError(f"{name} must be a list of numbers, got {value!r}") from None
        try:
            spec = self.input_spec
            spec._channel_stats(shape[0])
        except ConfigError as exc:
            raise ConfigError(
                f"json conversion fields (layout/scale/mean/std/dtype): {exc}"
            ) from None
        if spec.dtype == "float16":
            raise ConfigError("dtype must be float32, float64 or uint8 for a JSON endpoint")

    def _check_numbers(self) -> None:
        for name in ("batch", "flatten", "failed_requests_count", "cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, low in (("max_batch", 1), ("concurrency", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("timeout_s", "backoff_s", "backoff_max_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.backoff_max_s < self.backoff_s:
            raise ConfigError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_s ({self.backoff_s})"
            )

    def _check_body(self) -> None:
        if not isinstance(self.request_field, str) or not all(
            _IDENTIFIER.match(part) for part in self.request_field.split(".")
        ):
            raise ConfigError(
                f"request_field must be dot-separated names like 'inputs.image', "
                f"got {self.request_field!r}"
            )
        if self.image_key is not None and (
            not isinstance(self.image_key, str) or not self.image_key
        ):
            raise ConfigError(f"image_key must be a non-empty string, got {self.image_key!r}")
        if not isinstance(self.extra_body, Mapping):
            raise ConfigError(f"extra_body must be a mapping, got {type(self.extra_body).__name__}")
        try:
            json.dumps(self.extra_body)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"extra_body must be JSON-serialisable: {exc}") from None
        object.__setattr__(self, "extra_body", copy.deepcopy(dict(self.extra_body)))
        node: Any = self.extra_body
        for part in self.request_field.split("."):
            if not isinstance(node, Mapping):
                raise ConfigError(
                    f"extra_body has a non-object value on the request_field path "
                    f"{self.request_field!r}"
                )
            if part not in node:
                break
            node = node[part]
        else:
            raise ConfigError(
                f"extra_body already has a value at request_field {self.request_field!r}"
            )
        if not isinstance(self.headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise ConfigError("headers must map header names to string values")

    def _check_output(self) -> None:
        if self.output is not None:
            try:
                object.__setattr__(self, "output", OutputKind(self.output))
            except ValueError:
                kinds = ", ".join(kind.value for kind in OutputKind)
                raise ConfigError(f"output must be one of {kinds}, got {self.output!r}") from None
        if self.class_names is not None:
            names = tuple(self.class_names)
            if len(names) < 2 or not all(isinstance(n, str) for n in names):
                raise ConfigError("class_names must be a list of at least two strings")
            if len(set(names)) != len(names):
                raise ConfigError("class_names has duplicate names")
            object.__setattr__(self, "class_names", names)
            if self.num_classes is None:
                object.__setattr__(self, "num_classes", len(names))
            elif self.num_classes != len(names):
                raise ConfigError(
                    f"num_classes is {self.num_classes} but class_names has {len(names)} names"
                )
        if self.num_classes is not None and (
            not isinstance(self.num_classes, int)
            or isinstance(self.num_classes, bool)
            or self.num_classes < 2
        ):
            raise ConfigError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        if self.top_k_fields is not None:
            fields = tuple(self.top_k_fields)
            if len(fields) != 2 or not all(isinstance(f, str) and f for f in fields):
                raise ConfigError(
                    "top_k_fields must be two field names, the class and its score, e.g. "
                    f'["class", "probability"], got {self.top_k_fields!r}'
                )
            object.__setattr__(self, "top_k_fields", fields)
            if self.num_classes is None:
                raise ConfigError(
                    "num_classes (or class_names) is required with top_k_fields: a top-k "
                    "reply does not say how many classes there are"
                )
            if self.output is OutputKind.LABELS:
                raise ConfigError("top_k_fields reads scores; it cannot go with output 'labels'")
        if self.output is OutputKind.LABELS and self.num_classes is None:
            raise ConfigError(
                "num_classes (or class_names) is required when output is 'labels': "
                "a label reply does not say how many classes there are"
            )

    @property
    def input_spec(self) -> InputSpec:
        """The conversion applied to canonical images for the ``json`` encoding."""
        return InputSpec(
            layout=self.layout,
            scale=float(self.scale),
            mean=self.mean,
            std=self.std,
            dtype=self.dtype,
            flatten=self.flatten,
        )

    @property
    def resolved_headers(self) -> dict[str, str]:
        """Headers with ``${NAME}`` references replaced from the environment (secret)."""
        return dict(self._resolved_headers)

    @property
    def response_tokens(self) -> tuple[PathToken, ...]:
        """``response_path`` parsed into keys (str) and list indices (int)."""
        return self._response_tokens

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys a config file may use."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndpointConfig:
        """Build a config from a mapping, rejecting unknown keys.

        Raises:
            ConfigError: an unknown key, a missing required key, or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"an endpoint config must be a mapping, got {type(data).__name__}")
        known = cls.field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown endpoint config field(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(known)}"
            )
        for name in ("url", "input_shape"):
            if data.get(name) is None:
                raise ConfigError(
                    f"{name} is required in an endpoint config (see docs/endpoints.md)"
                )
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | Path) -> EndpointConfig:
        """Read a ``.json``, ``.yaml`` or ``.yml`` endpoint config.

        Raises:
            ConfigError: the file is missing, unreadable, or holds an invalid config.
            MissingDependencyError: a YAML file and PyYAML is not installed.
        """
        return cls.from_dict(read_config_file(path))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data; header values stay as written (``${NAME}``)."""
        out: dict[str, Any] = {}
        for name in self.field_names():
            value = getattr(self, name)
            if isinstance(value, OutputKind):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = copy.deepcopy(value)
        return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Load the mapping in a JSON or YAML config file.

    Raises:
        ConfigError: the file is missing, of an unknown type, malformed, or not a mapping.
        MissingDependencyError: a YAML file and PyYAML is not installed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"endpoint config must be a .json, .yaml or .yml file, got {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read endpoint config {path}: {exc.strerror}") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    else:
        yaml: Any = require("yaml", "yaml", "YAML endpoint configs")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config fields")
    return data


def parse_json_path(path: str, what: str = "path") -> tuple[PathToken, ...]:
    """Parse a simple JSON path: dotted keys and ``[int]`` indices.

    ``"data[0].probs"`` becomes ``("data", 0, "probs")``; an optional leading ``$`` is
    accepted and ``""`` is the whole document.

    Raises:
        ConfigError: the path has other syntax.
    """
    if not isinstance(path, str):
        raise ConfigError(f"{what} must be a string, got {type(path).__name__}")
    text = path[1:] if path.startswith("$") else path
    tokens: list[PathToken] = []
    pos = 0
    while pos < len(text):
        match = _PATH_TOKEN.match(text, pos)
        if match is None or (match.group(1) is not None and pos > 0 and text[pos] != "."):
            raise ConfigError(
                f"{what} {path!r} is not a simple path like 'result.scores' or 'data[0].probs'"
            )
        if match.group(1) is not None:
            tokens.append(match.group(1))
        else:
            tokens.append(int(match.group(2)))
        pos = match.end()
    return tuple(tokens)


def format_json_path(tokens: tuple[PathToken, ...]) -> str:
    """The inverse of :func:`parse_json_path`, for messages (``""`` is ``$``)."""
    text = ""
    for token in tokens:
        text += f"[{token}]" if isinstance(token, int) else (f".{token}" if text else token)
    return text or "$"


def _resolve_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Replace ``${NAME}`` in header values from the environment; never echo values."""
    resolved = {}
    for name, value in headers.items():

        def lookup(match: re.Match[str], header: str = name) -> str:
            variable = match.group(1)
            if variable not in os.environ:
                raise ConfigError(
                    f"header {header!r} references environment variable ${{{variable}}}, "
                    f"which is not set"
                )
            return os.environ[variable]

        resolved[name] = _ENV_REF.sub(lookup, value)
    return resolved
