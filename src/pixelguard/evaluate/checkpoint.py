"""Checkpoints of a chunked run: a small JSON state plus one ``.npz`` per chunk.

The folder holds ``state.json`` (what the run is: attack or suite, data, model, limit,
and which chunks are finished), ``clean.npz`` (the model's clean predictions, which
identify the model on resume) and ``chunk-00000.npz``... (the arrays of finished
chunks). Every file is written atomically and the state is updated only after its
chunk's file is in place, so a run killed at any moment loses at most the chunks in
flight. Chunks may finish in any order (shards on Ray do).

:func:`run_identity` describes a run, :func:`open_checkpoint` restores or starts one;
``pixelguard attack`` (:func:`~pixelguard.evaluate.attack_dataset`) and ``pixelguard
evaluate`` (:func:`~pixelguard.evaluate.evaluate`) share them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelguard.attacks.base import Attack, AttackResult
from pixelguard.data.base import Dataset
from pixelguard.errors import ConfigError, DataError
from pixelguard.evaluate.merge import tensor_fields
from pixelguard.files import write_json, write_npz
from pixelguard.models.base import Classifier, OutputKind

logger = logging.getLogger(__name__)

VERSION = 2
"""Version 2 lists the finished chunks (version 1 counted them)."""
STATE_FILE = "state.json"
CLEAN_FILE = "clean.npz"
CONFIDENCE_TOLERANCE = 1e-4
"""Clean confidences may differ this much on resume (thread-count rounding), no more."""
BRIEF_LENGTH = 40
"""Longest value a refused resume quotes in full; longer ones are summarised."""


def _chunk_file(index: int) -> str:
    return f"chunk-{index:05d}.npz"


class Checkpoint:
    """The checkpoint folder of one run.

    Args:
        folder: where the files live (created on :meth:`start`).
        kind: what the run is (``"attack"``, ``"evaluation"``); a checkpoint of another
            kind is not resumed.
    """

    def __init__(self, folder: str | Path, kind: str = "attack") -> None:
        self.folder = Path(folder)
        self.kind = kind
        self._state: dict[str, Any] | None = None

    @property
    def format(self) -> str:
        return f"pixelguard-{self.kind}-checkpoint"

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_FILE

    def start(
        self, identity: dict[str, Any], pred: torch.Tensor, conf: torch.Tensor, seed: int
    ) -> None:
        """Begin a fresh checkpoint, removing the chunks of an earlier run.

        Args:
            identity: plain data describing the run; a resumed run must match it.
            pred: the model's clean predictions on the whole dataset.
            conf: the confidences of those predictions.
            seed: the seed the run uses.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("chunk-*.npz"):
            old.unlink()
        write_npz(
            self.folder / CLEAN_FILE,
            {"pred": pred.cpu().numpy(), "conf": conf.cpu().numpy()},
        )
        self._state = {
            "format": self.format,
            "version": VERSION,
            "identity": identity,
            "seed": seed,
            "chunks_done": [],
        }
        write_json(self.state_path, self._state)

    def save_chunk(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Store the arrays of chunk ``index``, then record it as finished.

        Raises:
            RuntimeError: neither :meth:`start` nor :meth:`restore` opened the checkpoint.
        """
        if self._state is None:
            raise RuntimeError("start or restore the checkpoint before saving chunks")
        write_npz(self.folder / _chunk_file(index), arrays)
        self._state["chunks_done"] = sorted({*self._state["chunks_done"], index})
        write_json(self.state_path, self._state)

    def restore(
        self,
        identity: dict[str, Any],
        pred: torch.Tensor,
        conf: torch.Tensor,
    ) -> tuple[int, dict[int, dict[str, np.ndarray]]] | None:
        """Read a checkpoint of the same run, or None when the folder holds none.

        Args:
            identity: the description of the run being resumed.
            pred: the model's clean predictions now.
            conf: their confidences now.

        Returns:
            The seed the checkpointed run used, and the arrays of each finished chunk
            by chunk number, as :meth:`save_chunk` stored them.

        Raises:
            ConfigError: the checkpoint belongs to a different run (attack or suite
                settings, data, model or limit).
            DataError: the checkpoint files are damaged.
        """
        if not self.state_path.is_file():
            logger.info("no checkpoint in %s; starting from the first chunk", self.folder)
            return None
        state = self._read_state()
        self._check_identity(state["identity"], identity)
        clean = self._read_npz(self.folder / CLEAN_FILE)
        same_model = np.array_equal(clean["pred"], pred.cpu().numpy()) and np.allclose(
            clean["conf"], conf.cpu().numpy(), atol=CONFIDENCE_TOLERANCE, rtol=0.0
        )
        if not same_model:
            raise ConfigError(
                f"the checkpoint in {self.folder} was made with a different model (its clean "
                "predictions differ); start afresh without resuming, or use another folder"
            )
        chunks = {i: self._read_npz(self.folder / _chunk_file(i)) for i in state["chunks_done"]}
        logger.info("resuming from %s: %d chunk(s) already finished", self.folder, len(chunks))
        self._state = state
        return int(state["seed"]), chunks

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read checkpoint state {self.state_path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != self.format:
            raise DataError(f"{self.state_path} is not a pixelguard {self.kind} checkpoint")
        if state.get("version") != VERSION:
            raise DataError(
                f"{self.state_path} is checkpoint version {state.get('version')}; "
                f"this pixelguard resumes version {VERSION}"
            )
        return state

    def _check_identity(self, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
        """Raise :class:`ConfigError` naming the first setting where the runs differ."""
        key = next((key for key in wanted if saved.get(key) != wanted[key]), None)
        if key is None:
            return
        path, old, new = _first_difference(saved.get(key), wanted[key])
        where = f"{path}: " if path else ""
        raise ConfigError(
            f"--resume: the checkpoint in {self.folder} belongs to a different run: "
            f"{key} ({where}{_brief(old)} -> {_brief(new)}); rerun without --resume in a "
            "new --out, or with the same options"
        )

    @staticmethod
    def _read_npz(path: Path) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"checkpoint file {path} is missing or damaged ({exc}); start afresh"
            ) from exc


def _first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any]:
    """``(path, old value, new value)`` at the first innermost place two unequal JSON
    values differ, keys in ``new``'s order: ``({"a": 1}, {"a": 2})`` -> ``("a", 1, 2)``."""
    if isinstance(old, dict) and isinstance(new, dict):
        key = next(k for k in [*new, *old] if k not in old or k not in new or old[k] != new[k])
        return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        i = next(i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)
        return _first_difference(old[i], new[i], f"{path}[{i}]")
    return path, old, new


def _brief(value: Any) -> str:
    """``repr(value)``, or a summary of it beyond :data:`BRIEF_LENGTH` characters."""
    text = repr(value)
    if len(text) <= BRIEF_LENGTH:
        return text
    if isinstance(value, list | dict):
        return f"{len(value)} {'items' if isinstance(value, list) else 'settings'}"
    return text[: BRIEF_LENGTH - 3] + "..."


def open_checkpoint(
    store: Checkpoint | None,
    identity: dict[str, Any],
    pred: torch.Tensor,
    conf: torch.Tensor,
    seed: int | None,
    resume: bool,
) -> tuple[int, dict[int, dict[str, np.ndarray]]]:
    """The seed to run with and the stored chunks to keep: restored, or a fresh start.

    A seed of None is drawn here, once per run, and kept in the checkpoint. Without
    ``resume`` (or with nothing to resume) the checkpoint starts afresh, so chunks of
    an earlier run are never mixed in.

    Args:
        store: the checkpoint, or None to run without one.
        identity: :func:`run_identity` of the run.
        pred: the model's clean predictions on the run's images.
        conf: their confidences.
        seed: the run's seed (None: draw one).
        resume: restore the checkpoint of the same run when there is one.

    Returns:
        The seed, and the arrays of each finished chunk by chunk number.
    """
    chosen = seed if seed is not None else secrets.randbits(31)
    if store is None:
        return chosen, {}
    restored = store.restore(identity, pred, conf) if resume else None
    if restored is not None:
        return restored
    store.start(identity, pred, conf, chosen)
    return chosen, {}


def run_identity(model: Classifier, dataset: Dataset, settings: dict[str, Any]) -> dict[str, Any]:
    """Plain data a resumed run must share with its checkpoint.

    Args:
        model: the classifier (its shape and outputs here; its clean predictions are
            checked apart, by :meth:`Checkpoint.restore`).
        dataset: the images and labels, identified by a SHA-256 of their bytes.
        settings: what else defines the run (attack or suite, limit, chunk size...);
            a ``data`` entry (how the data was given: limit, seed, spec...) joins
            the data's digest.

    Returns:
        ``settings`` plus ``data`` and ``model`` entries, as the checkpoint's JSON holds
        them (tuples become lists), so the two compare equal.
    """
    digest = hashlib.sha256()
    digest.update(dataset.x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(dataset.y.detach().cpu().contiguous().numpy().tobytes())
    given = settings.get("data") or {}
    identity = {
        **settings,
        "data": {**given, "sha256": digest.hexdigest(), "n_images": len(dataset)},
        "model": {
            "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
            "output": OutputKind(model.capabilities.output).value,
        },
    }
    result: dict[str, Any] = json.loads(json.dumps(identity, default=str))
    return result


def result_to_arrays(result: AttackResult) -> dict[str, np.ndarray]:
    """The arrays :meth:`Checkpoint.save_chunk` stores for a chunk of an attack run."""
    arrays = {name: t.detach().cpu().numpy() for name, t in tensor_fields(result).items()}
    arrays["wall_time"] = np.asarray(result.wall_time, dtype=np.float64)
    return arrays


def result_from_arrays(arrays: dict[str, np.ndarray], attack: Attack, seed: int) -> AttackResult:
    """Rebuild a chunk's :class:`AttackResult` from its stored arrays.

    Args:
        arrays: one chunk as :meth:`Checkpoint.restore` returns it.
        attack: the configured attack the run uses (its name, parameters and budget).
        seed: the seed the chunk ran with.
    """
    values: dict[str, Any] = {
        name: torch.from_numpy(value) for name, value in arrays.items() if name != "wall_time"
    }
    values.setdefault("target", None)
    return AttackResult(
        **values,
        attack=attack.name,
        params=attack.to_dict(),
        seed=seed,
        budget=attack.budget,
        wall_time=float(arrays["wall_time"]),
    )
