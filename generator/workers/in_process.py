"""One device in this process: drains the run's `Schedule` (workers/schedule.py, the same rules as
worker processes); pass k+1 renders while pass k is written."""

from __future__ import annotations

from ..models import LoadedModel
from ..plan import RenderJob
from ..store import Store
from .control import Bars, StopFlag
from .outcomes import RenderSummary
from .schedule import Schedule, drain
from .worker import Worker


def run_in_process(job: RenderJob, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary,
                   models: dict[str, LoadedModel] | None = None) -> None:
    """Render every unit of the job this run can do on `job.devices[0]`, until the schedule is empty
    or the run is stopped (after the current pass is saved). `models`: as in run_render."""
    worker = Worker(job, job.devices[0], progress=bars.advance, models=models)
    store.problems = worker.store.problems  # one list of records moved aside
    schedule = Schedule(job.resolved, store, bars, summary)
    try:
        drain(worker, schedule.take, lambda item, outcomes, seconds: schedule.finished(item, outcomes, worker.device, seconds),
              lambda: stop.stopped)
    finally:
        worker.writer.close()
        worker.release_all()
