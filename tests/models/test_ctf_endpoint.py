"""The DEF CON 31 AI Village CTF pixel challenge, end to end against a server on 127.0.0.1.

The CTF endpoint took a full-size photo (768x768 RGB) as a base64 PNG in JSON,
``{"data": "<base64>"}``, resized it itself to its MobileNetV2's 224x224 input and
answered with the softmax, ``{"output": [[p0, ..., p999]]}``
(``examples/endpoint-ctf-resize.json``). The server here does the same with PIL for a
small model: submitted images are 3x96x96, the model sees 3x32x32. Declaring the
submitted shape as the endpoint's ``input_shape`` makes the attacks search and count
pixels in the image sent, so "k pixels" are k pixels of the submitted PNG.

The model is made to be fooled by a few pixels, as a trained network is: its features
are each colour channel's strongest positive and negative response to a Laplacian (a dot
against its surroundings) of the resized image, and its head gives a planted class (7)
the lead only when several features rise together. The resize dilutes a dot about
ninefold, so one pixel cannot do it and ten random corner pixels can. The smooth test
images give almost no response: every one is class 0.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import pixelguard
from pixelguard.attacks import AttackResult, create_attack
from pixelguard.cli.app import app
from pixelguard.models.base import Classifier
from pixelguard.models.http import HttpClassifier
from pixelguard.testing import check_attack_result

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "endpoint-ctf-resize.json"
SUBMITTED = (3, 96, 96)
MODEL_SHAPE = (3, 32, 32)
CLASSES = 10
CLEAN_CLASS, PLANTED = 0, 7
MAX_BODY = 1 << 20
"""Largest request body the server reads (a 96x96 PNG in base64 is far smaller)."""


class DotDetector(nn.Module):
    """(N, 3, 32, 32) -> (N, 10) logits from max-pooled Laplacian responses."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.head = nn.Linear(2 * MODEL_SHAPE[0], CLASSES)
        with torch.no_grad():
            self.head.weight.copy_(0.02 * torch.randn(CLASSES, 6, generator=generator))
            self.head.bias.copy_(0.1 * torch.randn(CLASSES, generator=generator))
            self.head.bias[CLEAN_CLASS] = self.head.bias.max() + 1.0
            # clean images respond about 0.45 in all, the best single dot 1.5 after the resize,
            # so the planted class needs 1.7: two or three well-placed pixels
            self.head.weight[PLANTED] = 10.0
            self.head.bias[PLANTED] = self.head.bias[CLEAN_CLASS] - 17.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.pad(x, (1, 1, 1, 1), mode="replicate")
        neighbours = p[:, :, :-2, 1:-1] + p[:, :, 2:, 1:-1] + p[:, :, 1:-1, :-2] + p[:, :, 1:-1, 2:]
        response = (4 * x - neighbours).flatten(2)
        features = torch.cat([response.amax(dim=2), (-response).amax(dim=2)], dim=1).relu()
        return self.head(features)


# --- the CTF server ----------------------------------------------------------------------


def _png_base64(image: torch.Tensor) -> str:
    """One canonical (3, H, W) image as the base64 PNG a CTF player would send."""
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pil_resize(image: Image.Image) -> torch.Tensor:
    """What the server feeds its model: PIL's bilinear resize to 32x32, as (3, 32, 32)."""
    small = image.convert("RGB").resize(MODEL_SHAPE[:0:-1], Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)


class CtfServer:
    """``POST /score`` with ``{"data": "<base64 PNG>"}`` -> ``{"output": [[p0, ..., p9]]}``."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.lock = threading.Lock()
        self.requests = 0
        self.sizes: set[tuple[int, int]] = set()
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.http.daemon_threads = True
        self.http.ctf = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/score"
        self.thread = threading.Thread(
            target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def score(self, body: dict[str, Any]) -> dict[str, Any]:
        image = Image.open(io.BytesIO(base64.b64decode(body["data"], validate=True)))
        if image.format != "PNG":
            raise ValueError(f"expected a PNG, got {image.format}")
        with self.lock:
            self.requests += 1
            self.sizes.add(image.size)
            with torch.no_grad():
                probs = torch.softmax(self.net(pil_resize(image).unsqueeze(0)), dim=1)
        return {"output": probs.tolist()}

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # seconds a connection may sit idle: no handler thread outlives the test

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        ctf: CtfServer = self.server.ctf  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length", 0))
        if self.path != "/score" or not 0 < length <= MAX_BODY:
            self._answer(404 if self.path != "/score" else 413, {"error": "no"})
            return
        try:
            reply = ctf.score(json.loads(self.rfile.read(length)))
        except (ValueError, KeyError, OSError) as exc:
            self._answer(400, {"error": str(exc)})
            return
        self._answer(200, reply)

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        return


def ask_server(url: str, image: torch.Tensor) -> int:
    """The server's class for ``image``, by a fresh request of our own (no pixelguard code,
    no cache, no proxy)."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"data": _png_base64(image)}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as reply:
        return int(np.argmax(json.loads(reply.read())["output"][0]))


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return DotDetector().eval()


@pytest.fixture(scope="module")
def server(net: nn.Module) -> Iterator[CtfServer]:
    with pytest.MonkeyPatch.context() as patch:
        for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
            patch.delenv(var, raising=False)
        ctf = CtfServer(net)
        ctf.thread.start()
        try:
            yield ctf
        finally:
            ctf.stop()


@pytest.fixture(scope="module")
def endpoint_config(server: CtfServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example config, pointed at the local server and its small submitted size."""
    config = json.loads(EXAMPLE.read_text())
    config.update(
        url="http://127.0.0.1:1/elsewhere",  # replaced by the URL given to load_model
        input_shape=list(SUBMITTED),
        num_classes=CLASSES,
        timeout_s=10,
        max_retries=1,
        backoff_s=0.01,
    )
    del config["cache_path"]  # answers are cached in memory only
    path = tmp_path_factory.mktemp("ctf") / "endpoint.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two smooth submitted-size images (3x3 colour fields upsampled), on the uint8 grid."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 3, 3, generator=generator)
    fine = F.interpolate(coarse, size=SUBMITTED[1:], mode="bilinear", align_corners=False)
    return (fine * 255).round() / 255


def _endpoint(server: CtfServer, config: Path) -> HttpClassifier:
    model = pixelguard.load_model(server.url, http_config=config)
    assert isinstance(model, HttpClassifier)
    return model


def wire_pixels_changed(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Pixels changed per image in the PNGs sent (uint8), counted at submitted resolution."""
    sent = (x * 255).round().to(torch.uint8)
    sent_adv = (x_adv * 255).round().to(torch.uint8)
    return (sent != sent_adv).any(dim=1).flatten(1).sum(dim=1)


def check_submitted_pixels(result: AttackResult, x: torch.Tensor, k: int) -> None:
    """The adversarial images are submitted-size, in [0, 1], and at most k pixels away."""
    assert tuple(result.x_adv.shape) == (x.shape[0], *SUBMITTED)
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    assert int(result.l0_pixels.max()) <= k
    assert int(wire_pixels_changed(x, result.x_adv).max()) <= k


# --- the endpoint ------------------------------------------------------------------------


def test_the_example_config_describes_the_ctf_endpoint() -> None:
    from pixelguard.models.http import EndpointConfig

    config = EndpointConfig.from_file(EXAMPLE)
    assert config.input_shape == (3, 768, 768) and config.num_classes == 1000
    assert config.encoding == "png" and config.request_field == "data"
    assert config.response_path == "output" and not config.batch


def test_the_adapter_takes_the_submitted_size(server, endpoint_config, images) -> None:
    model = _endpoint(server, endpoint_config)
    assert model.input_shape == SUBMITTED and model.num_classes == CLASSES
    labels = model.predict(images).argmax(dim=1)
    assert labels.tolist() == [CLEAN_CLASS] * 2
    assert [ask_server(server.url, image) for image in images] == labels.tolist()
    assert server.sizes == {SUBMITTED[:0:-1]}  # every request carried a 96x96 PNG


@pytest.mark.parametrize(
    ("name", "settings", "k"),
    [
        ("sparse-rs", {"pixels": 10, "steps": 200}, 10),
        ("min-pixels", {"max_pixels": 20, "stage_steps": 40, "budget": 400}, 20),
    ],
)
def test_attacks_through_the_ctf_endpoint(
    name: str, settings: dict[str, Any], k: int, server, endpoint_config, images
) -> None:
    model = _endpoint(server, endpoint_config)
    y = model.predict(images).argmax(dim=1)
    sent_before = server.requests
    result = create_attack(name, seed=0, **settings).run(model, images, y)
    check_submitted_pixels(result, images, k)
    check_attack_result(result, model, images, max_pixels=k)
    assert bool(result.success.any()), f"{name} fooled no image through the endpoint"
    for i in result.success.nonzero().flatten().tolist():  # the server agrees, asked afresh
        assert ask_server(server.url, result.x_adv[i]) == int(result.pred_after[i]) != int(y[i])
    # Every query went over the wire or was a repeat answered from the cache.
    sent = server.requests - sent_before
    assert 0 < sent <= int(result.queries.sum()) + 2
    assert server.sizes == {SUBMITTED[:0:-1]}


def test_the_ctf_run_from_the_command_line(server, endpoint_config, images, tmp_path) -> None:
    """``pixelguard attack`` against the endpoint, the target given by a name from a file."""
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"class {i}" for i in range(7)) + "\nGranny Smith\nfig\nlemon\n")
    np.savez(tmp_path / "photos.npz", x=images.numpy(), y=np.zeros(2, dtype=np.int64))
    args = [
        "attack",
        "--model",
        server.url,
        "--http-config",
        str(endpoint_config),
        "--data",
        str(tmp_path / "photos.npz"),
        "--class-names",
        str(names),
        "--pixels",
        "10",
        "--budget",
        "200",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    result = CliRunner().invoke(app, [*args, "--target", "granny smith"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert report["attack"]["target"] == PLANTED and report["n_attacked"] == 2
    assert report["model"]["input_shape"] == list(SUBMITTED)
    assert report["wire"]["requests_sent"] > 0
    fooled = [row for row in report["images"] if row["success"]]
    assert fooled and all(row["pixels_changed"] <= 10 for row in report["images"])
    adversarial = np.load(tmp_path / "run" / "adversarial.npz")
    for row, x_adv in zip(report["images"], adversarial["x_adv"], strict=True):
        if row["success"]:
            assert ask_server(server.url, torch.from_numpy(x_adv)) == PLANTED
    refused = CliRunner().invoke(app, [*args, "--target", "granny"])
    assert refused.exit_code == 2 and "7 'Granny Smith'" in refused.stderr


# --- the same, with pixelguard doing the resize ------------------------------------------


@pytest.fixture(scope="module")
def local(net: nn.Module) -> Classifier:
    """The same model, resized by pixelguard: submitted images 3x96x96 in, 32x32 to the net."""
    return pixelguard.load_model(
        net, input_shape=MODEL_SHAPE, output="logits", submitted_shape=SUBMITTED
    )


def test_the_local_resize_is_the_servers(local, images) -> None:
    assert local.input_shape == SUBMITTED
    mine = local.resize(images)  # type: ignore[attr-defined]
    for image, resized in zip(images, mine, strict=True):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        theirs = pil_resize(Image.fromarray(pixels))
        assert float((theirs - resized).abs().max()) <= 1.5 / 255
    assert local.predict(images).argmax(dim=1).tolist() == [CLEAN_CLASS] * 2


@pytest.mark.parametrize(
    ("name", "settings", "k"),
    [
        ("sparse-rs", {"pixels": 10, "steps": 200}, 10),
        ("pixel-de", {"pixels": 10, "population": 20, "generations": 10}, 10),
        ("min-pixels", {"max_pixels": 20, "stage_steps": 40, "budget": 400}, 20),
    ],
)
def test_attacks_on_the_locally_resized_model(name, settings, k, local, images) -> None:
    y = local.predict(images).argmax(dim=1)
    result = create_attack(name, seed=0, **settings).run(local, images, y)
    check_submitted_pixels(result, images, k)
    check_attack_result(result, local, images, max_pixels=k)
    if name != "pixel-de":  # differential evolution's continuous colours need more queries
        assert bool(result.success.any())
    fooled = result.success
    assert bool((local.predict(result.x_adv[fooled]).argmax(dim=1) != y[fooled]).all())
