"""`lens render`'s entry: sweep leftovers, run on one device in this process or on several in worker
processes, report what is left undone."""

from __future__ import annotations

import logging
import time

from ..config import Zoo, load_zoo
from ..models import LoadedModel
from ..plan import RenderJob, model_plans, pending_units
from ..spectrum import resolve_spectrum
from ..store import Store, store_errors
from .control import Bars, StopFlag
from .in_process import run_in_process
from .outcomes import RenderSummary
from .processes import run_processes

log = logging.getLogger("lens")


def run_render(job: RenderJob, zoo: Zoo | None = None, models: dict[str, LoadedModel] | None = None) -> RenderSummary:
    """Render every pending unit of the job; returns counts (exit code 1 if any unit failed).

    `zoo` and `models` serve the Python API (`lens.render`): a zoo held in memory instead of
    `job.config`, and models already loaded (a notebook's module), used instead of loading them by
    name; then the job runs in this process, on its one device."""
    store = Store(job.out)
    with store_errors(store.root):
        store.root.mkdir(parents=True, exist_ok=True)
    swept = store.sweep_temporaries()
    if swept:
        log.info("removed %d temporary files left by interrupted workers", swept)
    stop = StopFlag()
    stop.install()
    started = time.time()
    store.log({"event": "run_start", "models": job.models, "classes": len(job.classes), "parts": sorted(job.parts),
               "devices": job.devices, "shard": job.shard, "batch_size": job.batch_size})
    bars = Bars(job.progress)
    summary = RenderSummary()
    try:
        if len(job.devices) == 1 or models:
            run_in_process(job, store, stop, bars, summary, zoo, models)
        else:
            run_processes(job, store, stop, bars, summary)
    finally:
        bars.close()
        summary.stopped = stop.stopped
    summary.problems = list(dict.fromkeys(store.problems + summary.problems))
    summary.images_source = "the demo photos (`images: null`)" if job.images is None else str(job.images)
    if not summary.stopped:
        summary.undone = undone_units(job, store, zoo)
    store.log({"event": "run_end", "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
               "no_images": summary.no_images, "undone": len(summary.undone), "stopped": summary.stopped,
               "seconds": round(time.time() - started, 2)})
    return summary


def undone_units(job: RenderJob, store: Store, zoo: Zoo | None = None) -> list[str]:
    """Selected units neither done, failed nor without images once the run ends (e.g. held by a run that died)."""
    zoo = zoo or load_zoo(job.config)
    spectrum = resolve_spectrum(job.spectrum, job.out / "spectra", job.images)
    return [u.id for plan in model_plans(job, zoo, spectrum.id) for u in pending_units(store, plan, include_failed=False)]
