"""Several devices: one worker process per device, fed from one shared queue; CRAFT first, then
each model's concept visualizations."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from typing import Any

import torch

from ..config import load_zoo
from ..errors import StoreError
from ..plan import ModelPlan, RenderJob, model_plans, pending_units
from ..records import Unit
from ..spectrum import resolve_spectrum
from ..store import Store
from .control import Bars, StopFlag
from .outcomes import RenderSummary, batches, record_batch
from .worker import Worker, failure_reason, wnids_of


def _worker_main(job: RenderJob, device: str, tasks: Any, results: Any, stop: Any) -> None:
    """A worker process: pulls (kind, unit ids) items until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    else:  # CPU workers share the cores; oversubscribed OpenMP threads spin and crawl
        cpu_workers = sum(d == "cpu" for d in job.devices)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cpu_workers))
    worker = Worker(job, device, progress=lambda model, n: results.put(("progress", model, n)))
    try:
        while True:
            item = tasks.get()
            if item is None or stop.is_set():
                break
            kind, ids = item
            units = [_unit(i) for i in ids]
            t = time.perf_counter()
            try:
                outcomes = [worker.run_craft(units[0])] if kind == "craft" else worker.run_maco(units)
            except StoreError as e:  # the store cannot be written: tell the parent, stop this worker
                results.put(("fatal", str(e)))
                break
            except Exception as e:  # noqa: BLE001 - e.g. a model that fails to load
                outcomes = worker.record_failures(units, failure_reason(e))
            results.put(("done", kind, units[0].model, device, len(units), time.perf_counter() - t, outcomes))
    finally:
        worker.writer.close()
        worker.release_all()
        results.put(("exit", device))


def _unit(unit_id: str) -> Unit:
    return Unit.parse(unit_id)


def run_processes(job: RenderJob, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary) -> None:
    """A shared queue feeds one process per device. CRAFT items go first; a model's concept
    visualizations are queued as soon as all its CRAFT items are done."""
    ctx = mp.get_context("spawn")
    tasks, results, stop_event = ctx.Queue(), ctx.Queue(), ctx.Event()
    zoo = load_zoo(job.config)
    spectrum = resolve_spectrum(job.spectrum, job.out / "spectra", job.images)
    plans = model_plans(job, zoo, spectrum.id)
    size = job.batch_size or 16
    craft_left: dict[str, int] = {}
    queued = 0
    for plan in plans:
        units = pending_units(store, plan, wnids_of(plan.classes))
        if not units:
            continue
        bars.open(plan.name, len(units))
        crafts = [u for u in units if u.kind == "craft"]
        craft_left[plan.name] = len(crafts)
        for u in crafts:
            tasks.put(("craft", [u.id]))
        for batch in batches([u for u in units if u.kind == "maco"], size):
            tasks.put(("maco", [u.id for u in batch]))
        queued += len(crafts) + len(batches([u for u in units if u.kind == "maco"], size))
        if not crafts:
            queued += _queue_concepts(plan, store, tasks, size, bars, initial=units)
    procs = [ctx.Process(target=_worker_main, args=(job, d, tasks, results, stop_event), daemon=False) for d in job.devices]
    for p in procs:
        p.start()
    alive = len(procs)
    try:
        while alive:
            if stop.stopped and not stop_event.is_set():
                stop_event.set()
                for _ in procs:
                    tasks.put(None)
            try:
                msg = results.get(timeout=0.5)
            except queue.Empty:
                if all(not p.is_alive() for p in procs):
                    break
                continue
            if msg[0] == "fatal":
                stop_event.set()
                raise StoreError(msg[1])
            if msg[0] == "progress":
                bars.advance(msg[1], msg[2])
            elif msg[0] == "exit":
                alive -= 1
            else:
                _, kind, model, device, n, seconds, outcomes = msg
                record_batch(store, summary, outcomes, device, n, seconds, model)
                bars.advance(model, 1 if kind == "craft" else sum(o.status != "done" for o in outcomes))
                queued -= 1
                if kind == "craft":
                    craft_left[model] -= 1
                    if craft_left[model] == 0:
                        plan = next(p for p in plans if p.name == model)
                        queued += _queue_concepts(plan, store, tasks, size, bars)
                if queued == 0 and not stop.stopped:
                    for _ in procs:
                        tasks.put(None)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()


def _queue_concepts(plan: ModelPlan, store: Store, tasks: Any, size: int, bars: Bars, initial: list[Unit] | None = None) -> int:
    units = [u for u in pending_units(store, plan, wnids_of(plan.classes)) if u.kind == "concept"]
    known = sum(u.kind == "concept" for u in initial or [])
    bars.grow(plan.name, len(units) - known)
    chunks = batches(units, size)
    for chunk in chunks:
        tasks.put(("maco", [u.id for u in chunk]))
    return len(chunks)
