"""Running attacks over datasets: chunking, checkpoints and resume, merged results, suites."""

from pixelguard.evaluate.attack_run import AttackRun, attack_dataset
from pixelguard.evaluate.merge import merge_results
from pixelguard.evaluate.runner import Evaluation, evaluate
from pixelguard.evaluate.suite import Suite, SuiteEntry, build_suite

__all__ = [
    "AttackRun",
    "Evaluation",
    "Suite",
    "SuiteEntry",
    "attack_dataset",
    "build_suite",
    "evaluate",
    "merge_results",
]
