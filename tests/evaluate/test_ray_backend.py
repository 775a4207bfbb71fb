"""The Ray backend: shards as Ray tasks give the local evaluation, resumed or not."""

from __future__ import annotations

import json

import pytest

from pixelguard.evaluate.runner import evaluate

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-core Ray cluster for this module."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_shards_give_the_local_evaluation(
    ray_cluster, tmp_path, digits_model, held_out, tiny_suite, sharding, sharded_evaluation,
    timing_free,
):  # fmt: skip
    done: list[int] = []
    evaluation = evaluate(
        digits_model,
        held_out,
        tiny_suite,
        backend="ray",
        checkpoint_dir=tmp_path,
        progress=lambda images, total, robust: done.append(images),
        **sharding,
    )
    assert timing_free(evaluation) == timing_free(sharded_evaluation)
    assert done == [0, 4, 8, 12], "progress moves shard by shard as results arrive"
    assert json.loads((tmp_path / "state.json").read_text())["chunks_done"] == [0, 1, 2]


def test_ray_resumes_a_local_checkpoint(
    ray_cluster, tmp_path, digits_model, held_out, tiny_suite, sharding, sharded_evaluation,
    timing_free,
):  # fmt: skip
    def stop_after_one_shard(images: int, total: int, robust: dict[str, float]) -> None:
        if images >= sharding["shard_size"]:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(
            digits_model,
            held_out,
            tiny_suite,
            checkpoint_dir=tmp_path,
            progress=stop_after_one_shard,
            **sharding,
        )
    resumed = evaluate(
        digits_model,
        held_out,
        tiny_suite,
        backend="ray",
        checkpoint_dir=tmp_path,
        resume=True,
        **sharding,
    )
    assert timing_free(resumed) == timing_free(sharded_evaluation)
