"""`lens render`'s entry: sweep leftovers, run on one device in this process or on several in worker
processes, report what is left undone."""

from __future__ import annotations

import logging
import time

from ..models import LoadedModel
from ..plan import TODO, RenderJob, Resolved, dictionary_state, pending_units
from ..store import Store, store_errors
from .control import Bars, StopFlag
from .dictionary_matches import run_matches
from .dictionary_unit import run_dictionaries
from .in_process import run_in_process
from .outcomes import RenderSummary
from .processes import run_processes

log = logging.getLogger("lens")


def run_render(job: RenderJob, models: dict[str, LoadedModel] | None = None) -> RenderSummary:
    """Render every pending unit of the job; returns counts (exit code 1 if any unit failed).

    `models` serves the Python API (`lens.render`): models already loaded (a notebook's module),
    used instead of loading them by name; then the job runs in this process, on its one device."""
    request = job.request
    store = Store(request.out)
    with store_errors(store.root):
        store.root.mkdir(parents=True, exist_ok=True)
    swept = store.sweep_temporaries()
    if swept:
        log.info("removed %d temporary files left by interrupted workers", swept)
    stop = StopFlag()
    stop.install()
    started = time.time()
    store.log({"event": "run_start", "models": request.models, "classes": len(request.classes), "parts": sorted(request.parts),
               "devices": job.devices, "shard": request.shard, "batch_size": job.batch_size})
    bars = Bars(job.progress)
    summary = RenderSummary()
    try:
        run_dictionaries(job, store, summary, lambda: stop.stopped, models)  # model-wide units first (issue 19 §2)
        if not stop.stopped:
            run_matches(job, store, summary)  # the same concept in other models (issue 19 §5)
        if not stop.stopped and (len(job.devices) == 1 or models):
            run_in_process(job, store, stop, bars, summary, models)
        elif not stop.stopped:
            run_processes(job, store, stop, bars, summary)
    finally:
        bars.close()
        summary.stopped = stop.stopped
    summary.problems = list(dict.fromkeys(store.problems + summary.problems))
    summary.images_source = "the demo photos (`images: null`)" if request.images is None else str(request.images)
    if not summary.stopped:
        summary.undone = undone_units(job.resolved, store)
    store.log({"event": "run_end", "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
               "no_images": summary.no_images, "undone": len(summary.undone), "stopped": summary.stopped,
               "seconds": round(time.time() - started, 2)})
    return summary


def undone_units(resolved: Resolved, store: Store) -> list[str]:
    """Selected units neither done, failed nor without images once the run ends (e.g. held by a run that died)."""
    dictionaries = [f"{p.name}/dictionary" for p in resolved.plans if p.has_dictionary and dictionary_state(store, p) in TODO]
    return dictionaries + [u.id for plan in resolved.plans for u in pending_units(store, plan, include_failed=False)]
