"""attack_dataset: image selection, chunking, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.attacks.sparse_rs import SparseRS
from pixelguard.data import Dataset
from pixelguard.errors import ConfigError, RangeError, ShapeError
from pixelguard.evaluate import AttackRun, attack_dataset
from pixelguard.evaluate.merge import tensor_fields
from pixelguard.models.base import ClassifierWrapper
from pixelguard.models.torch import TorchClassifier
from pixelguard.testing import check_attack_result


class Interrupt:
    """A progress callback that raises KeyboardInterrupt once a second chunk is under way."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size

    def __call__(self, done: int, total: int) -> None:
        if done > self.chunk_size:
            raise KeyboardInterrupt


class Scrambled(ClassifierWrapper):
    """The wrapped model with its class scores shifted by one: every class is renamed."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x).roll(1, dims=1)


def _same_results(a: AttackRun, b: AttackRun) -> None:
    assert torch.equal(a.indices, b.indices)
    for name, tensor in tensor_fields(a.result).items():
        assert torch.equal(tensor, getattr(b.result, name)), name
    assert a.images() == b.images()


def test_attacks_the_first_correctly_classified_images(digits_model, held_out, tiny_attack):
    run = attack_dataset(digits_model, held_out, tiny_attack, limit=12, chunk_size=5)
    pred = digits_model.predict(held_out.x).argmax(dim=1)
    correct = (pred == held_out.y).nonzero().flatten()
    assert torch.equal(run.indices, correct[:12])
    assert run.clean_accuracy == pytest.approx(float((pred == held_out.y).float().mean()))
    assert run.n_images == len(held_out) and run.n_attacked == 12
    assert torch.equal(run.result.y, held_out.y[run.indices])
    assert run.success_rate == pytest.approx(run.n_success / 12)
    check_attack_result(run.result, digits_model, held_out.x[run.indices], max_pixels=3)


def test_summary_medians_are_over_fooled_images(digits_model, held_out, tiny_attack):
    run = attack_dataset(digits_model, held_out, tiny_attack, limit=10)
    summary = run.summary()
    fooled = run.result.success
    assert fooled.any(), "the tiny attack should fool at least one of ten digits"
    assert summary["median_queries"] == pytest.approx(
        float(np.median(run.result.queries[fooled].numpy()))
    )
    assert 1 <= summary["median_pixels_changed"] <= 3
    assert summary["n_attacked"] == 10 and summary["n_success"] == int(fooled.sum())
    assert [row["index"] for row in run.images()] == run.indices.tolist()
    json.dumps(summary)


def test_progress_reports_images_finished_out_of_images_attacked(
    digits_model, held_out, tiny_attack
):
    calls: list[tuple[int, int]] = []
    attack_dataset(
        digits_model,
        held_out,
        tiny_attack,
        limit=7,
        chunk_size=3,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (7, 7)
    assert {t for _, t in calls} == {7}
    done = [d for d, _ in calls]
    assert done == sorted(done) and {3, 6, 7} <= set(done)


def test_progress_moves_within_a_chunk_and_changes_nothing(digits_model, held_out):
    attack = SparseRS(pixels=3, budget=60, seed=0)
    calls: list[tuple[int, int]] = []
    run = attack_dataset(
        digits_model, held_out, attack, limit=20, progress=lambda d, t: calls.append((d, t))
    )
    assert run.n_attacked == 20 < 100, "one chunk"
    assert calls[-1] == (20, 20)
    assert any(0 < d < 20 for d, _ in calls[:-1]), "progress moves before the chunk ends"
    _same_results(run, attack_dataset(digits_model, held_out, attack, limit=20))


def test_summary_names_the_attack_budget_and_seed(digits_model, held_out):
    attack = SparseRS(pixels=3, budget=60, seed=7)
    summary = attack_dataset(digits_model, held_out, attack, limit=4).summary()
    assert summary["attack"] == "sparse-rs" and summary["params"] == attack.to_dict()
    assert summary["budget"] == 60 and summary["seed"] == 7
    again = SparseRS(**summary["params"])
    assert again == attack, "the summary repeats the attack exactly"
    json.dumps(summary)


def test_targeted_run_skips_images_of_the_target_class(digits_model, held_out):
    attack = PixelDE(pixels=3, population=20, generations=2, seed=0)
    run = attack_dataset(digits_model, held_out, attack, target=4, limit=30)
    assert run.target == 4 and run.n_attacked == 30
    assert bool((held_out.y[run.indices] != 4).all())
    assert bool((run.result.target == 4).all())
    assert all(row["target"] == 4 for row in run.images())
    correct = digits_model.predict(held_out.x).argmax(dim=1) == held_out.y
    assert run.n_correct == int(correct.sum())
    assert run.n_already_target == int((correct & (held_out.y == 4)).sum()) > 0
    assert run.summary()["n_already_target"] == run.n_already_target


def test_no_eligible_images_gives_an_empty_run(digits_model, held_out, tiny_attack, caplog):
    fours = held_out.subset(held_out.y == 4)
    with caplog.at_level(logging.WARNING, logger="pixelguard"):
        run = attack_dataset(digits_model, fours, tiny_attack, target=4)
    assert run.n_attacked == 0 and run.success_rate == 0.0
    assert run.summary()["median_queries"] is None and run.images() == []
    assert run.n_already_target == run.n_correct > 0
    reason = f"{run.n_correct} correctly classified, all already of the target class 4"
    assert run.idle_reason() == reason
    assert f"no image was attacked: {reason}" in caplog.text


def test_a_model_with_scrambled_classes_is_warned_about(
    digits_model, held_out, tiny_attack, caplog
):
    with caplog.at_level(logging.WARNING, logger="pixelguard"):
        run = attack_dataset(Scrambled(digits_model), held_out, tiny_attack, limit=5)
    assert run.clean_accuracy < 0.1 and len(run.warnings) == 1
    warning = run.warnings[0]
    assert warning.startswith(f"clean accuracy {run.clean_accuracy:.1%} on 397 images")
    for hint in ("near chance", "mean", "std", "--scale 255", "--layout nhwc", "--class-names"):
        assert hint in warning
    assert warning in caplog.text
    assert run.summary()["warnings"] == [warning]


def test_a_good_model_and_a_few_images_are_not_warned_about(
    digits_model, held_out, tiny_attack, caplog
):
    with caplog.at_level(logging.WARNING, logger="pixelguard"):
        good = attack_dataset(digits_model, held_out, tiny_attack, limit=5)
        few = attack_dataset(Scrambled(digits_model), held_out.subset(slice(0, 19)), tiny_attack)
    assert good.warnings == () and few.warnings == ()
    assert few.n_attacked == 0 and few.idle_reason() == (
        "the model classified none of the 19 images correctly"
    )
    assert "near chance" not in caplog.text


def test_a_seed_of_none_is_drawn_once_for_every_chunk(digits_model, held_out, monkeypatch):
    seeds: list[int | None] = []
    real_run = PixelDE.run

    def recording_run(self: PixelDE, *args, **kwargs):
        seeds.append(self.seed)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(PixelDE, "run", recording_run)
    attack = PixelDE(pixels=1, population=20, generations=1, seed=None)
    run = attack_dataset(digits_model, held_out, attack, limit=6, chunk_size=2)
    assert len(seeds) == 3, "one attack run per chunk"
    assert isinstance(seeds[0], int) and seeds == [seeds[0]] * 3, f"chunks got seeds {seeds}"
    assert run.result.seed == seeds[0] and run.result.params["seed"] == seeds[0]
    monkeypatch.undo()
    # The run is the one that seed, given up front, repeats image for image.
    fixed = dataclasses.replace(attack, seed=seeds[0])
    _same_results(run, attack_dataset(digits_model, held_out, fixed, limit=6, chunk_size=2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": 10}, ConfigError, "target class 10 is out of range"),
        ({"target": -1}, ConfigError, "out of range"),
        ({"limit": 0}, ConfigError, "limit"),
        ({"chunk_size": 0}, ConfigError, "chunk_size"),
        ({"resume": True}, ConfigError, "checkpoint folder"),
    ],
)
def test_bad_arguments_are_refused(digits_model, held_out, tiny_attack, kwargs, error, match):
    with pytest.raises(error, match=match):
        attack_dataset(digits_model, held_out, tiny_attack, **kwargs)


def test_images_of_another_shape_are_refused(digits_model, tiny_attack):
    data = Dataset(torch.zeros(4, 1, 9, 9), torch.zeros(4, dtype=torch.int64), None, "nines")
    with pytest.raises(ShapeError, match=r"\(1, 9, 9\).*\(1, 8, 8\)"):
        attack_dataset(digits_model, data, tiny_attack)


def test_labels_the_model_cannot_output_are_refused(digits_model, tiny_attack):
    data = Dataset(torch.zeros(2, 1, 8, 8), torch.tensor([0, 12]), None, "twelve")
    with pytest.raises(RangeError, match="12"):
        attack_dataset(digits_model, data, tiny_attack)


def test_interrupted_run_resumes_to_the_uninterrupted_result(
    tmp_path: Path, digits_model, held_out, tiny_attack
):
    options = {"limit": 12, "chunk_size": 5}
    reference = attack_dataset(digits_model, held_out, tiny_attack, **options)
    folder = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        attack_dataset(
            digits_model,
            held_out,
            tiny_attack,
            checkpoint_dir=folder,
            progress=Interrupt(5),
            **options,
        )
    state = json.loads((folder / "state.json").read_text())
    assert state["chunks_done"] == [0], "the first chunk is saved, the one in flight is lost"
    calls: list[int] = []
    resumed = attack_dataset(
        digits_model,
        held_out,
        tiny_attack,
        checkpoint_dir=folder,
        resume=True,
        progress=lambda done, total: calls.append(done),
        **options,
    )
    _same_results(resumed, reference)
    assert min(calls) > 5, "the finished chunk is not attacked again"
    assert json.loads((folder / "state.json").read_text())["chunks_done"] == [0, 1, 2]


def test_resume_without_a_checkpoint_starts_from_the_first_chunk(
    tmp_path, digits_model, held_out, tiny_attack
):
    run = attack_dataset(
        digits_model, held_out, tiny_attack, limit=4, checkpoint_dir=tmp_path / "new", resume=True
    )
    assert run.n_attacked == 4 and (tmp_path / "new" / "chunk-00000.npz").is_file()


def test_a_finished_checkpoint_resumes_without_attacking(
    tmp_path, digits_model, held_out, tiny_attack
):
    first = attack_dataset(digits_model, held_out, tiny_attack, limit=4, checkpoint_dir=tmp_path)

    def must_not_attack(done: int, total: int) -> None:
        assert done == total == 4

    again = attack_dataset(
        digits_model,
        held_out,
        tiny_attack,
        limit=4,
        checkpoint_dir=tmp_path,
        resume=True,
        progress=must_not_attack,
    )
    _same_results(first, again)
    assert again.result.wall_time == pytest.approx(first.result.wall_time)


def test_a_fresh_start_replaces_an_old_checkpoint(tmp_path, digits_model, held_out, tiny_attack):
    attack_dataset(
        digits_model, held_out, tiny_attack, limit=6, chunk_size=2, checkpoint_dir=tmp_path
    )
    attack_dataset(
        digits_model, held_out, tiny_attack, limit=2, chunk_size=2, checkpoint_dir=tmp_path
    )
    assert sorted(p.name for p in tmp_path.glob("chunk-*.npz")) == ["chunk-00000.npz"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"attack": PixelDE(pixels=2, population=20, generations=3, seed=0)},
            r"attack \(pixels: 3 -> 2\)",
        ),
        ({"limit": 5}, r"limit \(4 -> 5\)"),
        ({"target": 1}, r"target \(None -> 1\)"),
        ({"chunk_size": 3}, "chunk_size"),
    ],
    ids=["attack", "limit", "target", "chunk_size"],
)
def test_resume_refuses_a_checkpoint_of_another_run(
    tmp_path, digits_model, held_out, tiny_attack, change, match
):
    options = {"attack": tiny_attack, "limit": 4, "chunk_size": 2}
    attack_dataset(digits_model, held_out, checkpoint_dir=tmp_path, **options)
    with pytest.raises(ConfigError, match=match):
        attack_dataset(
            digits_model, held_out, checkpoint_dir=tmp_path, resume=True, **{**options, **change}
        )


def test_resume_refuses_other_data(tmp_path, digits_model, held_out, tiny_attack):
    attack_dataset(digits_model, held_out, tiny_attack, limit=4, checkpoint_dir=tmp_path)
    other = held_out.subset(slice(0, 300))
    with pytest.raises(ConfigError, match="data"):
        attack_dataset(
            digits_model, other, tiny_attack, limit=4, checkpoint_dir=tmp_path, resume=True
        )


def test_resume_refuses_another_model(tmp_path, digits_model, held_out, tiny_attack):
    attack_dataset(digits_model, held_out, tiny_attack, limit=4, checkpoint_dir=tmp_path)
    torch.manual_seed(0)
    other = TorchClassifier(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 8, 8), output="logits"
    )
    with pytest.raises(ConfigError, match="different model"):
        attack_dataset(other, held_out, tiny_attack, limit=4, checkpoint_dir=tmp_path, resume=True)


def test_damaged_checkpoint_is_reported(tmp_path, digits_model, held_out, tiny_attack):
    attack_dataset(
        digits_model, held_out, tiny_attack, limit=4, chunk_size=2, checkpoint_dir=tmp_path
    )
    (tmp_path / "chunk-00001.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception, match="damaged") as info:
        attack_dataset(
            digits_model,
            held_out,
            tiny_attack,
            limit=4,
            chunk_size=2,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    assert info.type.__name__ == "DataError"


def test_checkpoint_files_are_written_atomically(tmp_path, digits_model, held_out, tiny_attack):
    attack_dataset(
        digits_model, held_out, tiny_attack, limit=4, chunk_size=2, checkpoint_dir=tmp_path
    )
    assert not list(tmp_path.glob(".*tmp"))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["identity"]["attack"] == {"name": "pixel-de", **dataclasses.asdict(tiny_attack)}
