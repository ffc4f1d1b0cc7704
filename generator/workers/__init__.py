"""Workers: render the planned units on one or more devices, safely resumable.

One worker per device loads each model once and renders its units: CRAFT per class, then MACO
batches in which class and concept objectives (of many classes) share every forward/backward pass.
With several devices, worker processes drain the same schedule under the same rules. Across machines, `--shard K/N`
splits the work and per-unit claims in the store keep concurrent runs from doing anything twice.

A file per job, in the order a run uses them:
    run.py         `lens render`'s entry (run_render) and what is left undone
    devices.py     which devices (--device, --devices)
    schedule.py    the one queue and its rules (CRAFT first, concepts once their CRAFT is done, passes
                   as large as each device's probe allows, waiting for live claims) and the device loop
    in_process.py  one device in this process
    processes.py   one worker process per device, each asking the parent's schedule for its next item
    worker.py      the Worker: one device, one model at a time; claims, retries, failures
    saving.py      a unit's files, then its meta.json record
    outcomes.py    outcomes and the run's summary (exit code)
    control.py     Ctrl-C and the progress bars
"""

from .control import Bars, StopFlag
from .devices import default_devices
from .outcomes import Outcome, RenderSummary
from .run import run_render, undone_units
from .saving import save_craft, save_maco, self_scores
from .worker import HEARTBEAT_S, ModelUnavailable, Worker

__all__ = ["HEARTBEAT_S", "Bars", "ModelUnavailable", "Outcome", "RenderSummary", "StopFlag", "Worker", "default_devices",
           "run_render", "save_craft", "save_maco", "self_scores", "undone_units"]
