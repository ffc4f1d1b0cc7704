"""Several devices: one worker process per device. The parent holds the run's `Schedule` and
answers each worker's request for its next item; each worker runs the same loop as a single device
(`schedule.drain`), background writer included."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from typing import Any

import torch

from ..errors import StoreError
from ..plan import RenderJob
from ..store import Store
from .control import Bars, StopFlag
from .outcomes import RenderSummary
from .schedule import Item, Schedule, drain
from .worker import Worker


def _worker_main(job: RenderJob, index: int, device: str, inbox: Any, results: Any) -> None:
    """A worker process: asks the parent for items (it answers None when the run is over or stopped)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    else:  # CPU workers share the cores; oversubscribed OpenMP threads spin and crawl
        cpu_workers = sum(d == "cpu" for d in job.devices)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cpu_workers))
    worker = Worker(job, device, progress=lambda model, n: results.put(("progress", model, n)))

    def take(loaded: str | None, sizes: dict[str, int]) -> Item | None:
        results.put(("ready", index, loaded, sizes))
        return inbox.get()

    try:
        drain(worker, take, lambda item, outcomes, seconds: results.put(("done", item, device, seconds, outcomes)),
              lambda: False)
    except StoreError as e:  # the store cannot be written: tell the parent, stop this worker
        results.put(("fatal", str(e)))
    finally:
        worker.writer.close()
        worker.release_all()
        results.put(("exit", device))


def run_processes(job: RenderJob, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary) -> None:
    """One process per device, each fed by the parent's schedule; the first Ctrl-C lets every
    worker finish and save its current pass."""
    ctx = mp.get_context("spawn")
    inboxes, results = [ctx.Queue() for _ in job.devices], ctx.Queue()
    schedule = Schedule(job.resolved, store, bars, summary)
    procs = [ctx.Process(target=_worker_main, args=(job, i, d, inboxes[i], results), daemon=False)
             for i, d in enumerate(job.devices)]
    for p in procs:
        p.start()
    alive = len(procs)
    try:
        while alive:
            try:
                msg = results.get(timeout=0.5)
            except queue.Empty:
                if all(not p.is_alive() for p in procs):
                    break
                continue
            if msg[0] == "ready":
                _, i, loaded, sizes = msg
                inboxes[i].put(None if stop.stopped else schedule.take(loaded, sizes))
            elif msg[0] == "progress":
                bars.advance(msg[1], msg[2])
            elif msg[0] == "done":
                _, item, device, seconds, outcomes = msg
                schedule.finished(item, outcomes, device, seconds)
            elif msg[0] == "fatal":
                raise StoreError(msg[1])
            elif msg[0] == "exit":
                alive -= 1
    finally:
        for box in inboxes:  # a worker still asking gets its answer: stop
            box.put(None)
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
