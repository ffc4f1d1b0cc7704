"""Executors beyond one machine: a render spread over a Ray cluster (`lens render --executor ray`).

There is no scheduler here. Each Ray task runs the ordinary `run_render` on its own `--shard k/N`
of the job, and per-unit claims in the store keep tasks from rendering anything twice. Ray only
places the tasks: one task per GPU of the cluster (`num_gpus=1`), or one task per CPU where the
cluster has no GPU.

Requirements: the store, models.yaml, the weights and the images folder must be on a filesystem
that every Ray node mounts at the same path (give absolute paths), and lens-gallery must be
installed on every node. See docs/cluster.md.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .config import ConfigError, Zoo
from .plan import RenderJob, Resolved, model_plans
from .workers import Outcome, RenderSummary, run_render

log = logging.getLogger("lens")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'lens-gallery[ray]' (or pip install ray)") from None
    return ray


def absolute_job(job: RenderJob) -> RenderJob:
    """Paths made absolute, because Ray workers do not run in the driver's working directory."""
    request, zoo = job.request, job.resolved.zoo
    spectrum = request.spectrum
    if spectrum not in ("photos", "powerlaw", "images"):
        spectrum = str(Path(spectrum).resolve())
    request = dataclasses.replace(request, config=request.config.resolve(), out=request.out.resolve(),
                                  images=request.images.resolve() if request.images else None, spectrum=spectrum)
    zoo = Zoo(zoo.data, zoo.path.resolve(), zoo.root.resolve() if zoo.embedded else None)
    resolved = Resolved(request, zoo, job.resolved.spectrum, model_plans(request, zoo, job.resolved.spectrum.id))
    return dataclasses.replace(job, resolved=resolved)


def sub_shard(shard: tuple[int, int] | None, k: int, n: int) -> tuple[int, int]:
    """Part k of n of a shard: `hash % (N*n) == K + N*k` implies `hash % N == K`, and the n parts cover it."""
    big_k, big_n = shard or (0, 1)
    return big_k + big_n * k, big_n * n


def _shard_task(job: RenderJob, shard: tuple[int, int], use_gpu: bool) -> RenderSummary:
    """Body of one Ray task: the local render of one shard, on the GPU Ray assigned, if any."""
    import ray
    import torch

    if use_gpu:
        if not ray.get_gpu_ids() or not torch.cuda.is_available():
            raise RuntimeError(f"Ray assigned GPU {ray.get_gpu_ids()} but torch sees no CUDA device on this node")
        device = "cuda:0"  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    else:
        device = "cpu"
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        return run_render(dataclasses.replace(job, resolved=job.resolved.for_shard(shard), devices=[device], progress=False))
    finally:
        for s, handler in saved.items():  # run_render installs its Ctrl-C handler; give Ray its own back
            signal.signal(s, handler)


def plan_tasks(resources: dict[str, float], device: str) -> tuple[int, bool]:
    """(number of tasks, GPU tasks?) for the cluster's resources and `--device` (auto, cpu, cuda)."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "cpu" or (device == "auto" and gpus == 0):
        if cpus == 0:
            raise ConfigError("--executor ray: the Ray cluster has no CPU")
        return cpus, False
    if gpus == 0:
        raise ConfigError(f"--executor ray --device {device}: the Ray cluster has no GPU")
    return gpus, True


def run_render_ray(job: RenderJob, address: str | None = None, device: str = "auto", tasks: int | None = None) -> RenderSummary:
    """Render the job as Ray tasks, one per GPU (or CPU) of the cluster, each on its own shard.

    address: a cluster to join (`auto`, `ray://host:10001`, host:port), `local` for a new local
    instance, or None: RAY_ADDRESS, else a cluster started on this machine by `ray start`, else a
    new local instance. `tasks`: number of tasks (shards); default one per slot. More tasks than
    slots wait in Ray's queue, and Ray starts them as slots free up.
    """
    ray = _import_ray()
    job = absolute_job(job)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address)
    summary = RenderSummary()
    try:
        n, use_gpu = plan_tasks(ray.cluster_resources(), device)
        n = tasks or n
        remote = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0, max_calls=1)(_shard_task)
        shards = {remote.remote(job, sub_shard(job.request.shard, k, n), use_gpu): sub_shard(job.request.shard, k, n)
                  for k in range(n)}
        print(f"lens: ray: {n} {'GPU' if use_gpu else 'CPU'} tasks, one shard each, store {job.request.out}", file=sys.stderr)
        _collect(ray, shards, summary)
    finally:
        if started_here:
            ray.shutdown()
    if not summary.stopped:  # e.g. the units of a task whose node died: exit 1, a re-run finishes them
        from .store import Store
        from .workers import undone_units

        summary.undone = undone_units(job.resolved, Store(job.request.out))
    return summary


def _collect(ray: Any, shards: dict[Any, tuple[int, int]], summary: RenderSummary) -> None:
    """Adds up the task summaries as they finish. Ctrl-C asks every task to stop after its current
    batch (a second Ctrl-C stops waiting for them)."""
    pending = list(shards)
    while pending:
        try:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        except KeyboardInterrupt:
            summary.stopped = True
            print("\nlens: stopping the Ray tasks after their current batch (Ctrl-C again to stop waiting)", file=sys.stderr)
            for ref in pending:
                ray.cancel(ref, force=False)  # a KeyboardInterrupt in the task: its stop flag is set
            deadline = time.time() + 600
            while pending and time.time() < deadline:
                _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            return
        for ref in ready:
            k, n = shards[ref]
            try:
                part: RenderSummary = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a task that crashed, or a node that died
                error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                log.warning("ray task for shard %d/%d failed: %s", k, n, error)
                summary.add(Outcome(f"shard {k}/{n}", "task", "failed", error))
                continue
            summary.merge(part)
            print(f"lens: ray: shard {k}/{n}: {part.done} done, {part.failed} failed, {part.skipped} skipped", file=sys.stderr)
