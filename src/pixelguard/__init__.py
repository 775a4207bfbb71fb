"""pixelguard: how few pixels does it take to fool your image classifier?

The user-facing names, in the order of a typical session::

    import pixelguard as pg

    model = pg.load_model("model.pt")
    run = pg.attack_dataset(model, pg.load_data("digits"), pg.create_attack("pixel-de", pixels=3))
    print(run.summary())
"""

__version__ = "0.1.0"

from pixelguard.attacks import Attack, AttackResult, create_attack, list_attacks  # noqa: E402
from pixelguard.data import Dataset, load_data  # noqa: E402
from pixelguard.errors import PixelguardError  # noqa: E402
from pixelguard.evaluate import AttackRun, attack_dataset, merge_results  # noqa: E402
from pixelguard.models import Classifier, load_model  # noqa: E402
from pixelguard.report import (  # noqa: E402
    write_adversarial_npz,
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
    "PixelguardError",
    "__version__",
    "attack_dataset",
    "create_attack",
    "list_attacks",
    "load_data",
    "load_model",
    "merge_results",
    "write_adversarial_npz",
    "write_examples_png",
    "write_results_json",
    "write_run_reports",
]
