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

# Attacks make many small model calls. OpenMP's default is to keep idle threads spinning,
# which on a machine with other work (two cores, a busy laptop, a CI runner) makes a
# small-batch forward pass 10-40x slower than on one thread; sleeping threads cost large
# models nothing measurable. It only takes effect before torch loads, and a value the user
# set wins.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
