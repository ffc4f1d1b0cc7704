"""Workers: render the planned units on one or more devices, safely resumable.

One worker per device loads each model once and renders its units: CRAFT per class, then MACO
batches in which class and concept objectives (of many classes) share every forward/backward pass.
With several devices, worker processes are fed from one shared queue. Across machines, `--shard K/N`
splits the work and per-unit claims in the store keep concurrent runs from doing anything twice.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import __version__, concept_data, maco
from . import craft as craft_method
from .classes import imagenet_class
from .config import MacoSettings, load_zoo
from .errors import LensError, StoreError
from .images import SourceImage, demo_photos, load_class_images
from .models import LoadedModel, load_model
from .pipeline import Pending, Writer
from .plan import ModelPlan, RenderJob, model_plans, part_done, pending_units, unit_state
from .progress import LogBar
from .records import Attribution, Concept, CraftRecord, Crop, MacoRecord, Meta, ModelCard, Unit
from .spectrum import Spectrum, resolve_spectrum
from .store import Claim, Store, encode_jpeg, encode_png, store_errors

log = logging.getLogger("lens")
HEARTBEAT_S = 30.0
WAIT_FOR_CLAIMS_S = 3600.0  # at the end of a run, how long to wait for units other live renders hold


# ----------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    unit: str
    kind: str
    status: str  # done, failed, skipped, no-images
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RenderSummary:
    """What a run did. Exit code: 130 if stopped, else 1 if a unit failed or remains undone, else 0."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    no_images: int = 0
    stopped: bool = False
    failures: list[Outcome] = field(default_factory=list)
    skipped_outcomes: list[Outcome] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)  # unit ids still not done when the run ended
    problems: list[str] = field(default_factory=list)  # unusable meta.json files moved aside, etc.
    images_source: str | None = None

    def add(self, o: Outcome) -> None:
        name = o.status.replace("-", "_")
        setattr(self, name, getattr(self, name) + 1)
        if o.status == "failed":
            self.failures.append(o)
        elif o.status == "skipped":
            self.skipped_outcomes.append(o)

    def merge(self, other: RenderSummary) -> None:
        for name in ("done", "failed", "skipped", "no_images"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures += other.failures
        self.skipped_outcomes += other.skipped_outcomes
        self.undone += other.undone
        self.problems += other.problems
        self.stopped = self.stopped or other.stopped
        self.images_source = self.images_source or other.images_source

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return 130
        return 1 if self.failed or self.undone else 0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import timm

    return {"generator": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": sys.version.split()[0]}


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def wnids_of(classes: Iterable[int]) -> dict[int, str]:
    return {c: imagenet_class(c).wnid for c in classes}


# ----------------------------------------------------------------------------- one worker


class Worker:
    """Renders units on one device. Holds one model at a time (units arrive grouped by model)."""

    def __init__(self, job: RenderJob, device: str, progress: Callable[[str, float], None] | None = None):
        self.job = job
        self.zoo = load_zoo(job.config)
        self.store = Store(job.out)
        self.device = device
        self.spectrum: Spectrum = resolve_spectrum(job.spectrum, job.out / "spectra", job.images)
        self.plans = {p.name: p for p in model_plans(job, self.zoo, self.spectrum.id)}
        self.progress = progress or (lambda model, n: None)
        self._model: LoadedModel | None = None
        self._demo_by_class: dict[int, list[SourceImage]] | None = None
        self._claims: list[Claim] = []
        self._batch_size: dict[str, int] = {}
        # Deterministic load errors, kept for the run: a model is tried once, not once per unit.
        self._load_errors: dict[str, str] = {}
        self._concept_errors: dict[str, str] = {}  # loads without its concept layer: MACO only
        self.writer = Writer()  # PNG encoding and meta.json writes, off the thread that drives the device
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    # -------------------------------------------------------------- model and inputs
    def model(self, name: str, kind: str = "craft") -> LoadedModel:
        """The loaded model for a unit of `kind`; raises ModelUnavailable (once per run and model, then
        from memory) when it cannot be built, loaded or split. Class MACOs never need the concept layer."""
        if name in self._load_errors:
            raise ModelUnavailable(self._load_errors[name])
        if kind != "maco" and name in self._concept_errors:
            raise ModelUnavailable(self._concept_errors[name])
        if self._model is None or self._model.name != name:
            self._model, self._demo_by_class = None, None
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            entry = self.zoo.model(name)
            plain = entry.model_copy(update={"concept_layer": "features"})
            if "craft" not in self.plans[name].parts:
                entry = plain  # `--what maco`: the concept layer is not used, so it cannot stop the run
            try:
                self._model = load_model(entry, self.zoo.root, self.device)
            except Exception as e:  # noqa: BLE001 - recorded on every unit of this model, the run goes on
                reason = _reason(e)
                if entry.concept_layer == "features":
                    self._load_errors[name] = reason
                    raise ModelUnavailable(reason) from e
                try:  # is it the concept layer? Then the class visualizations can still be rendered.
                    self._model = load_model(plain, self.zoo.root, self.device)
                except Exception:  # noqa: BLE001
                    self._load_errors[name] = reason
                    raise ModelUnavailable(reason) from e
                self._concept_errors[name] = reason
            self._write_model_card(self._model, self.zoo.model(name).concept_layer)
            if kind != "maco" and name in self._concept_errors:
                raise ModelUnavailable(self._concept_errors[name])
        return self._model

    def _write_model_card(self, m: LoadedModel, concept_layer: str) -> None:
        def change(card: ModelCard) -> None:
            card.arch, card.weights, card.key_map = m.entry.arch, m.entry.weights.describe(), m.entry.key_map
            card.description, card.params, card.preprocess = m.entry.description, m.num_params, m.preprocess.as_dict()
            card.concept_layer = concept_layer

        self.store.update_model_card(m.name, change)
        concept_data.write_head(self.store, m, concept_layer)  # the atlas's class rows, once per model

    def class_images(self, m: LoadedModel, class_index: int, limit: int) -> list[SourceImage]:
        """The class's images from the configured folder, else the demo photos this model assigns to it."""
        if self.job.images is not None:
            return load_class_images(self.job.images, imagenet_class(class_index).wnid, limit)
        if self._demo_by_class is None:
            photos = demo_photos()
            views, x = craft_method.make_views(photos, m)
            with torch.no_grad():
                predicted = m.logits(x).argmax(-1).tolist()
            self._demo_by_class = {}
            for photo, c in zip(photos, predicted):
                self._demo_by_class.setdefault(c, []).append(photo)
        return self._demo_by_class.get(class_index, [])

    def batch_size(self, m: LoadedModel, settings: MacoSettings) -> int:
        """Objectives per pass: the user's, else what fits this device; an out-of-memory halving sticks."""
        if m.name not in self._batch_size:
            self._batch_size[m.name] = self.job.batch_size or maco.probe_batch_size(m, settings, self.spectrum)
        return self._batch_size[m.name]

    # -------------------------------------------------------------- claims
    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            self.store.refresh(list(self._claims))

    def _claim(self, unit: Unit) -> Claim | None:
        c = self.store.claim(unit)
        if c is not None:
            self._claims.append(c)
        return c

    def _release(self, claim: Claim) -> None:
        self.store.release(claim)
        with contextlib.suppress(ValueError):
            self._claims.remove(claim)

    def release_all(self) -> None:
        for c in list(self._claims):
            self._release(c)

    def _still_needed(self, unit: Unit) -> bool:
        """Re-checked after claiming: another worker may have finished it since planning."""
        plan = self.plans[unit.model]
        meta = self.store.meta(unit.model, unit.class_index)
        if unit.kind == "concept":  # its concept must still exist under a done CRAFT
            craft = Unit(unit.model, unit.class_index, "craft")
            if meta is None or meta.concept(unit.concept) is None or unit_state(self.store, plan, meta, craft) != "done":  # type: ignore[arg-type]
                return False
        return unit_state(self.store, plan, meta, unit) not in ("done", "no-images")

    # -------------------------------------------------------------- CRAFT
    def run_craft(self, unit: Unit) -> Outcome:
        claim = self._claim(unit)
        if claim is None:
            return Outcome(unit.id, "craft", "skipped", "claimed by another worker")
        try:
            if not self._still_needed(unit):
                return Outcome(unit.id, "craft", "skipped", "already done")
            return self._attempts(unit, lambda: self._craft_once(unit))
        finally:
            self._release(claim)

    def _craft_once(self, unit: Unit) -> tuple[str, float]:
        plan, m = self.plans[unit.model], self.model(unit.model, "craft")
        t = time.perf_counter()
        images = self.class_images(m, unit.class_index, limit=max(plan.craft.max_images * 4, 1000))
        result = craft_method.run_craft(m, images, unit.class_index, plan.craft)
        seconds = time.perf_counter() - t
        status = save_craft(self.store, plan, unit.class_index, result, m, seconds, self.device)
        return status, seconds

    # -------------------------------------------------------------- MACO
    def run_maco(self, units: list[Unit]) -> list[Outcome]:
        """Class and concept visualizations of one model, rendered together in batches."""
        return self.start_maco(units)()

    def start_maco(self, units: list[Unit]) -> Callable[[], list[Outcome]]:
        """Claim and render `units` now; their files and meta.json are written in the background. The returned
        function waits for those writes, releases the claims and returns the outcomes: call it after starting the
        next batch, and the device renders while this one is written."""
        outcomes, claimed = [], []
        for u in units:
            c = self._claim(u)
            if c is None:
                outcomes.append(Outcome(u.id, u.kind, "skipped", "claimed by another worker"))
            elif not self._still_needed(u):
                self._release(c)
                outcomes.append(Outcome(u.id, u.kind, "skipped", "already done"))
            else:
                claimed.append((u, c))
        def release() -> None:
            for _, c in claimed:
                self._release(c)

        try:
            finish = self._maco_claimed([u for u, _ in claimed]) if claimed else list
        except BaseException:
            release()
            raise

        def done() -> list[Outcome]:
            try:
                return outcomes + finish()
            finally:
                release()

        return done

    def _maco_claimed(self, units: list[Unit]) -> Callable[[], list[Outcome]]:
        plan = self.plans[units[0].model]
        try:
            m = self.model(plan.name, "concept" if any(u.kind == "concept" for u in units) else "maco")
        except ModelUnavailable as e:
            failed = self.record_failures(units, str(e))
            return lambda: failed
        objectives, failures = {}, []
        for u in units:
            try:
                objectives[u] = self._objective(u, m)
            except Exception as e:  # noqa: BLE001 - a broken unit must not stop the batch
                failures.append(self._record_failure(u, f"{type(e).__name__}: {e}", 1))
        outcomes = list(failures)
        writes: Pending[tuple[Unit, int, float]] = Pending()
        attempt, todo = 1, list(objectives)
        while todo:
            t = time.perf_counter()
            try:
                renders = self._render_backoff(m, plan, [objectives[u] for u in todo])
            except Exception as e:  # noqa: BLE001 - includes OOM at batch size 1
                error = f"{type(e).__name__}: {e}"
                log.warning("MACO batch of %d failed (attempt %d): %s", len(todo), attempt, error)
                renders = [None] * len(todo)
            seconds = (time.perf_counter() - t) / max(1, len(todo))
            retry = []
            ok = [(u, r) for u, r in zip(todo, renders) if r is not None and r.finite]
            scored = self_scores(m, [(u, r) for u, r in ok if u.kind == "maco"])  # device work stays on this thread
            for u, r in zip(todo, renders):
                if r is not None and r.finite:
                    writes.add((u, attempt, seconds), self.writer.submit(
                        save_maco, self.store, plan, u, r, m, objectives[u], seconds, len(todo), self.device, attempt,
                        scored.get(u.id)))
                elif attempt <= self.job.retries:
                    retry.append(u)
                else:
                    reason = "objective or image became NaN/inf" if r is not None else error
                    outcomes.append(self._record_failure(u, reason, attempt))
            # A NaN is deterministic for a seed: a retry gets a fresh one (recorded in meta.json).
            for u in retry:
                key = objectives[u].key.split("#")[0] + f"#retry{attempt}"
                objectives[u] = maco.Objective(key, objectives[u].class_index, objectives[u].direction)
            attempt, todo = attempt + 1, retry

        def finish() -> list[Outcome]:
            for (u, tries, secs), error in writes.wait():
                if error is None:
                    outcomes.append(Outcome(u.id, u.kind, "done", seconds=secs))
                elif isinstance(error, StoreError):  # the store cannot be written: no unit can succeed, stop the run
                    raise error
                else:
                    log.warning("%s: writing the result failed: %s", u.id, error)
                    outcomes.append(self._record_failure(u, f"writing the result failed: {type(error).__name__}: {error}", tries))
            return outcomes

        return finish

    def _objective(self, unit: Unit, m: LoadedModel) -> maco.Objective:
        if unit.kind == "maco":
            return maco.class_objective(unit.class_index)
        k = unit.concept
        meta = self.store.meta(unit.model, unit.class_index)
        if meta is None or meta.craft is None or "directions" not in meta.craft.files:
            raise RuntimeError("CRAFT record or its concept directions are gone")
        path = self.store.class_dir(unit.model, unit.class_index) / meta.craft.files["directions"]
        directions = np.load(path, allow_pickle=False)
        return maco.direction_objective(f"concept/{unit.class_index:04d}/{k}", torch.from_numpy(directions[k]))

    def _render_backoff(self, m: LoadedModel, plan: ModelPlan, objectives: list[maco.Objective]) -> list[maco.MacoRender]:
        """Render in batches of the device's size; out of memory halves the batch and retries."""
        size = min(self.batch_size(m, plan.maco), len(objectives))
        out: list[maco.MacoRender] = []
        while len(out) < len(objectives):
            chunk = objectives[len(out) : len(out) + size]
            try:
                out += maco.render(m, chunk, plan.maco, self.spectrum,
                                   progress=lambda _, n=len(chunk): self.progress(plan.name, n / plan.maco.steps))
            except Exception as e:
                if not is_out_of_memory(e) or size == 1:
                    raise
                size = max(1, size // 2)
                self._batch_size[m.name] = size
                log.warning("%s: out of memory, batch size halved to %d", m.name, size)
                self.store.log({"event": "oom", "model": m.name, "batch_size": size, "device": self.device})
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
        return out

    # -------------------------------------------------------------- failures
    def _attempts(self, unit: Unit, once: Callable[[], tuple[str, float]]) -> Outcome:
        for attempt in range(1, self.job.retries + 2):
            try:
                status, seconds = once()
                return Outcome(unit.id, unit.kind, status, seconds=seconds)
            except StoreError:  # the store cannot be written: no unit can succeed, stop the run
                raise
            except (LensError, ModelUnavailable) as e:  # configuration or model problem: retrying cannot help
                return self._record_failure(unit, str(e), attempt)
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                error = f"{type(e).__name__}: {e}"
                log.warning("%s failed (attempt %d): %s", unit.id, attempt, error)
                log.debug(traceback.format_exc())
        return self._record_failure(unit, error, attempt)

    def _record_failure(self, unit: Unit, error: str, attempts: int) -> Outcome:
        return self.record_failures([unit], error, attempts)[0]

    def record_failures(self, units: list[Unit], error: str, attempts: int = 1) -> list[Outcome]:
        """Record units as failed with the reason, one meta.json update per class."""
        by_class: dict[tuple[str, int], list[Unit]] = {}
        for u in units:
            by_class.setdefault((u.model, u.class_index), []).append(u)
        for (model, class_index), group in by_class.items():
            plan = self.plans[model]

            def change(meta: Meta, group: list[Unit] = group, plan: ModelPlan = plan) -> None:
                for u in group:
                    h = plan.unit_hash(u)
                    if part_done(meta.record(u), h):
                        continue  # another worker finished it meanwhile: never overwrite a result
                    cls = CraftRecord if u.kind == "craft" else MacoRecord
                    meta.set_record(u, cls(status="failed", settings_hash=h, error=error, attempts=attempts,
                                           finished_at=_now(), device=self.device))

            self.store.update_meta(model, class_index, change)
        self.store.log({"event": "unit_failed", "units": [u.id for u in units[:50]], "n": len(units), "error": error,
                        "attempts": attempts, "device": self.device})
        return [Outcome(u.id, u.kind, "failed", error) for u in units]


class ModelUnavailable(Exception):
    """A model that cannot be built, loaded or split here; the message is the recorded reason."""


def _reason(e: BaseException) -> str:
    """One line for meta.json: a LensError's own message, else the exception type and message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, LensError) else f"{type(e).__name__}: {text}"


# ----------------------------------------------------------------------------- saving


def _prune(folder: Path, keep: set[Path], patterns: Iterable[str]) -> None:
    """Delete earlier versions of a part's files that meta.json no longer references."""
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path not in keep and ".tmp." not in path.name:
                path.unlink(missing_ok=True)


def self_scores(m: LoadedModel, renders: list[tuple[Unit, maco.MacoRender]]) -> dict[str, tuple[float, int]]:
    """(probability, rank) of each class visualization under its own model, in one batched pass."""
    if not renders:
        return {}
    probs, ranks = maco.classify(m, [r.image for _, r in renders], [u.class_index for u, _ in renders])
    return {u.id: (p, k) for (u, _), p, k in zip(renders, probs, ranks)}


def save_maco(store: Store, plan: ModelPlan, unit: Unit, r: maco.MacoRender, m: LoadedModel, objective: maco.Objective,
              seconds: float, batch: int, device: str, attempt: int, self_score: tuple[float, int] | None = None) -> None:
    """Write the images under new names, then point meta.json at them, then drop the old ones. Touches the device only
    when a class visualization comes without its `self_score` (see `self_scores`)."""
    settings_hash = plan.unit_hash(unit)
    folder = unit.folder
    tag = settings_hash[:8]
    files = {"image": f"{folder}maco.{tag}.png", "alpha": f"{folder}maco_alpha.{tag}.png"}
    store.write_file(unit.model, unit.class_index, files["image"], encode_png(r.image))
    store.write_file(unit.model, unit.class_index, files["alpha"], encode_png(r.alpha))
    record = MacoRecord(
        status="done", files=files, settings=plan.maco.model_dump(mode="json"), settings_hash=settings_hash,
        seed=maco.objective_seed(plan.maco.seed, plan.name, objective.key), objective_key=objective.key,
        spectrum=plan.spectrum_id, steps=plan.maco.steps, wall_time_s=round(seconds, 3), batch_size=batch,
        objective=r.objective, attempts=attempt, device=device, versions=_versions(), finished_at=_now(),
    )
    if unit.kind == "maco":
        if self_score is None:
            (prob,), (rank,) = maco.classify(m, [r.image], [unit.class_index])
            self_score = (prob, rank)
        record.self_prob, record.self_rank = self_score
    class_dir = store.class_dir(unit.model, unit.class_index)
    craft_unit = Unit(unit.model, unit.class_index, "craft")

    def change(meta: Meta) -> None:
        if unit.kind == "concept" and not part_done(meta.craft, plan.unit_hash(craft_unit)):
            return  # CRAFT was re-run meanwhile: this direction is gone
        if not meta.set_record(unit, record):
            return
        _prune(class_dir / folder, {class_dir / f for f in files.values()}, ["maco.*.png", "maco_alpha.*.png"])

    store.update_meta(unit.model, unit.class_index, change)


def save_craft(store: Store, plan: ModelPlan, class_index: int, result: craft_method.CraftResult, m: LoadedModel,
               seconds: float, device: str) -> str:
    """Write CRAFT's files, then its record and concepts; returns the status: `done` or `no-images`."""
    craft_hash = plan.unit_hash(Unit(m.name, class_index, "craft"))
    tag = craft_hash[:8]
    settings = plan.craft
    no_images = not result.views  # no usable photo: a state of its own, neither done nor failed
    record = CraftRecord(
        status="no-images" if no_images else "done", settings=settings.model_dump(mode="json"), settings_hash=craft_hash,
        n_images=len(result.views), image_selection=result.selection, method=result.method,
        nmf_error=None if np.isnan(result.nmf_error) else result.nmf_error,
        timings_s={k: round(v, 3) for k, v in result.timings.items()}, wall_time_s=round(seconds, 3),
        device=device, versions=_versions(), finished_at=_now(), files={},
        images_source="demo photos" if plan.images_dir is None else str(plan.images_dir),
        reason=result.reason or None,
    )
    if result.deletion:
        record.deletion = {k: result.deletion[k] for k in ("auc_importance", "auc_random", "curve_importance", "curve_random")}
    credits = sorted({v.source.credit for v in result.views if v.source.credit and "CC BY" in v.source.credit})
    if credits:
        record.credits = credits
    concepts: list[Concept] = []
    written: set[str] = set()
    size = m.preprocess.input_size
    if result.concepts:
        directions = np.stack([c.direction.numpy() for c in sorted(result.concepts, key=lambda c: c.id)]).astype(np.float32)
        record.files["directions"] = f"concepts/directions.{tag}.npy"
        written.add(record.files["directions"])
        buf = io.BytesIO()
        np.save(buf, directions, allow_pickle=False)
        store.write_file(m.name, class_index, record.files["directions"], buf.getvalue())
    atlas = concept_data.ClassData(store, m.name, class_index, result, tag)  # per-image records, thumbnails, photos
    if result.concepts:
        record.files.update(atlas.write())
    for rank, concept in enumerate(result.concepts, start=1):
        base = f"concepts/{concept.id}"
        crops = []
        for j, crop in enumerate(concept.crops):
            view = result.views[crop.view]
            rel = f"{base}/crop_{j}.{tag}.jpg"
            store.write_file(m.name, class_index, rel, encode_jpeg(craft_method.crop_image(view, crop.box, size)))
            written.add(rel)
            crops.append(Crop(file=rel, source=view.source.source, box=list(craft_method.to_source_box(crop.box, view.region, size)),
                              view_box=list(crop.box), coefficient=crop.coefficient))
        attributions = []
        vmax = float(result.maps[..., concept.id].max())
        sources = list(dict.fromkeys(crop.view for crop in concept.crops))[: settings.attribution_images]
        for j, v in enumerate(sources):
            rel = f"{base}/attribution_{j}.{tag}.jpg"
            overlay = craft_method.attribution_overlay(result.views[v], result.maps[v, ..., concept.id], vmax)
            store.write_file(m.name, class_index, rel, encode_jpeg(overlay))
            written.add(rel)
            attributions.append(Attribution(file=rel, source=result.views[v].source.source, photo=atlas.photo(v)))
        concepts.append(Concept(id=concept.id, rank=rank, importance=concept.importance, logit_share=concept.logit_share,
                                removal_drop=concept.removal_drop, crops=crops, attributions=attributions))
    class_dir = store.class_dir(m.name, class_index)

    def change(meta: Meta) -> None:
        meta.craft = record
        meta.concepts = concepts
        keep = {class_dir / f for f in written | atlas.written}
        _prune(class_dir, keep, ["concepts/directions.*.npy", "concepts/*/crop_*.jpg", "concepts/*/attribution_*.jpg",
                                 "concepts/*/maco.*.png", "concepts/*/maco_alpha.*.png", *concept_data.PRUNE_PATTERNS])

    store.update_meta(m.name, class_index, change)
    if no_images:
        store.log({"event": "craft_no_images", "unit": f"{m.name}/{class_index:04d}/craft", "images": record.images_source})
    return record.status


# ----------------------------------------------------------------------------- scheduling


class StopFlag:
    """First Ctrl-C: finish the current batch, save it, stop. Second Ctrl-C: abort now."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):  # noqa: ANN001, ARG001
            if self.event.is_set():
                raise KeyboardInterrupt
            self.event.set()
            print("\nlens: stopping after the current batch is saved (Ctrl-C again to abort)", file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


class Bars:
    """One tqdm bar per model: visualizations and CRAFT classes per second, with an ETA."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def open(self, model: str, total: float) -> None:
        if not self.enabled:  # --no-progress: a log line every minute instead (generator/progress.py)
            self.bars[model] = LogBar(model, total)
            return
        from tqdm import tqdm

        if model in self.bars:  # a later pass of the same run (units other runs left)
            self.bars.pop(model).close()

        self.bars[model] = tqdm(total=total, desc=model, unit="unit", position=len(self.bars), dynamic_ncols=True,
                                mininterval=0.5, bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]")

    def grow(self, model: str, extra: float) -> None:
        if model in self.bars:
            self.bars[model].total += extra
            self.bars[model].refresh()

    def advance(self, model: str, n: float) -> None:
        if model in self.bars:
            bar = self.bars[model]
            bar.update(min(n, bar.total - bar.n))  # per-step fractions must not overshoot

    def finish(self, model: str) -> None:
        """Stop the model's clock: its bar's elapsed time and rate are its own."""
        if model in self.bars:
            self.bars[model].close()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


def _batches(units: list[Unit], size: int) -> list[list[Unit]]:
    return [units[i : i + size] for i in range(0, len(units), size)]


def run_render(job: RenderJob) -> RenderSummary:
    """Render every pending unit of the job; returns counts (exit code 1 if any unit failed)."""
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
        if len(job.devices) == 1:
            _run_in_process(job, store, stop, bars, summary)
        else:
            _run_processes(job, store, stop, bars, summary)
    finally:
        bars.close()
        summary.stopped = stop.stopped
    summary.problems = list(dict.fromkeys(store.problems + summary.problems))
    summary.images_source = "the demo photos (`images: null`)" if job.images is None else str(job.images)
    if not summary.stopped:
        summary.undone = undone_units(job, store)
    store.log({"event": "run_end", "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
               "no_images": summary.no_images, "undone": len(summary.undone), "stopped": summary.stopped,
               "seconds": round(time.time() - started, 2)})
    return summary


def undone_units(job: RenderJob, store: Store) -> list[str]:
    """Selected units neither done, failed nor without images once the run ends (e.g. held by a run that died)."""
    zoo = load_zoo(job.config)
    spectrum = resolve_spectrum(job.spectrum, job.out / "spectra", job.images)
    return [u.id for plan in model_plans(job, zoo, spectrum.id) for u in pending_units(store, plan, include_failed=False)]


def _record(store: Store, summary: RenderSummary, outcomes: list[Outcome], device: str, batch: int, seconds: float, model: str) -> None:
    for o in outcomes:
        summary.add(o)
    kind = outcomes[0].kind if outcomes else "none"
    store.log({"event": "batch_end", "model": model, "kind": kind, "device": device, "batch_size": batch,
               "seconds": round(seconds, 3), "done": sum(o.status == "done" for o in outcomes),
               "failed": sum(o.status == "failed" for o in outcomes)})


def _run_in_process(job: RenderJob, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary) -> None:
    """Passes over the plan until nothing is left that this run can do: units held by other live
    workers are waited for, and taken over if their holder dies (its claim goes stale)."""
    worker = Worker(job, job.devices[0], progress=bars.advance)
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
        _record(store, summary, [o], worker.device, 1, time.perf_counter() - t, plan.name)
        bars.advance(plan.name, 1)
    todo = [u for u in pending_units(store, plan, include_failed=include_failed) if u.kind != "craft"
            and (u in units or u.kind == "concept") and not store.claimed_by_live_worker(u)]
    bars.grow(plan.name, len(todo) - sum(u.kind != "craft" for u in units))
    previous = None  # (batch, start time, finish): written while the next batch renders

    def finish(started: tuple[list[Unit], float, Callable[[], list[Outcome]]] | None) -> None:
        if started is not None:
            batch, t, wait = started
            outcomes = wait()
            _record(store, summary, outcomes, worker.device, len(batch), time.perf_counter() - t, plan.name)
            bars.advance(plan.name, sum(o.status != "done" for o in outcomes))

    try:
        for batch in _batches(todo, worker.batch_size(worker.model(plan.name, "maco"), plan.maco)):
            if stop.stopped:
                return
            t = time.perf_counter()
            older, previous = previous, (batch, t, worker.start_maco(batch))  # render batch k+1, then finish batch k
            finish(older)
    finally:
        finish(previous)
    bars.finish(plan.name)


# ----------------------------------------------------------------------------- several devices


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
                outcomes = worker.record_failures(units, _reason(e))
            results.put(("done", kind, units[0].model, device, len(units), time.perf_counter() - t, outcomes))
    finally:
        worker.writer.close()
        worker.release_all()
        results.put(("exit", device))


def _unit(unit_id: str) -> Unit:
    return Unit.parse(unit_id)


def _run_processes(job: RenderJob, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary) -> None:
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
        for batch in _batches([u for u in units if u.kind == "maco"], size):
            tasks.put(("maco", [u.id for u in batch]))
        queued += len(crafts) + len(_batches([u for u in units if u.kind == "maco"], size))
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
                _record(store, summary, outcomes, device, n, seconds, model)
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
    batches = _batches(units, size)
    for batch in batches:
        tasks.put(("maco", [u.id for u in batch]))
    return len(batches)


def default_devices(device: str, devices: str | None) -> list[str]:
    """`--devices 0,1` or all visible GPUs; the CPU (with a notice) where there is none.
    A device that does not exist is a one-line error naming the flag."""
    from .errors import PlanError
    from .models import resolve_device

    if device != "auto":
        resolve_device(device)  # unknown names and missing GPUs fail here, in one line
    if device == "cpu":
        return ["cpu"]
    if devices is not None:
        names = [d.strip() for d in devices.split(",")]
        if not names or any(not d for d in names):
            raise PlanError(f"--devices '{devices}': expected GPU indices or device names, e.g. 0,1 or cpu,cpu")
        out = []
        for d in names:
            name = f"cuda:{d}" if d.isdigit() else d
            resolve_device(name)
            out.append(str(torch.device(name)) if name != "cpu" else "cpu")
        return out
    if torch.cuda.is_available():
        return [str(resolve_device(device))] if device.startswith("cuda:") else [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    print("lens: no GPU visible, rendering on the CPU (use small settings, e.g. --classes demo)", file=sys.stderr)
    return ["cpu"]
