"""Running attacks over datasets: chunking, checkpoints and resume, merged results."""

from pixelguard.evaluate.attack_run import AttackRun, attack_dataset
from pixelguard.evaluate.merge import merge_results

__all__ = ["AttackRun", "attack_dataset", "merge_results"]
