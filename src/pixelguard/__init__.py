"""pixelguard: how few pixels does it take to fool your image classifier?

The user-facing names, in the order of a typical session::

    import pixelguard as pg

    model = pg.load_model("model.pt")
    run = pg.attack_dataset(model, pg.load_data("digits"), pg.create_attack("sparse-bayes", pixels=3))
    print(run.summary())

    suite = pg.build_suite("full", gradients=model.capabilities.gradients)
    evaluation = pg.evaluate(model, pg.load_data("digits"), suite, checkpoint_dir="eval/checkpoint")
    pg.write_evaluation_report("eval", evaluation)   # report.json, .md, .html, adversarial.npz
"""

import os as _os
import sys as _sys
import types as _types
from typing import TYPE_CHECKING

from pixelguard._version import __version__

# Attacks make many small model calls. Between them, OpenMP's idle threads spin for a
# long while (GOMP_SPINCOUNT 300,000) before they sleep: on a machine with other work (a
# busy laptop, a CI runner) they take the cores the running threads need, and small-batch
# forward passes get many times slower. A short spin keeps most of spinning's gain on an
# idle machine and loses little on a busy one (BENCHMARKS.md, "OpenMP threads"). It only
# takes effect before torch loads, and a policy or spin count the user set wins.
if "torch" not in _sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ):
    _os.environ["GOMP_SPINCOUNT"] = "1000"

# The public names load on first use (PEP 562), so ``import pixelguard.errors`` and the
# other bottom layers stay cheap: importing a submodule runs this file first, and it must
# not pull in attacks, evaluation, reports, torch or PIL. Name -> the module defining it.
_EXPORTS = {
    "Attack": "pixelguard.attacks",
    "AttackResult": "pixelguard.attacks",
    "create_attack": "pixelguard.attacks",
    "list_attacks": "pixelguard.attacks",
    "Dataset": "pixelguard.data",
    "load_data": "pixelguard.data",
    "PixelguardError": "pixelguard.errors",
    "AttackRun": "pixelguard.evaluate",
    "Evaluation": "pixelguard.evaluate",
    "attack_dataset": "pixelguard.evaluate",
    "build_suite": "pixelguard.evaluate",
    "evaluate": "pixelguard.evaluate",
    "merge_results": "pixelguard.evaluate",
    "Classifier": "pixelguard.models",
    "load_model": "pixelguard.models",
    "compare_folders": "pixelguard.report",
    "write_adversarial_npz": "pixelguard.report",
    "write_evaluation_report": "pixelguard.report",
    "write_examples_png": "pixelguard.report",
    "write_results_json": "pixelguard.report",
    "write_run_reports": "pixelguard.report",
}

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ loads these
    from pixelguard.attacks import Attack, AttackResult, create_attack, list_attacks
    from pixelguard.data import Dataset, load_data
    from pixelguard.errors import PixelguardError
    from pixelguard.evaluate import (
        AttackRun,
        Evaluation,
        attack_dataset,
        build_suite,
        evaluate,
        merge_results,
    )
    from pixelguard.models import Classifier, load_model
    from pixelguard.report import (
        compare_folders,
        write_adversarial_npz,
        write_evaluation_report,
        write_examples_png,
        write_results_json,
        write_run_reports,
    )


class _Package(_types.ModuleType):
    """The package's module type: it keeps ``pixelguard.evaluate`` the function.

    Importing a submodule sets it as an attribute of its package, so loading the
    ``pixelguard.evaluate`` subpackage (which the reports do) would shadow the
    :func:`~pixelguard.evaluate.evaluate` this root exports under the same name.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if (
            name in _EXPORTS
            and isinstance(value, _types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
        ):
            return  # the submodule stays reachable as sys.modules["pixelguard.evaluate"]
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = [
    "Attack",
    "AttackResult",
    "AttackRun",
    "Classifier",
    "Dataset",
    "Evaluation",
    "PixelguardError",
    "__version__",
    "attack_dataset",
    "build_suite",
    "compare_folders",
    "create_attack",
    "evaluate",
    "list_attacks",
    "load_data",
    "load_model",
    "merge_results",
    "write_adversarial_npz",
    "write_evaluation_report",
    "write_examples_png",
    "write_results_json",
    "write_run_reports",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
