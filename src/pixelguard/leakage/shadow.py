"""The shadow-model membership attack (Shokri et al. 2017).

The attacker has data from the target's distribution but none of its members (the
*shadow data*). It trains ``n_shadows`` shadow models like the target, each on a
seeded random half of the shadow data, so for every shadow it knows which images
were in (its training half) and which were out (the other half). The shadows'
outputs on their in and out images teach an attack model (one global model; the
label enters one-hot) what a member's output looks like: the sorted probability
vector, the true label's log-probability (minus the loss) and its logit-scaled
margin. The attack model then scores the target's outputs on the members and
non-members to be judged.

Training the shadows is the cost. After each one, its outputs on its in and out
images are written to ``checkpoint`` (one ``.npz`` each, atomically, then the state
file), so a killed run resumed with ``resume=True`` trains only the shadows not yet
finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pixelguard.errors import ConfigError
from pixelguard.files import write_json, write_npz
from pixelguard.leakage.membership import (
    Labelled,
    MembershipResult,
    as_labelled,
    check_membership_inputs,
    log_probs,
    signal,
)
from pixelguard.models.base import Classifier
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import train_classifier
from pixelguard.models.zoo import list_archs

logger = logging.getLogger(__name__)

ShadowProgress = Callable[[int, int], None]
"""Called as ``progress(shadows_finished, n_shadows)``."""

CHECKPOINT_FORMAT = "pixelguard-shadow-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "state.json"

ATTACK_MODELS = ("gbm", "logistic")


def _shadow_file(index: int) -> str:
    return f"shadow-{index:03d}.npz"


def shadow_features(log_p: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """The attack model's input per image: sorted probabilities, the true label's
    log-probability and margin, and the label one-hot.

    Shape:
        log_p: (N, K); y: (N,) -> (N, 2K + 2) float64.
    """
    sorted_p = log_p.exp().sort(dim=1, descending=True).values
    true = signal(log_p, y, "loss").unsqueeze(1)
    margin = signal(log_p, y, "margin").clamp(-50.0, 50.0).unsqueeze(1)
    one_hot = torch.nn.functional.one_hot(y, num_classes).to(torch.float64)
    return torch.cat([sorted_p, true.clamp_min(-50.0), margin, one_hot], dim=1).numpy()


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """Short SHA-256 of images and labels (what a checkpoint was computed from)."""
    h = hashlib.sha256()
    for a in (x, y):
        arr = np.ascontiguousarray(a.detach().cpu().numpy())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class ShadowModelAttack:
    """Train shadow models on the attacker's own data; learn members from their outputs.

    Attributes:
        n_shadows: shadow models to train (each on half of the shadow data).
        arch: their zoo architecture (best: the target's).
        epochs: training passes of each shadow (best: like the target's training).
        lr: Adam learning rate of the shadows.
        batch_size: images per optimisation step.
        attack_model: ``"gbm"`` (scikit-learn histogram gradient boosting) or
            ``"logistic"`` (logistic regression).
        seed: seeds the halves, the shadows' training and the attack model.
    """

    name = "shadow"
    n_shadows: int = 4
    arch: str = "small-cnn"
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 128
    attack_model: Literal["gbm", "logistic"] = "gbm"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_shadows < 1:
            raise ConfigError(f"n_shadows must be at least 1, got {self.n_shadows}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.attack_model not in ATTACK_MODELS:
            raise ConfigError(
                f"attack_model must be one of {', '.join(ATTACK_MODELS)}, got {self.attack_model!r}"
            )
        if self.arch not in list_archs():
            raise ConfigError(
                f"unknown architecture {self.arch!r}; known: {', '.join(list_archs())}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The configuration, as plain data."""
        return asdict(self)

    def run(
        self,
        model: Classifier,
        members: Labelled,
        non_members: Labelled,
        *,
        shadow_data: Labelled,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        progress: ShadowProgress | None = None,
    ) -> MembershipResult:
        """Train (or restore) the shadows, fit the attack model, score the target.

        Args:
            model: the target classifier.
            members, non_members: the known members and non-members to judge.
            shadow_data: the attacker's labelled images, disjoint from the members.
            checkpoint: a folder for each finished shadow's outputs (None: keep none).
            resume: reuse the finished shadows in ``checkpoint`` (it must be of the
                same configuration and shadow data).
            progress: called after each shadow model.

        Raises:
            ShapeError, RangeError, CapabilityError: see
                :func:`~pixelguard.leakage.membership.check_membership_inputs`.
            ConfigError: too little shadow data, or a checkpoint of another run.
        """
        check_membership_inputs(model, members, non_members, shadow_data=shadow_data)
        start = time.perf_counter()
        x_s, y_s = as_labelled(shadow_data, "shadow-data")
        if x_s.shape[0] < 4:
            raise ConfigError(f"the shadow data has {x_s.shape[0]} images; it needs at least 4")
        k = model.num_classes
        store = _ShadowStore(checkpoint, self._identity(x_s, y_s, k), resume)
        outputs: list[dict[str, np.ndarray]] = []
        restored = 0
        for index in range(self.n_shadows):
            arrays = store.load(index)
            if arrays is None:
                arrays = self._train_shadow(index, x_s, y_s, k)
                store.save(index, arrays)
            else:
                restored += 1
            outputs.append(arrays)
            if progress is not None:
                progress(index + 1, self.n_shadows)
        classifier = self._fit_attack_model(outputs, k)
        member_scores = self._score(classifier, model, members, k)
        non_member_scores = self._score(classifier, model, non_members, k)
        details = {
            "n_shadow_images": int(x_s.shape[0]),
            "shadows_restored": restored,
            "shadow_train_accuracy": [round(float(o["in_accuracy"]), 6) for o in outputs],
            "shadow_test_accuracy": [round(float(o["out_accuracy"]), 6) for o in outputs],
        }
        return MembershipResult.from_scores(
            self.name,
            self.to_dict(),
            member_scores,
            non_member_scores,
            details=details,
            wall_time=time.perf_counter() - start,
        )

    def _identity(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, Any]:
        """What a shadow's outputs depend on (all but ``n_shadows`` and ``attack_model``)."""
        config = {k: v for k, v in self.to_dict().items() if k not in ("n_shadows", "attack_model")}
        return {"config": config, "shadow_data": data_fingerprint(x, y), "num_classes": num_classes}

    def _halves(self, index: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + index)
        order = torch.randperm(n, generator=generator)
        return order[: n // 2], order[n // 2 :]

    def _train_shadow(
        self, index: int, x: torch.Tensor, y: torch.Tensor, num_classes: int
    ) -> dict[str, np.ndarray]:
        """Train shadow ``index`` on its in-half; its log-probabilities on both halves."""
        inside, outside = self._halves(index, x.shape[0])
        module, _ = train_classifier(
            x[inside],
            y[inside],
            arch=self.arch,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed * 100_003 + index,
            num_classes=num_classes,
        )
        c, h, w = x.shape[1:]
        shadow = TorchClassifier(module, (c, h, w), output="logits")
        in_lp, out_lp = log_probs(shadow, x[inside]), log_probs(shadow, x[outside])
        y_in, y_out = y[inside], y[outside]
        in_acc = float((in_lp.argmax(1) == y_in).double().mean())
        out_acc = float((out_lp.argmax(1) == y_out).double().mean())
        logger.info(
            "shadow %d/%d: accuracy %.3f on its members, %.3f on the others",
            index + 1,
            self.n_shadows,
            in_acc,
            out_acc,
        )
        return {
            "in_log_p": in_lp.numpy(),
            "in_y": y_in.numpy(),
            "out_log_p": out_lp.numpy(),
            "out_y": y_out.numpy(),
            "in_accuracy": np.array(in_acc),
            "out_accuracy": np.array(out_acc),
        }

    def _fit_attack_model(self, outputs: list[dict[str, np.ndarray]], num_classes: int) -> Any:
        """Fit the attack model on every shadow's in (label 1) and out (label 0) outputs."""
        features, labels = [], []
        for o in outputs:
            for part, member in (("in", 1), ("out", 0)):
                lp = torch.from_numpy(o[f"{part}_log_p"])
                y = torch.from_numpy(o[f"{part}_y"])
                features.append(shadow_features(lp, y, num_classes))
                labels.append(np.full(len(y), member))
        x_attack, y_attack = np.concatenate(features), np.concatenate(labels)
        if self.attack_model == "gbm":
            from sklearn.ensemble import HistGradientBoostingClassifier

            classifier = HistGradientBoostingClassifier(
                max_iter=200, learning_rate=0.05, random_state=self.seed
            )
        else:
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return classifier.fit(x_attack, y_attack)

    @staticmethod
    def _score(
        classifier: Any, model: Classifier, data: Labelled, num_classes: int
    ) -> torch.Tensor:
        """The attack model's log-odds of membership for each image of ``data``."""
        x, y = as_labelled(data, "images")
        features = shadow_features(log_probs(model, x), y, num_classes)
        p = classifier.predict_proba(features)[:, 1].astype(np.float64)
        p = np.clip(p, 1e-12, 1 - 1e-12)
        return torch.from_numpy(np.log(p) - np.log1p(-p))


class _ShadowStore:
    """The checkpoint folder of the shadows' outputs (or nothing, without a folder)."""

    def __init__(self, folder: str | Path | None, identity: dict[str, Any], resume: bool) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.identity = identity
        self.done: list[int] = []
        if self.folder is None:
            return
        state_path = self.folder / STATE_FILE
        if resume and state_path.is_file():
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if state.get("format") != CHECKPOINT_FORMAT or state.get("identity") != identity:
                raise ConfigError(
                    f"the checkpoint in {self.folder} is of another shadow run (other settings "
                    "or shadow data); rerun without --resume to start afresh"
                )
            self.done = [
                i for i in state["shadows_done"] if (self.folder / _shadow_file(i)).is_file()
            ]
            logger.info("resuming: %d finished shadow models in %s", len(self.done), self.folder)
            return
        if state_path.is_file() or any(self.folder.glob("shadow-*.npz")):
            for old in self.folder.glob("shadow-*.npz"):
                old.unlink()
        self._write_state()

    def _write_state(self) -> None:
        assert self.folder is not None
        write_json(
            self.folder / STATE_FILE,
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "identity": self.identity,
                "shadows_done": sorted(self.done),
            },
        )

    def load(self, index: int) -> dict[str, np.ndarray] | None:
        if self.folder is None or index not in self.done:
            return None
        with np.load(self.folder / _shadow_file(index)) as data:
            return {name: data[name] for name in data.files}

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        if self.folder is None:
            return
        write_npz(self.folder / _shadow_file(index), arrays)
        self.done = sorted({*self.done, index})
        self._write_state()
