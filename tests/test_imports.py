"""The package root is cheap: its public names load on first use (PEP 562).

The checks of what an import loads run in a fresh interpreter, since this one has
long since imported everything.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pixelguard

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("pixelguard.attacks", "pixelguard.evaluate", "pixelguard.report", "PIL", "torch")


def _loaded_after(statement: str) -> list[str]:
    """The modules in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_errors_imports_no_heavy_layer() -> None:
    assert _heavy(_loaded_after("import pixelguard.errors")) == []


def test_root_import_is_cheap_and_sets_the_openmp_spin() -> None:
    loaded = _loaded_after(
        "import os\n"
        "os.environ.pop('GOMP_SPINCOUNT', None); os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "import pixelguard\n"
        "assert os.environ['GOMP_SPINCOUNT'] == '1000', os.environ.get('GOMP_SPINCOUNT')"
    )
    assert _heavy(loaded) == []


def test_names_resolve_to_the_submodules_objects() -> None:
    import pixelguard.attacks
    import pixelguard.data
    import pixelguard.errors
    import pixelguard.models
    import pixelguard.report

    evaluate_pkg = sys.modules["pixelguard.evaluate"]
    assert pixelguard.load_model is pixelguard.models.load_model
    assert pixelguard.Classifier is pixelguard.models.Classifier
    assert pixelguard.load_data is pixelguard.data.load_data
    assert pixelguard.create_attack is pixelguard.attacks.create_attack
    assert pixelguard.attack_dataset is evaluate_pkg.attack_dataset
    assert pixelguard.PixelguardError is pixelguard.errors.PixelguardError
    assert pixelguard.write_evaluation_report is pixelguard.report.write_evaluation_report
    from pixelguard import load_model

    assert load_model is pixelguard.models.load_model


def test_evaluate_is_the_function_even_after_the_subpackage_loads() -> None:
    import pixelguard.evaluate.runner  # noqa: F401  (loads the subpackage of that name)

    assert callable(pixelguard.evaluate)
    assert pixelguard.evaluate is sys.modules["pixelguard.evaluate"].evaluate
    from pixelguard import evaluate

    assert evaluate is sys.modules["pixelguard.evaluate"].evaluate


def test_evaluate_is_the_function_in_a_fresh_interpreter() -> None:
    code = (
        "import types, pixelguard.report, pixelguard as pg\n"
        "assert not isinstance(pg.evaluate, types.ModuleType), pg.evaluate\n"
        "assert callable(pg.evaluate)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", pixelguard.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(pixelguard, name) is not None
    assert name in dir(pixelguard)


def test_unknown_attribute_raises_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = pixelguard.no_such_thing  # type: ignore[attr-defined]
    assert not hasattr(pixelguard, "no_such_thing")


def test_version_matches_pyproject() -> None:
    from pixelguard._version import __version__

    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    match = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert match is not None
    assert __version__ == match.group(1)
    assert pixelguard.__version__ == __version__


def test_the_cli_app_imports_no_torch() -> None:
    """``pixelguard --help`` builds every command without the library: it stays fast."""
    loaded = _loaded_after("import pixelguard.cli.app")
    assert [m for m in loaded if m == "torch" or m.startswith("torch.")] == []
    assert _heavy(loaded) == []


def test_cli_help_lists_the_commands_without_torch() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['pixelguard', '--help']\n"
        "try:\n"
        "    import runpy; runpy.run_module('pixelguard.cli', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "COLUMNS": "160"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    for command in ("attacks", "attack", "train", "demo", "evaluate", "report", "compare"):
        assert re.search(rf"^\W*{command}\s", result.stdout, re.MULTILINE), command
    assert "harden" in result.stdout and "detect" in result.stdout and "certify" in result.stdout
    plain = subprocess.run(
        [sys.executable, "-m", "pixelguard.cli", "--help"], capture_output=True, text=True, env=env
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == result.stdout


def test_the_help_texts_name_the_registered_architectures_and_detectors() -> None:
    """The CLI names them without importing their (torch) registries; they must agree."""
    from pixelguard.cli import options as opt
    from pixelguard.defenses.detect import list_detectors
    from pixelguard.models.zoo import list_archs

    assert list(opt.ARCH_NAMES) == list_archs()
    assert list(opt.DETECTOR_NAMES) == list_detectors()


def test_the_defaults_are_the_librarys() -> None:
    from pixelguard import defaults
    from pixelguard.evaluate.runner import SHARD_SIZE
    from pixelguard.models.base import DEFAULT_BATCH_SIZE

    assert (DEFAULT_BATCH_SIZE, SHARD_SIZE) == (defaults.DEFAULT_BATCH_SIZE, defaults.SHARD_SIZE)
