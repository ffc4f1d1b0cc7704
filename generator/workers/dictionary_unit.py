"""The model-wide concept dictionary as a unit of work, `<model>/dictionary` (issue 19 §2).

One unit per model, run before the class units of the same render (on the run's first device, in
this process): the token pass over the photos (`model_concepts.sample_tokens`), then the TopK SAE
(`sae.train_sae`) with its per-epoch checkpoint in the store, `<model>/dictionary/checkpoint.<hash>.pt`,
so that a killed run loses at most one epoch and the next run resumes there (the same result as an
uninterrupted run: `sae.py`'s guarantee). A finished dictionary is `<model>/dictionary/atoms.<hash>.safetensors`
plus the typed record `<model>/dictionary.json` (`records.DictionaryRecord`); the checkpoint is then removed.

Faults stay in the unit: anything but a StoreError is recorded as a failed record with its reason
(the checkpoint kept for the retry), and the run goes on with the other units. A first Ctrl-C stops
training after the epoch in progress is checkpointed (the unit stays pending, nothing recorded).
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch

from ..classes import imagenet_class
from ..errors import DictionaryError, StoreError
from ..images import SourceImage, demo_photos, load_class_images
from ..model_concepts import sample_tokens
from ..models import LoadedModel
from ..plan import ModelPlan, RenderJob, dictionary_state
from ..progress import LogBar
from ..records import DictionaryRecord
from ..sae import TopKSAE, quality, train_sae
from ..store import Store, atomic_write_bytes, dictionary_record, file_lock, write_dictionary_record
from .outcomes import Outcome, RenderSummary, record_batch
from .saving import now_iso, versions
from .worker import Worker, failure_reason

log = logging.getLogger("lens")

class _Stopped(Exception):
    """The run was asked to stop (Ctrl-C): raised after an epoch's checkpoint, so the next run resumes there."""


HELDOUT = 10  # every HELDOUT-th token (in a seeded order) is held out for R², L0 and the dead fraction


def run_dictionaries(job: RenderJob, store: Store, summary: RenderSummary, stopped: Callable[[], bool],
                     models: dict[str, LoadedModel] | None = None) -> None:
    """Train every selected model's dictionary that is not done with the current settings (failed ones retried)."""
    todo = [p for p in job.resolved.plans if p.has_dictionary and dictionary_state(store, p) != "done"]
    if not todo:
        return
    worker = Worker(job, job.devices[0], models=models)
    store.problems = worker.store.problems
    try:
        for plan in todo:
            if stopped():
                return
            outcome = run_dictionary(worker, plan, stopped)
            record_batch(store, summary, [outcome], worker.device, 1, outcome.seconds, plan.name)
    finally:
        worker.writer.close()
        worker.release_all()
        worker.unload()  # the class units' workers load their own


def run_dictionary(worker: Worker, plan: ModelPlan, stopped: Callable[[], bool] = lambda: False) -> Outcome:
    """Train, measure and save one model's dictionary; a failure is recorded (never raised, but a StoreError).

    One trainer per model and store: the unit holds `<model>/.dictionary.lock` (flock, released by the
    kernel if the process dies) while it trains, so a second render waits, then finds it done."""
    unit_id, store = f"{plan.name}/dictionary", worker.store
    with file_lock(store.root / plan.name / ".dictionary.lock"):
        if dictionary_state(store, plan) == "done":
            return Outcome(unit_id, "dictionary", "skipped", "already done")
        return _contained(worker, plan, unit_id, stopped)


def _contained(worker: Worker, plan: ModelPlan, unit_id: str, stopped: Callable[[], bool]) -> Outcome:
    store, h, t = worker.store, plan.dictionary_hash(), time.perf_counter()
    try:
        record = _train(worker, plan, h, stopped)
    except StoreError:
        raise
    except _Stopped:
        return Outcome(unit_id, "dictionary", "skipped", "stopped; the next run resumes from the checkpoint")
    except Exception as e:  # noqa: BLE001 - recorded, the other units go on
        reason = failure_reason(e)
        log.warning("%s failed: %s", unit_id, reason)
        old = dictionary_record(store, plan.name)
        if old is None or not (old.done and old.settings_hash == h):  # never overwrite a result
            failed = DictionaryRecord(status="failed", settings_hash=h, error=reason, attempts=1,
                                      finished_at=now_iso(), device=worker.device)
            write_dictionary_record(store, plan.name, failed)
        store.log({"event": "unit_failed", "units": [unit_id], "n": 1, "error": reason, "attempts": 1, "device": worker.device})
        return Outcome(unit_id, "dictionary", "failed", reason, seconds=time.perf_counter() - t)
    return Outcome(unit_id, "dictionary", "done", seconds=record.wall_time_s or 0.0)


def dictionary_photos(worker: Worker, plan: ModelPlan) -> list[SourceImage]:
    """The classes' `images:` (up to `dictionary.max_images` each), or every demo photo."""
    images = worker.job.request.images
    if images is None:
        return demo_photos()
    return [img for c in plan.dictionary_classes
            for img in load_class_images(images, imagenet_class(c).wnid, plan.dictionary.max_images)]


def _train(worker: Worker, plan: ModelPlan, h: str, stopped: Callable[[], bool]) -> DictionaryRecord:
    settings, store, started = plan.dictionary, worker.store, time.perf_counter()
    m = worker.model(plan.name, "dictionary")
    photos = dictionary_photos(worker, plan)
    if not photos:
        raise DictionaryError(f"{plan.name}: no usable photo for the dictionary; set `images:` in models.yaml (or --images)")
    tokens = sample_tokens(m, [p.image for p in photos], settings.tokens_per_image, settings.seed)
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(settings.seed))
    held = torch.zeros(len(tokens), dtype=torch.bool)
    if len(tokens) >= 2 * HELDOUT:  # too few tokens to spare any: measured on the training tokens
        held[order[::HELDOUT]] = True
    train, heldout = (tokens[~held], tokens[held]) if held.any() else (tokens, tokens)
    folder = store.root / plan.name / "dictionary"
    checkpoint = folder / f"checkpoint.{h}.pt"
    bar = _bar(worker, plan.name, settings.epochs * len(train))

    def on_epoch(epoch: int, loss: float) -> None:
        if stopped() and epoch < settings.epochs:
            raise _Stopped

    try:
        trained = train_sae(train, settings, checkpoint=checkpoint, device=worker.device, on_epoch=on_epoch,
                            on_batch=bar.update)
    finally:
        bar.close()
    figures = quality(trained.sae, heldout)
    atoms = f"dictionary/atoms.{h}.safetensors"
    _save_atoms(trained.sae, figures, store.root / plan.name / atoms)
    frequency = sorted(figures["frequency"])
    record = DictionaryRecord(
        status="done", settings_hash=h, settings=settings.model_dump(mode="json"), files={"atoms": atoms},
        wall_time_s=round(time.perf_counter() - started, 3), versions=versions(), finished_at=now_iso(),
        device=worker.device, attempts=1, n_images=len(photos), n_tokens=len(train), n_heldout=int(held.sum()),
        images_source="the demo photos" if worker.job.request.images is None else str(worker.job.request.images),
        r2=figures["r2"], l0=figures["l0"], dead_fraction=figures["dead_fraction"],
        frequency={"min": frequency[0], "median": frequency[len(frequency) // 2], "max": frequency[-1]},
        energy_top10=float(sum(sorted(figures["energy"], reverse=True)[:10])),
        epochs=trained.epochs_done, resumed_from=trained.resumed_from)
    write_dictionary_record(store, plan.name, record)
    for old in folder.glob("*"):  # the checkpoint, and atoms of other settings the record no longer lists
        if old.name != f"atoms.{h}.safetensors":
            old.unlink(missing_ok=True)
    return record


def _save_atoms(sae: TopKSAE, figures: dict, path) -> None:  # noqa: ANN001
    from safetensors.torch import save

    tensors = {name: p.detach().float().contiguous() for name, p in sae.state_dict().items()}
    tensors["frequency"] = torch.tensor(figures["frequency"])
    tensors["energy"] = torch.tensor(figures["energy"])
    atomic_write_bytes(path, save(tensors), fsync=True)


def _bar(worker: Worker, model: str, total: int):  # noqa: ANN202
    """tqdm over the tokens of every epoch (an ETA), or a log line a minute under --no-progress."""
    if not worker.job.progress:
        return LogBar(f"{model} dictionary", total)
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{model} dictionary", unit="token", unit_scale=True, dynamic_ncols=True, mininterval=0.5)
