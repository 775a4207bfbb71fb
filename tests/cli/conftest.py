"""Fixtures for the command-line tests: a runner and the session model on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pixelguard.cli.app import app


class Cli:
    """Invoke the app and check the outcome in one call."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str | Path, code: int = 0, env: dict[str, str] | None = None):
        result = self.runner.invoke(app, [str(a) for a in args], env=env)
        assert result.exit_code == code, (
            f"exit {result.exit_code} != {code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
            f"\nexception: {result.exception!r}"
        )
        return result


@pytest.fixture()
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory, digits_model) -> str:
    """The session's digits CNN as ``file.py:make_model`` (needs --input-shape 1,8,8)."""
    folder = tmp_path_factory.mktemp("models")
    torch.save(digits_model.module, folder / "digits.pt")
    source = (
        "from pathlib import Path\n\nimport torch\n\n\n"
        "def make_model():\n"
        "    return torch.load(Path(__file__).with_name('digits.pt'), weights_only=False)\n"
    )
    (folder / "factory.py").write_text(source)
    return f"{folder / 'factory.py'}:make_model"


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Commands may set torch's thread count for the process (--threads auto): restore it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
