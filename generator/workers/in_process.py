"""One device in this process: passes over the plan until nothing is left that this run can do;
batch k+1 renders while batch k is written."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from ..config import Zoo
from ..models import LoadedModel
from ..plan import ModelPlan, RenderJob, pending_units
from ..records import Unit
from ..store import Store
from .control import Bars, StopFlag
from .outcomes import Outcome, RenderSummary, batches, record_batch
from .worker import ModelUnavailable, Worker

log = logging.getLogger("lens")


WAIT_FOR_CLAIMS_S = 3600.0  # at the end of a run, how long to wait for units other live renders hold


def run_in_process(job: RenderJob, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary,
                   zoo: Zoo | None = None, models: dict[str, LoadedModel] | None = None) -> None:
    """Passes over the plan until nothing is left that this run can do: units held by other live
    workers are waited for, and taken over if their holder dies (its claim goes stale).
    `zoo` and `models`: as in run_render."""
    worker = Worker(job, job.devices[0], progress=bars.advance, zoo=zoo, models=models)
    store.problems = worker.store.problems  # one list of records moved aside
    try:
        first, waited, progress = True, 0.0, -1
        while True:
            for plan in worker.plans.values():
                if stop.stopped:
                    return
                _render_model(worker, plan, store, stop, bars, summary, include_failed=first)
            if stop.stopped:
                return
            first = False
            left = [u for plan in worker.plans.values() for u in pending_units(store, plan, include_failed=False)]
            if not left:
                return
            if not all(store.claimed_by_live_worker(u) for u in left):
                if summary.done + summary.failed + summary.no_images == progress:
                    return  # a pass that changed nothing would loop forever; the rest is reported undone
                progress = summary.done + summary.failed + summary.no_images
                continue  # a holder died or released without finishing: render what it left
            if not waited:
                print(f"lens: waiting for {len(left)} units held by another live render", file=sys.stderr)
                waited = time.monotonic()
            elif time.monotonic() - waited > WAIT_FOR_CLAIMS_S:
                return  # reported as undone (exit 1); a later run finishes them
            time.sleep(1.0)
    finally:
        worker.writer.close()
        worker.release_all()


def _render_model(worker: Worker, plan: ModelPlan, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary,
                  include_failed: bool) -> None:
    units = pending_units(store, plan, include_failed=include_failed)
    units = [u for u in units if not store.claimed_by_live_worker(u)]
    if not units:
        return
    try:  # a model that cannot be loaded fails all its units once, with the reason; the others go on
        worker.model(plan.name, "maco" if all(u.kind == "maco" for u in units) else "craft")
    except ModelUnavailable as e:
        blocked = units if plan.name in worker._load_errors else [u for u in units if u.kind != "maco"]
        log.warning("%s: cannot be used (%s); its %d units are recorded as failed", plan.name, e, len(blocked))
        for o in worker.record_failures(blocked, str(e)):
            summary.add(o)
        units = [u for u in units if u not in set(blocked)]
        if not units:
            return
    if plan.name in worker._concept_errors:  # concept units of earlier CRAFTs cannot be rendered either
        include_failed = False
    bars.open(plan.name, len(units))
    for u in [u for u in units if u.kind == "craft"]:
        if stop.stopped:
            return
        t = time.perf_counter()
        o = worker.run_craft(u)
        record_batch(store, summary, [o], worker.device, 1, time.perf_counter() - t, plan.name)
        bars.advance(plan.name, 1)
    todo = [u for u in pending_units(store, plan, include_failed=include_failed) if u.kind != "craft"
            and (u in units or u.kind == "concept") and not store.claimed_by_live_worker(u)]
    bars.grow(plan.name, len(todo) - sum(u.kind != "craft" for u in units))
    previous = None  # (batch, start time, finish): written while the next batch renders

    def finish(started: tuple[list[Unit], float, Callable[[], list[Outcome]]] | None) -> None:
        if started is not None:
            batch, t, wait = started
            outcomes = wait()
            record_batch(store, summary, outcomes, worker.device, len(batch), time.perf_counter() - t, plan.name)
            bars.advance(plan.name, sum(o.status != "done" for o in outcomes))

    try:
        for batch in batches(todo, worker.batch_size(worker.model(plan.name, "maco"), plan.maco)):
            if stop.stopped:
                return
            t = time.perf_counter()
            older, previous = previous, (batch, t, worker.start_maco(batch))  # render batch k+1, then finish batch k
            finish(older)
    finally:
        finish(previous)
    bars.finish(plan.name)
