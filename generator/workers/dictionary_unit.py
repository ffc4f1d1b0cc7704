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
from pathlib import Path
from typing import Callable

import torch

from ..classes import imagenet_class
from ..craft import patch_side
from ..dictionary_atlas import Atlas, compute_atlas, regions
from ..errors import DictionaryError, StoreError
from ..images import VIEWS_PER_PHOTO, SourceImage, augmented, demo_photos, load_class_images
from ..model_concepts import sample_tokens
from ..models import LoadedModel
from ..plan import ModelPlan, RenderJob, dictionary_state
from ..progress import LogBar
from ..records import (
    TOP_CLASSES,
    TOP_COOCCUR,
    TOP_SHARED,
    AtlasAtom,
    AtlasRecord,
    AtomScore,
    AtomShare,
    ClassAtoms,
    ClassShare,
    DictionaryRecord,
)
from ..sae import TopKSAE, atoms_bytes, load_atoms, quality, train_sae
from ..sidefiles import REGION_SIDE, TOP_REGIONS, Codes, atoms_name, write_codes, write_region_strips
from ..store import Store, atomic_write_bytes, dictionary_record, file_lock, write_atlas_record, write_dictionary_record
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
        else:  # trained, then its atlas failed: the atoms are kept, the reason recorded (the next run retries the atlas)
            old.error = reason
            write_dictionary_record(store, plan.name, old)
        store.log({"event": "unit_failed", "units": [unit_id], "n": 1, "error": reason, "attempts": 1, "device": worker.device})
        return Outcome(unit_id, "dictionary", "failed", reason, seconds=time.perf_counter() - t)
    return Outcome(unit_id, "dictionary", "done", seconds=record.wall_time_s or 0.0)


def dictionary_views(worker: Worker, plan: ModelPlan) -> tuple[list[SourceImage], list[list[int]], int]:
    """The dictionary's photo views, the classes each counts for, and the number of photos.

    `images:`: each class's photos (up to `dictionary.max_images`), counting for their class. The demo
    photos: every one, counting for every class of the request (as CRAFT takes all of them where too
    few are predicted as the class). With `dictionary.augment`, each photo gives 10 views
    (`images.augmented`)."""
    images = worker.job.request.images
    if images is None:
        photos, classes = demo_photos(), [list(plan.dictionary_classes)] * len(demo_photos())
    else:
        photos, classes = [], []
        for c in plan.dictionary_classes:
            found = load_class_images(images, imagenet_class(c).wnid, plan.dictionary.max_images)
            photos += found
            classes += [[c]] * len(found)
    if not plan.dictionary.augment:
        return photos, classes, len(photos)
    views = augmented(photos)
    return views, [classes[i // VIEWS_PER_PHOTO] for i in range(len(views))], len(photos)


def _train(worker: Worker, plan: ModelPlan, h: str, stopped: Callable[[], bool]) -> DictionaryRecord:
    """Train (or reuse the stored atoms of these settings), then compute and write the atlas."""
    store, started = worker.store, time.perf_counter()
    m = worker.model(plan.name, "dictionary")
    views, classes, n_photos = dictionary_views(worker, plan)
    if not views:
        raise DictionaryError(f"{plan.name}: no usable photo for the dictionary; set `images:` in models.yaml (or --images)")
    old = dictionary_record(store, plan.name)
    atoms_path = store.root / plan.name / atoms_name(h)
    reused = old is not None and old.done and old.settings_hash == h and atoms_path.is_file()
    if reused:
        record, sae = old, load_atoms(atoms_path, plan.dictionary.k)  # trained before its atlas: not again
    else:
        record, sae = _fit(worker, plan, h, m, views, stopped)
        record.n_photos, record.augmented = n_photos, plan.dictionary.augment
        write_dictionary_record(store, plan.name, record)  # done: a failed atlas below never costs the training
    atlas_started = time.perf_counter()
    record.files.update(_write_atlas(worker, plan, h, m, sae, views, classes, n_photos, record.images_source or ""))
    record.timings_s = {**(record.timings_s or {}), "atlas": round(time.perf_counter() - atlas_started, 3)}
    record.error = None  # an earlier atlas failure, now mended
    record.wall_time_s = round((record.wall_time_s or 0.0) + time.perf_counter() - atlas_started if reused
                               else time.perf_counter() - started, 3)
    write_dictionary_record(store, plan.name, record)
    _prune(store.root / plan.name / "dictionary", h)
    return record


def _fit(worker: Worker, plan: ModelPlan, h: str, m: LoadedModel, views: list[SourceImage],
         stopped: Callable[[], bool]) -> tuple[DictionaryRecord, TopKSAE]:
    """The token sample, the SAE (resumed from its checkpoint), its figures and atoms file: a done record."""
    settings, store, started = plan.dictionary, worker.store, time.perf_counter()
    tokens = sample_tokens(m, [p.image for p in views], settings.tokens_per_image, settings.seed)
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(settings.seed))
    held = torch.zeros(len(tokens), dtype=torch.bool)
    if len(tokens) >= 2 * HELDOUT:  # too few tokens to spare any: measured on the training tokens
        held[order[::HELDOUT]] = True
    train, heldout = (tokens[~held], tokens[held]) if held.any() else (tokens, tokens)
    checkpoint = store.root / plan.name / "dictionary" / f"checkpoint.{h}.pt"
    bar = _bar(worker, f"{plan.name} dictionary", settings.epochs * len(train), "token")

    def on_epoch(epoch: int, loss: float) -> None:
        if stopped() and epoch < settings.epochs:
            raise _Stopped

    try:
        trained = train_sae(train, settings, checkpoint=checkpoint, device=worker.device, on_epoch=on_epoch,
                            on_batch=bar.update)
    finally:
        bar.close()
    figures = quality(trained.sae, heldout)
    atomic_write_bytes(store.root / plan.name / atoms_name(h), atoms_bytes(trained.sae, figures["frequency"], figures["energy"]),
                       fsync=True)
    checkpoint.unlink(missing_ok=True)
    frequency = sorted(figures["frequency"])
    record = DictionaryRecord(
        status="done", settings_hash=h, settings=settings.model_dump(mode="json"), files={"atoms": atoms_name(h)},
        wall_time_s=round(time.perf_counter() - started, 3), versions=versions(), finished_at=now_iso(),
        device=worker.device, attempts=1, n_images=len(views), n_tokens=len(train), n_heldout=int(held.sum()),
        images_source="the demo photos" if worker.job.request.images is None else str(worker.job.request.images),
        r2=figures["r2"], l0=figures["l0"], dead_fraction=figures["dead_fraction"],
        frequency={"min": frequency[0], "median": frequency[len(frequency) // 2], "max": frequency[-1]},
        energy_top10=float(sum(sorted(figures["energy"], reverse=True)[:10])),
        epochs=trained.epochs_done, resumed_from=trained.resumed_from)
    return record, trained.sae


def _write_atlas(worker: Worker, plan: ModelPlan, h: str, m: LoadedModel, sae: TopKSAE, views: list[SourceImage],
                 classes: list[list[int]], n_photos: int, source: str) -> dict[str, str]:
    """The atlas pass, its region strips and codes file, then the atlas record: the dictionary.json entries.
    `source`: the photos' origin, as the dictionary's record names it."""
    store, model_dir = worker.store, worker.store.root / plan.name
    bar = _bar(worker, f"{plan.name} dictionary atlas", len(views), "view")
    try:
        atlas = compute_atlas(m, sae, views, classes, plan.dictionary.seed, cooccur=TOP_COOCCUR, regions=TOP_REGIONS,
                              on_views=bar.update)
    finally:
        bar.close()
    shown = atlas.shown(TOP_SHARED)
    found = regions(m, sae, views, {a: atlas.peaks[a] for a in shown}, patch_side(m, plan.craft), REGION_SIDE)
    stems = {a: write_region_strips(model_dir, a, h, [r.crop for r in found[a]], [r.code_map for r in found[a]])
             for a in shown if found[a]}
    files = {}
    if atlas.grid is not None:
        files["codes"] = write_codes(model_dir, h, Codes([v.source for v in views], (atlas.grid.h, atlas.grid.w),
                                                         atlas.indices, atlas.values))
    record = atlas_record(atlas, h, set(shown), stems, source, plan.dictionary.augment, n_photos)
    files["atlas"] = write_atlas_record(store, plan.name, record)
    return files


def atlas_record(atlas: Atlas, h: str, shown: set[int], stems: dict[int, str], source: str, augmented: bool,
                 n_photos: int) -> AtlasRecord:
    """The typed atlas of `dictionary_atlas.compute_atlas`'s arrays."""
    atoms = [AtlasAtom(index=a, frequency=float(atlas.frequency[a]), energy=float(atlas.energy[a]), alive=bool(atlas.alive[a]),
                       shown=a in shown, xy=list(atlas.xy[a]) if a in atlas.xy else None,
                       classes=[ClassShare(class_index=c, share=s) for c, s in atlas.users(a, TOP_CLASSES)],
                       cooccur=[AtomScore(atom=b, score=j) for b, j in atlas.cooccur.get(a, [])], regions=stems.get(a))
             for a in range(len(atlas.frequency))]
    classes = {str(c): ClassAtoms(n_images=s["n_images"], top=[AtomShare(atom=a, share=v) for a, v in atlas.top_atoms(c, TOP_SHARED)],
                                  bias_share=s["bias"], residual_share=s["residual"])
               for c, s in atlas.shares.items()}
    return AtlasRecord(settings_hash=h, head_kind=atlas.head_kind, n_images=atlas.n_views, n_tokens=atlas.n_tokens,
                       images_source=source, augmented=augmented, n_photos=n_photos, atoms=atoms, classes=classes)


def _prune(folder: Path, h: str) -> None:
    """Files of other settings the record no longer lists (a checkpoint, atoms, atlas, regions, MACOs)."""
    for old in folder.rglob("*"):
        if old.is_file() and f".{h}." not in old.name and old.name != "macos.json" and not old.name.startswith("."):
            old.unlink(missing_ok=True)


def _bar(worker: Worker, label: str, total: int, unit: str):  # noqa: ANN202
    """tqdm (an ETA), or a log line a minute under --no-progress."""
    if not worker.job.progress:
        return LogBar(label, total)
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=unit, unit_scale=True, dynamic_ncols=True, mininterval=0.5)
