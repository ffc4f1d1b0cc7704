"""`--executor ray`: the tiny zoo rendered by Ray tasks on a local Ray instance, each task on its own shard."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from generator.config import ConfigError
from generator.executors import plan_tasks, sub_shard
from generator.plan import RenderJob, Request, in_shard, resolve

from .rendering import assert_complete, done_events, render, unit_count

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is an optional extra, not installed: pip install 'lens-gallery[ray]'")


@pytest.fixture(autouse=True)
def _no_outside_cluster(monkeypatch):
    """Tests start their own local instance; never join a cluster named by the environment."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def test_sub_shards_partition_a_shard():
    pairs = [(m, c) for m in ("a", "b") for c in range(1000)]
    for shard in (None, (0, 1), (1, 3), (2, 5)):
        for n in (1, 2, 4):
            parts = [sub_shard(shard, k, n) for k in range(n)]
            for m, c in pairs:
                owners = [p for p in parts if in_shard(m, c, p)]
                assert len(owners) == (1 if in_shard(m, c, shard) else 0)


def test_tasks_follow_the_cluster_resources():
    assert plan_tasks({"CPU": 16.0, "GPU": 4.0}, "auto") == (4, True)
    assert plan_tasks({"CPU": 16.0, "GPU": 4.0}, "cpu") == (16, False)
    assert plan_tasks({"CPU": 2.0}, "auto") == (2, False)
    with pytest.raises(ConfigError, match="no GPU"):
        plan_tasks({"CPU": 2.0}, "cuda")


def test_devices_option_is_refused_with_ray(tiny_config, tmp_path):
    assert render(tiny_config, tmp_path / "d", "--executor", "ray", "--devices", "0,1") == 2


@needs_ray
def test_ray_renders_the_store_once(tiny_config, tmp_path):
    """Through the CLI: lens starts a local Ray instance, one CPU task per core, each on its shard."""
    out = tmp_path / "ray"
    assert render(tiny_config, out, "--executor", "ray", "--ray-address", "local") == 0
    assert_complete(out)
    assert done_events(out) == unit_count(out)  # no unit rendered twice
    starts = [e for e in events(out) if e["event"] == "run_start"]
    n = starts[0]["shard"][1]
    assert sorted(e["shard"][0] for e in starts) == list(range(n)) and all(e["shard"][1] == n for e in starts)
    assert all(e["devices"] == ["cpu"] for e in starts)
    assert os.getpid() not in {e["pid"] for e in events(out) if e["event"] == "batch_end"}  # Ray workers did it


@needs_ray
def test_ray_resumes_a_store_shared_with_local_runs(tiny_config, tiny_images, tmp_path):
    """A store half rendered by an ordinary shard run is completed by more Ray tasks than slots, nothing redone."""
    from generator.executors import run_render_ray

    out = tmp_path / "mixed"
    assert render(tiny_config, out, "--shard", "2/3") == 0  # class 2 only
    before = done_events(out)
    assert before > 0
    # The job `lens render --classes 1-3` makes from the tiny models.yaml (images and powerlaw spectrum from there)
    request = Request(config=tiny_config, out=out, models=["tiny"], classes=[1, 2, 3], parts=frozenset({"maco", "craft"}),
                      images=tiny_images, spectrum="powerlaw")
    job = RenderJob(resolve(request), progress=False)
    summary = run_render_ray(job, address="local", tasks=3)
    assert (summary.failed, summary.stopped, summary.exit_code) == (0, False, 0)
    assert summary.done == unit_count(out) - before
    assert_complete(out)
    assert done_events(out) == unit_count(out)  # the classes rendered before were not redone
