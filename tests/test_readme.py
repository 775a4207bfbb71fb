"""The README's commands: every one parses as written, and the digits walk-through runs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from pixelguard.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """Every ``pixelguard ...`` line of the README's shell blocks, continuations joined.

    Shell blocks are the fenced ```bash blocks and the indented lines at the top.
    """
    lines: list[str] = []
    fence: str | None = None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence in ("bash", "sh") or (fence is None and line.startswith("    ")):
            lines.append(line.strip())
    commands: list[list[str]] = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        for part in line.split(" #")[0].split("&&"):
            words = shlex.split(part)
            if words and words[0] == "pixelguard":
                commands.append(words[1:])
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_the_main_commands():
    named = {words[0] for words in COMMANDS if words}
    assert {"demo", "attack", "evaluate", "train", "detect", "harden", "certify"} <= named
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("words", COMMANDS, ids=lambda words: " ".join(words)[:60])
def test_every_readme_command_parses_as_written(words):
    """Options exist, take values of the right type, and required ones are present."""
    if "..." in words:  # "pixelguard attack ... --resume": the options of the line above
        words = [w for w in words if w != "..."]
        group = get_command(app)
        command = group.get_command(None, words[0])  # type: ignore[arg-type]
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        assert {w for w in words[1:] if w.startswith("-")} <= known
        return
    group = get_command(app)
    context = group.make_context("pixelguard", list(words))
    rest = [*getattr(context, "_protected_args", []), *context.args]
    name, command, arguments = group.resolve_command(context, rest)
    assert command is not None, words
    command.make_context(name, arguments, parent=context)


def test_the_digits_walk_through_runs_as_written(tmp_path, monkeypatch):
    """The README's train, attack and report commands on the built-in digits, verbatim."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    wanted = [
        ["train", "--data", "digits", "--out", "model.pt"],
        ["attack", "--model", "model.pt", "--data", "digits", "--out", "runs/k1"],
        [
            "attack",
            "--model",
            "model.pt",
            "--data",
            "digits",
            "--pixels",
            "3",
            "--limit",
            "100",
            "--out",
            "runs/k3",
        ],
        [
            "attack",
            "--model",
            "model.pt",
            "--data",
            "digits",
            "--pixels",
            "1",
            "--target",
            "7",
            "--out",
            "runs/to7",
        ],
        [
            "attack",
            "--model",
            "model.pt",
            "--data",
            "digits",
            "--attack",
            "pgd",
            "--eps",
            "8/255",
            "--out",
            "runs/pgd",
        ],
    ]
    for words in wanted:
        assert words in COMMANDS, f"the README no longer shows: pixelguard {' '.join(words)}"
        result = runner.invoke(app, [*words, "--quiet"] if words[0] == "attack" else words)
        assert result.exit_code == 0, (words, result.output)
    k3 = json.loads((tmp_path / "runs/k3/results.json").read_text())
    assert k3["attack"]["params"]["pixels"] == 3 and k3["data"]["n_images"] == 100
    assert k3["success_rate"] > 0.5  # three pixels of an 8x8 digit fool most of them
    to7 = json.loads((tmp_path / "runs/to7/results.json").read_text())
    assert all(row["pred_after"] == 7 for row in to7["images"] if row["success"])
