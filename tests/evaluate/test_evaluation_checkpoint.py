"""evaluate() shard by shard: checkpoints, resume, refusals and backend choice."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from pixelguard.errors import ConfigError, DataError, MissingDependencyError
from pixelguard.evaluate import attack_dataset
from pixelguard.evaluate.runner import evaluate
from pixelguard.evaluate.suite import build_suite


class StopAfter:
    """A progress callback that raises KeyboardInterrupt once ``images`` images are done."""

    def __init__(self, images: int) -> None:
        self.images = images

    def __call__(self, done: int, total: int, robust: dict[str, float]) -> None:
        if done >= self.images:
            raise KeyboardInterrupt


def _chunks_done(folder) -> list[int]:
    return json.loads((folder / "state.json").read_text())["chunks_done"]


def test_interrupted_evaluation_resumes_to_the_uninterrupted_result(
    tmp_path, digits_model, held_out, tiny_suite, sharding, sharded_evaluation, timing_free
):
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            digits_model,
            held_out,
            tiny_suite,
            checkpoint_dir=tmp_path,
            progress=StopAfter(8),
            **sharding,
        )
    assert _chunks_done(tmp_path) == [0, 1], "finished shards are saved, the rest is not"
    done: list[int] = []
    resumed = evaluate(
        digits_model,
        held_out,
        tiny_suite,
        checkpoint_dir=tmp_path,
        resume=True,
        progress=lambda images, total, robust: done.append(images),
        **sharding,
    )
    assert done[0] == 8 and done[-1] == 12, "only the missing shard is evaluated"
    assert done == sorted(set(done)), "progress only moves forward"
    assert timing_free(resumed) == timing_free(sharded_evaluation)
    assert _chunks_done(tmp_path) == [0, 1, 2]
    assert not list(tmp_path.glob(".*tmp")), "every file is written atomically"


def test_progress_reports_the_robust_accuracy_so_far(
    digits_model, held_out, tiny_suite, sharding, sharded_evaluation
):
    calls: list[tuple[int, int, dict[str, float]]] = []
    evaluate(
        digits_model,
        held_out,
        tiny_suite,
        progress=lambda *args: calls.append(args),
        **sharding,
    )
    done = [images for images, _, _ in calls]
    assert {total for _, total, _ in calls} == {12}
    assert done[0] == 0 and done[-1] == 12 and {4, 8} <= set(done)
    assert done == sorted(set(done)), "progress only moves forward"
    assert calls[0][2] == {}
    for images, _, robust in calls[1:]:
        finished = images // 4 * 4  # within a shard, the accuracy is over finished shards
        if not finished:
            assert robust == {}
            continue
        first = {
            b.label: float(b.robust[:finished].float().mean()) for b in sharded_evaluation.budgets
        }
        assert robust == pytest.approx(first), "robust accuracy over the shards done so far"
    assert calls[-1][2] == pytest.approx(sharded_evaluation.robust_accuracy())


def test_progress_moves_within_a_run_smaller_than_one_shard(
    digits_model, held_out, tiny_suite, timing_free
):
    done: list[int] = []
    evaluation = evaluate(
        digits_model,
        held_out,
        tiny_suite,
        limit=6,
        progress=lambda images, total, robust: done.append(images),
    )
    assert done[0] == 0 and done[-1] == 6
    assert any(0 < images < 6 for images in done), "the bar moves before the shard ends"
    assert done == sorted(set(done))
    quiet = evaluate(digits_model, held_out, tiny_suite, limit=6)
    assert timing_free(evaluation) == timing_free(quiet), "progress never changes results"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"suite": build_suite("pixel", pixels=(1, 3), budget=30, gradients=True)},
            r"suite \(entries\[0\]\.params\.budget: 20 -> 30\); rerun without --resume",
        ),
        ({"shard_size": 2}, r"shard_size \(4 -> 2\)"),
        ({"limit": 3}, r"limit \(4 -> 3\)"),
    ],
    ids=["suite", "shard_size", "limit"],
)
def test_resume_refuses_a_checkpoint_of_another_run(
    tmp_path, digits_model, held_out, tiny_suite, change, match
):
    options = {"suite": tiny_suite, "limit": 4, "shard_size": 4, "checkpoint_dir": tmp_path}
    evaluate(digits_model, held_out, **options)
    with pytest.raises(ConfigError, match=match) as refused:
        evaluate(digits_model, held_out, resume=True, **{**options, **change})
    assert len(str(refused.value)) < 250, "one short line, not the whole suite"


def test_a_refused_resume_names_the_changed_suite_in_brief(tmp_path, digits_model, held_out):
    options = {"limit": 2, "checkpoint_dir": tmp_path}
    small = build_suite("pixel", pixels=(1,), budget=10, gradients=True)
    evaluate(digits_model, held_out, small, **options)
    bigger = build_suite("full", pixels=(1, 3, 10), eps=(0.1,), budget=10, gradients=True)
    with pytest.raises(ConfigError) as refused:
        evaluate(digits_model, held_out, bigger, resume=True, **options)
    message = str(refused.value)
    assert "suite (name: 'pixel' -> 'full')" in message and len(message) < 250
    other_budgets = build_suite("pixel", pixels=(1, 3, 10), budget=10, gradients=True)
    budgets = r"suite \(budgets: \['pixels=1'\] -> \['pixels=1', 'pixels=3', 'pixels=10'\]\)"
    with pytest.raises(ConfigError, match=budgets):
        evaluate(digits_model, held_out, other_budgets, resume=True, **options)


def test_resume_refuses_another_sample_of_the_data_by_name(tmp_path, digits_model, held_out):
    def run(limit: int, seed: int, resume: bool = False):
        sample = held_out.sample(limit, seed)
        suite = build_suite("pixel", pixels=(1,), budget=10, gradients=True)
        info = {"limit": limit, "seed": seed, "spec": "held-out"}
        return evaluate(
            digits_model, sample, suite, checkpoint_dir=tmp_path, resume=resume, data_info=info
        )

    first = run(4, 0)
    assert first.to_dict()["data"]["limit"] == 4
    with pytest.raises(ConfigError, match=r"data \(limit: 4 -> 5\)"):
        run(5, 0, resume=True)
    with pytest.raises(ConfigError, match=r"data \(seed: 0 -> 1\)"):
        run(4, 1, resume=True)
    assert run(4, 0, resume=True).n_images == 4


def test_without_resume_an_old_checkpoint_is_replaced(
    tmp_path, digits_model, held_out, tiny_suite, timing_free
):
    other = build_suite("pixel", pixels=(2,), budget=20, gradients=True)
    evaluate(digits_model, held_out, other, limit=8, shard_size=4, checkpoint_dir=tmp_path)
    fresh = evaluate(
        digits_model, held_out, tiny_suite, limit=4, shard_size=4, checkpoint_dir=tmp_path
    )
    assert sorted(p.name for p in tmp_path.glob("chunk-*.npz")) == ["chunk-00000.npz"]
    assert list(fresh.robust_accuracy()) == ["pixels=1", "pixels=3"]
    resumed = evaluate(
        digits_model,
        held_out,
        tiny_suite,
        limit=4,
        shard_size=4,
        checkpoint_dir=tmp_path,
        resume=True,
        progress=StopAfter(5),  # would raise if a shard were evaluated again
    )
    assert timing_free(resumed) == timing_free(fresh)


def test_an_attack_checkpoint_is_not_resumed_as_an_evaluation(
    tmp_path, digits_model, held_out, tiny_attack, tiny_suite
):
    attack_dataset(digits_model, held_out, tiny_attack, limit=2, checkpoint_dir=tmp_path)
    with pytest.raises(DataError, match="not a pixelguard evaluation checkpoint"):
        evaluate(digits_model, held_out, tiny_suite, limit=2, checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "spark"}, "backend must be one of local, ray, got 'spark'"),
        ({"ray_address": "auto"}, "needs the ray backend"),
        ({"resume": True}, "checkpoint folder"),
        ({"shard_size": 0}, "shard_size must be at least 1"),
    ],
)
def test_bad_arguments_are_refused(digits_model, held_out, tiny_suite, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        evaluate(digits_model, held_out, tiny_suite, limit=2, **kwargs)


def test_the_ray_backend_without_ray_names_the_extra(
    monkeypatch, digits_model, held_out, tiny_suite
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(MissingDependencyError) as missing:
        evaluate(digits_model, held_out, tiny_suite, limit=2, backend="ray")
    assert "pip install ray" in str(missing.value)
    assert "pip install -e '.[ray]'" in str(missing.value), "the extra works from a clone"


def test_a_seed_of_none_is_drawn_once_and_kept_for_the_resume(tmp_path, digits_model, held_out):
    unseeded = build_suite("pixel", pixels=(1,), budget=20, gradients=True, seed=None)
    options = {"limit": 8, "shard_size": 4, "checkpoint_dir": tmp_path}
    with pytest.raises(KeyboardInterrupt):
        evaluate(digits_model, held_out, unseeded, progress=StopAfter(4), **options)
    seed = json.loads((tmp_path / "state.json").read_text())["seed"]
    resumed = evaluate(digits_model, held_out, unseeded, resume=True, **options)
    assert {stat.params["seed"] for stat in resumed.attacks} == {seed}


def test_a_ray_address_where_nothing_listens_fails_fast_in_one_line(
    digits_model, held_out, tiny_suite
):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a free port: nothing listens there once it closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match="no Ray cluster answers") as refused:
        evaluate(
            digits_model, held_out, tiny_suite, limit=2, backend="ray",
            ray_address=f"127.0.0.1:{port}",
        )  # fmt: skip
    assert "ray start --head" in str(refused.value) and "\n" not in str(refused.value)
