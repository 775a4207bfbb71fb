"""Checkpoints of a chunked attack run: a small JSON state plus one ``.npz`` per chunk.

The folder holds ``state.json`` (what the run is: attack, data, model, limit, and
how many chunks are finished), ``clean.npz`` (the model's clean predictions, which
identify the model on resume) and ``chunk-00000.npz``... (the results of finished
chunks). Every file is written atomically and the state is updated only after its
chunk's file is in place, so a run killed at any moment loses at most the chunk in
flight.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelguard.attacks.base import Attack, AttackResult
from pixelguard.errors import ConfigError, DataError
from pixelguard.evaluate.files import write_json, write_npz
from pixelguard.evaluate.merge import tensor_fields

logger = logging.getLogger(__name__)

FORMAT = "pixelguard-attack-checkpoint"
VERSION = 1
STATE_FILE = "state.json"
CLEAN_FILE = "clean.npz"
CONFIDENCE_TOLERANCE = 1e-4
"""Clean confidences may differ this much on resume (thread-count rounding), no more."""


def _chunk_file(index: int) -> str:
    return f"chunk-{index:05d}.npz"


class Checkpoint:
    """The checkpoint folder of one attack run.

    Args:
        folder: where the files live (created on :meth:`start`).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

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
            seed: the seed the attack runs with.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("chunk-*.npz"):
            old.unlink()
        write_npz(
            self.folder / CLEAN_FILE,
            {"pred": pred.cpu().numpy(), "conf": conf.cpu().numpy()},
        )
        self._write_state(identity, seed, chunks_done=0)

    def _write_state(self, identity: dict[str, Any], seed: int, chunks_done: int) -> None:
        state = {
            "format": FORMAT,
            "version": VERSION,
            "identity": identity,
            "seed": seed,
            "chunks_done": chunks_done,
        }
        write_json(self.state_path, state)

    def save_chunk(
        self, index: int, result: AttackResult, identity: dict[str, Any], seed: int
    ) -> None:
        """Store the result of chunk ``index``, then record it as finished."""
        arrays = {name: t.detach().cpu().numpy() for name, t in tensor_fields(result).items()}
        arrays["wall_time"] = np.asarray(result.wall_time, dtype=np.float64)
        write_npz(self.folder / _chunk_file(index), arrays)
        self._write_state(identity, seed, chunks_done=index + 1)

    def restore(
        self,
        identity: dict[str, Any],
        pred: torch.Tensor,
        conf: torch.Tensor,
    ) -> tuple[int, list[dict[str, np.ndarray]]] | None:
        """Read a checkpoint of the same run, or None when the folder holds none.

        Args:
            identity: the description of the run being resumed.
            pred: the model's clean predictions now.
            conf: their confidences now.

        Returns:
            The seed the checkpointed run used, and one dict of tensors per finished
            chunk (the :class:`AttackResult` tensor fields plus ``wall_time``), for
            :func:`result_from_arrays`.

        Raises:
            ConfigError: the checkpoint belongs to a different run (attack settings,
                data, model or limit).
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
        chunks = [self._read_npz(self.folder / _chunk_file(i)) for i in range(state["chunks_done"])]
        logger.info("resuming from %s: %d chunk(s) already finished", self.folder, len(chunks))
        return int(state["seed"]), chunks

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read checkpoint state {self.state_path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise DataError(f"{self.state_path} is not a pixelguard attack checkpoint")
        if state.get("version") != VERSION:
            raise DataError(
                f"{self.state_path} is checkpoint version {state.get('version')}; "
                f"this pixelguard resumes version {VERSION}"
            )
        return state

    def _check_identity(self, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
        differing = [key for key in wanted if saved.get(key) != wanted[key]]
        if not differing:
            return
        details = []
        for key in differing:
            old, new = saved.get(key), wanted[key]
            if isinstance(old, dict) and isinstance(new, dict):
                inner = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in inner)
                details.append(f"{key} ({changes})")
            else:
                details.append(f"{key} ({old!r} -> {new!r})")
        raise ConfigError(
            f"the checkpoint in {self.folder} belongs to a different run: "
            f"{'; '.join(details)}; start afresh without resuming, or use another folder"
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
