"""The one scheduler of a run: the queue of units and the rules for handing them to devices.

One device in this process and worker processes on several devices drain the same `Schedule`
through the same loop (`drain`), so they follow the same rules:

- a model's CRAFT units go out before its visualizations (CRAFT creates the concept units);
- a class's concept visualizations join the queue as soon as its CRAFT is done;
- a MACO pass holds as many of one model's visualizations as the asking device's probe allows
  (`Worker.batch_size`; a device that has not probed a model yet is asked to first);
- a device keeps the model it has loaded while that model has work;
- units that a live run elsewhere holds stay queued until they can be taken; once nothing else
  is left they are waited for (taken over if the holder dies and its claim goes stale), at most
  `WAIT_FOR_CLAIMS_S`, after which they are reported undone;
- failed units are retried once per run (they are queued at the start), never within it.

Every finished item is recorded here: the summary, the `batch_end` line of runs.jsonl, the bars.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from ..errors import StoreError
from ..plan import TODO, Resolved, class_units, pending_units
from ..records import Unit
from ..store import Store
from .control import Bars
from .outcomes import Outcome, RenderSummary, record_batch
from .worker import Worker, failure_reason

WAIT_FOR_CLAIMS_S = 3600.0  # at the end of a run, how long to wait for units other live renders hold
MAX_REQUEUE = 3  # a unit skipped as claimed is queued again this often (more while its holder is alive)
CLAIMED = "claimed by another worker"


@dataclass
class Item:
    """What a device is told to do next: `craft` (one unit), `maco` (one pass of one model's units),
    `size` (probe the model's batch size, then ask again) or `wait` (finish pending writes or sleep, ask again)."""

    kind: str
    model: str = ""
    units: list[Unit] = field(default_factory=list)


class Schedule:
    """The queue of one run, per model: CRAFT units, then class and concept visualizations."""

    def __init__(self, resolved: Resolved, store: Store, bars: Bars, summary: RenderSummary):
        self.store, self.bars, self.summary = store, bars, summary
        self.plans = {p.name: p for p in resolved.plans}
        self.crafts: dict[str, deque[Unit]] = {name: deque() for name in self.plans}
        self.macos: dict[str, deque[Unit]] = {name: deque() for name in self.plans}
        self.in_flight: Counter[str] = Counter()  # units out on a device, by model
        self._requeued: Counter[Unit] = Counter()
        self._waiting_since: float | None = None
        for plan in resolved.plans:
            units = pending_units(store, plan, include_failed=True)
            for u in units:
                (self.crafts if u.kind == "craft" else self.macos)[plan.name].append(u)
            if units:
                bars.open(plan.name, len(units))

    def take(self, loaded: str | None, sizes: dict[str, int]) -> Item | None:
        """The next item for a device holding model `loaded` with probed batch sizes `sizes`; None: nothing left."""
        order = ([loaded] if loaded in self.plans else []) + [n for n in self.plans if n != loaded]
        held = False
        for name in order:
            crafts = self._free(self.crafts[name], 1)
            if crafts:
                return self._lend(Item("craft", name, crafts))
            if not self.macos[name]:
                held = held or bool(self.crafts[name])
                continue
            if name not in sizes:
                return Item("size", name)
            units = self._free(self.macos[name], sizes[name])
            if units:
                return self._lend(Item("maco", name, units))
            held = True
        if sum(self.in_flight.values()):
            return Item("wait")  # finishing work may queue concept units, or release claims
        if not held:
            return None
        if self._waiting_since is None:
            left = sum(len(q) for q in (*self.crafts.values(), *self.macos.values()))
            print(f"lens: waiting for {left} units held by another live render", file=sys.stderr)
            self._waiting_since = time.monotonic()
        elif time.monotonic() - self._waiting_since > WAIT_FOR_CLAIMS_S:
            return None  # reported as undone (exit 1); a later run finishes them
        return Item("wait")

    def finished(self, item: Item, outcomes: list[Outcome], device: str, seconds: float) -> None:
        """Record a finished item; a done CRAFT queues its class's concept visualizations."""
        self.in_flight[item.model] -= len(item.units)
        record_batch(self.store, self.summary, outcomes, device, len(item.units), seconds, item.model)
        self.bars.advance(item.model, 1 if item.kind == "craft" else sum(o.status != "done" for o in outcomes))
        by_id = {u.id: u for u in item.units}
        for o in outcomes:
            u = by_id.get(o.unit)
            if u is not None and o.status == "skipped" and o.error == CLAIMED and self._may_requeue(u):
                (self.crafts if u.kind == "craft" else self.macos)[item.model].append(u)
        if item.kind == "craft":
            self._queue_concepts(item.units[0])
        if not self.in_flight[item.model] and not self.crafts[item.model] and not self.macos[item.model]:
            self.bars.finish(item.model)

    def _queue_concepts(self, craft: Unit) -> None:
        plan = self.plans[craft.model]
        queued = set(self.macos[craft.model])
        todo = TODO + ("failed",)
        new = [u for u, state in class_units(self.store, plan, self.store.meta(plan.name, craft.class_index), craft.class_index)
               if u.kind == "concept" and state in todo and u not in queued]
        self.macos[craft.model].extend(new)
        self.bars.grow(craft.model, len(new))

    def _may_requeue(self, unit: Unit) -> bool:
        self._requeued[unit] += 1
        return self._requeued[unit] <= MAX_REQUEUE or self.store.claimed_by_live_worker(unit)

    def _free(self, queue: deque[Unit], n: int) -> list[Unit]:
        """Up to n units from the front of the queue that no live worker holds; the held ones stay, in order."""
        taken, kept = [], []
        while queue and len(taken) < n:
            u = queue.popleft()
            (kept if self.store.claimed_by_live_worker(u) else taken).append(u)
        queue.extendleft(reversed(kept))
        return taken

    def _lend(self, item: Item) -> Item:
        self.in_flight[item.model] += len(item.units)
        self._waiting_since = None
        return item


Take = Callable[[str | None, dict[str, int]], Item | None]
Report = Callable[[Item, list[Outcome], float], None]


def drain(worker: Worker, take: Take, report: Report, stopped: Callable[[], bool]) -> None:
    """One device's loop, in this process or a worker process: take items until none is left (or
    the run stops), render each, report its outcomes. MACO pass k+1 renders while the background
    writer saves pass k; a store that cannot be written (StoreError) ends the loop."""
    previous: tuple[Item, float, Callable[[], list[Outcome]]] | None = None

    def finish() -> None:
        nonlocal previous
        if previous is not None:
            (item, t, wait), previous = previous, None
            report(item, _guarded(worker, item, wait), time.perf_counter() - t)

    try:
        while not stopped():
            item = take(worker.loaded, worker.sizes())
            if item is None:
                return
            if item.kind == "wait":
                if previous is None:
                    time.sleep(1.0)
                finish()
            elif item.kind == "size":
                worker.probe(item.model)
            elif item.kind == "craft":
                finish()
                t = time.perf_counter()
                report(item, _guarded(worker, item, lambda: [worker.run_craft(item.units[0])]), time.perf_counter() - t)
            else:
                t = time.perf_counter()
                started = _guarded(worker, item, lambda: worker.start_maco(item.units), start=True)
                finish()  # pass k is written while pass k+1 (started above) renders
                previous = (item, t, started)
    finally:
        finish()


def _guarded(worker: Worker, item: Item, fn: Callable, start: bool = False):  # noqa: ANN202
    """fn(), or, when it raises anything but a StoreError, the item's units recorded as failed with the reason."""
    try:
        return fn()
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a model that fails to load: its units fail, the run goes on
        failed = worker.record_failures(item.units, failure_reason(e))
        return (lambda: failed) if start else failed
