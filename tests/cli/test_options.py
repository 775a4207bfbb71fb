"""``with_options``: an options dataclass declared once becomes a command's options."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.testing import CliRunner

from pixelguard.cli import options as opt


def _app(**kwargs) -> tuple[typer.Typer, list]:
    seen: list = []
    app = typer.Typer()

    @app.command()
    @opt.with_options(data_options=opt.DataOptions, **kwargs)
    def command(*, data: opt.DataSpec, data_options: opt.DataOptions) -> None:
        seen.append((data, data_options))

    @app.command("other")
    def other() -> None:  # a second command keeps typer from flattening the app
        pass

    return app, seen


def test_fields_become_options_and_arrive_as_one_record() -> None:
    app, seen = _app()
    result = CliRunner().invoke(
        app, ["command", "--data", "d.npz", "--labels", "l.npy", "--split", "all"]
    )
    assert result.exit_code == 0, result.output
    data, record = seen[0]
    assert data == "d.npz"
    assert record == opt.DataOptions(labels="l.npy", split="all")


def test_defaults_and_excluded_fields() -> None:
    app, seen = _app(defaults={"split": "train"}, exclude=("class_names",))
    assert CliRunner().invoke(app, ["command", "--data", "d"]).exit_code == 0
    assert seen[0][1].split == "train" and seen[0][1].class_names is None
    refused = CliRunner().invoke(app, ["command", "--data", "d", "--class-names", "a,b"])
    assert refused.exit_code == 2


def test_signature_lists_each_field_once() -> None:
    @opt.with_options(model_options=opt.ModelOptions)
    def command(*, model_options: opt.ModelOptions, quiet: opt.Quiet = False) -> None:
        pass

    names = list(inspect.signature(command).parameters)
    assert names[0] == "quiet" and "model_options" not in names
    assert names[1:] == [f for f in opt.ModelOptions.__dataclass_fields__]


def test_unknown_default_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no option splat"):
        opt.with_options(data_options=opt.DataOptions, defaults={"splat": 1})(lambda **_: None)
