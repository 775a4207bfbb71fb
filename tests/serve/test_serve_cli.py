"""``pixelguard serve`` on the command line: what it refuses before it starts serving."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from one_line_errors import assert_one_line_error
from pixelguard.cli.app import app


def _serve(*args: str):
    return CliRunner().invoke(app, ["serve", "--model", "model.onnx", "--port", "18765", *args])


def test_serve_without_keys_or_no_auth_exits_2_with_one_line() -> None:
    result = _serve()
    assert result.exit_code == 2
    assert_one_line_error(result, "--keys", "--no-auth")


def test_serve_with_keys_and_no_auth_exits_2(tmp_path) -> None:
    result = _serve("--keys", str(tmp_path / "keys.toml"), "--no-auth")
    assert result.exit_code == 2
    assert_one_line_error(result, "exclude each other")


@pytest.mark.parametrize(
    "args",
    [
        ["--max-key-failures", "0"],
        ["--stateful", "blacklight", "--blacklight-neighbours", "0"],
        ["--blacklight-neighbours", "2"],  # without --stateful blacklight
        ["--request-timeout", "0"],
        ["--stateful", "knn", "--knn-threshold", "5"],
        ["--reveal", "topk:0"],
    ],
)
def test_serve_bad_guard_settings_exit_2(tmp_path, args: list[str]) -> None:
    result = _serve("--keys", str(tmp_path / "keys.toml"), *args)
    assert result.exit_code == 2
    assert_one_line_error(result, args[-2])


def test_serve_without_fastapi_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = _serve("--no-auth")
    assert result.exit_code == 2
    assert_one_line_error(result, "pixelguard[serve]")


def test_serve_help_lists_the_server_options() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--keys",
        "--no-auth",
        "--reveal",
        "--on-detect",
        "--stateful",
        "--quota",
        "--max-key-failures",
        "--knn-threshold",
    ):
        assert option in result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_over_http(tmp_path, digits_model, digits) -> None:
    """The command starts a server that answers a key's query, then stops on SIGTERM."""
    torch.save(digits_model.module, tmp_path / "digits.pt")
    (tmp_path / "factory.py").write_text(
        "from pathlib import Path\n\nimport torch\n\n\ndef make_model():\n"
        "    return torch.load(Path(__file__).with_name('digits.pt'), weights_only=False)\n"
    )
    (tmp_path / "keys.toml").write_text('[keys]\nalice = "k1"\n')
    port = _free_port()
    command = [sys.executable, "-m", "pixelguard.cli", "serve", "--model"]
    command += [f"{tmp_path / 'factory.py'}:make_model", "--input-shape", "1,8,8"]
    command += ["--keys", str(tmp_path / "keys.toml"), "--port", str(port)]
    command += ["--reveal", "topk:2", "--audit", str(tmp_path / "audit.jsonl")]
    pixels = np.round(digits[0][1500, 0].numpy() * 255).astype(np.uint8)
    expected = int(
        digits_model.predict(torch.from_numpy(pixels / 255.0).float()[None, None]).argmax()
    )
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode()}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        answer = httpx.post(f"{url}/v1/classify", json=body, headers={"X-API-Key": "k1"})
        assert answer.status_code == 200
        (prediction,) = answer.json()["predictions"]
        assert prediction["label"] == expected and len(prediction["top_k"]) == 2
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode()
    assert "serving" in output
    assert json.loads((tmp_path / "audit.jsonl").read_text())["key_id"] == "alice"


def test_serve_knn_without_a_penultimate_layer_exits_2(tmp_path) -> None:
    """--stateful knn needs an nn.Linear to read features from, or --knn-encoder."""
    (tmp_path / "net.py").write_text(
        "import torch\n\n\ndef make():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 10, 8), torch.nn.Flatten())\n"
    )
    result = CliRunner().invoke(
        app,
        ["serve", "--model", f"{tmp_path / 'net.py'}:make", "--input-shape", "1,8,8"]
        + ["--batch-size", "8", "--no-auth", "--stateful", "knn"],
    )
    assert result.exit_code == 2
    assert_one_line_error(result, "no nn.Linear", "--knn-encoder")
