"""pixelguard: how few pixels does it take to fool your image classifier?

The user-facing names, in the order of a typical session::

    import pixelguard as pg

    model = pg.load_model("model.pt")
    run = pg.attack_dataset(model, pg.load_data("digits"), pg.create_attack("pixel-de", pixels=3))
    print(run.summary())

    suite = pg.build_suite("full", gradients=model.capabilities.gradients)
    evaluation = pg.evaluate(model, pg.load_data("digits"), suite, checkpoint_dir="eval/checkpoint")
    pg.write_evaluation_report("eval", evaluation)   # report.json, .md, .html, adversarial.npz
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Attacks make many small model calls. Between them, OpenMP's idle threads spin for a
# long while (GOMP_SPINCOUNT 300,000) before they sleep: on a machine with other work (a
# busy laptop, a CI runner) they take the cores the running threads need, and small-batch
# forward passes get many times slower. A short spin keeps most of spinning's gain on an
# idle machine and loses little on a busy one (BENCHMARKS.md, "OpenMP threads"). It only
# takes effect before torch loads, and a policy or spin count the user set wins.
if "torch" not in _sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ):
    _os.environ["GOMP_SPINCOUNT"] = "1000"

from pixelguard.attacks import Attack, AttackResult, create_attack, list_attacks  # noqa: E402
from pixelguard.data import Dataset, load_data  # noqa: E402
from pixelguard.errors import PixelguardError  # noqa: E402
from pixelguard.evaluate import (  # noqa: E402
    AttackRun,
    Evaluation,
    attack_dataset,
    build_suite,
    evaluate,
    merge_results,
)
from pixelguard.models import Classifier, load_model  # noqa: E402
from pixelguard.report import (  # noqa: E402
    compare_folders,
    write_adversarial_npz,
    write_evaluation_report,
    write_examples_png,
    write_results_json,
    write_run_reports,
)

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
