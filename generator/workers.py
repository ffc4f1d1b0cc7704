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

from . import __version__, maco
from . import craft as craft_method
from .classes import imagenet_class
from .config import MacoSettings, load_zoo
from .images import SourceImage, demo_photos, load_class_images
from .models import LoadedModel, load_model
from .pipeline import Pending, Writer
from .plan import ModelPlan, RenderJob, model_plans, part_done, pending_units
from .spectrum import Spectrum, resolve_spectrum
from .store import Claim, Store, Unit, atomic_write_bytes, encode_jpeg, encode_png

log = logging.getLogger("lens")
HEARTBEAT_S = 30.0


# ----------------------------------------------------------------------------- outcomes


@dataclass
class Outcome:
    unit: str
    kind: str
    status: str  # done, failed, skipped
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RenderSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    stopped: bool = False
    failures: list[Outcome] = field(default_factory=list)
    skipped_outcomes: list[Outcome] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        setattr(self, o.status, getattr(self, o.status) + 1)
        if o.status == "failed":
            self.failures.append(o)
        elif o.status == "skipped":
            self.skipped_outcomes.append(o)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else (130 if self.stopped else 0)


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
        self.writer = Writer()  # PNG encoding and meta.json writes, off the thread that drives the device
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    # -------------------------------------------------------------- model and inputs
    def model(self, name: str) -> LoadedModel:
        if self._model is None or self._model.name != name:
            self._model, self._demo_by_class = None, None
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            self._model = load_model(self.zoo.model(name), self.zoo.root, self.device)
            self._write_model_card(self._model)
        return self._model

    def _write_model_card(self, m: LoadedModel) -> None:
        import json

        path = self.store.root / m.name / "model.json"
        card = json.loads(path.read_text()) if path.exists() else {}
        card.update({"name": m.name, "arch": m.entry.arch, "weights": m.entry.weights.describe(),
                     "key_map": m.entry.key_map, "description": m.entry.description, "params": m.num_params,
                     "preprocess": m.preprocess.as_dict(), "concept_layer": m.entry.concept_layer})
        card.setdefault("accuracy", None)
        atomic_write_bytes(path, json.dumps(card, indent=1).encode())

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
        meta = self.store.read_meta(unit.model, unit.class_index) or {}
        if unit.kind == "maco":
            return not part_done(meta.get("maco"), plan.maco_hash())
        craft_hash = plan.craft_hash(imagenet_class(unit.class_index).wnid, unit.class_index)
        if unit.kind == "craft":
            return not part_done(meta.get("craft"), craft_hash)
        concept = _concept(meta, int(unit.part.split("/")[1]))
        return (part_done(meta.get("craft"), craft_hash) and concept is not None
                and not part_done(concept.get("maco"), plan.concept_hash(craft_hash, concept["id"])))

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

    def _craft_once(self, unit: Unit) -> float:
        plan, m = self.plans[unit.model], self.model(unit.model)
        t = time.perf_counter()
        images = self.class_images(m, unit.class_index, limit=max(plan.craft.max_images * 4, 1000))
        result = craft_method.run_craft(m, images, unit.class_index, plan.craft)
        seconds = time.perf_counter() - t
        save_craft(self.store, plan, unit.class_index, result, m, seconds, self.device)
        return seconds

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
        m = self.model(plan.name)
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
                else:
                    log.warning("%s: writing the result failed: %s", u.id, error)
                    outcomes.append(self._record_failure(u, f"writing the result failed: {type(error).__name__}: {error}", tries))
            return outcomes

        return finish

    def _objective(self, unit: Unit, m: LoadedModel) -> maco.Objective:
        if unit.kind == "maco":
            return maco.class_objective(unit.class_index)
        k = int(unit.part.split("/")[1])
        meta = self.store.read_meta(unit.model, unit.class_index) or {}
        path = self.store.class_dir(unit.model, unit.class_index) / meta["craft"]["files"]["directions"]
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
    def _attempts(self, unit: Unit, once: Callable[[], float]) -> Outcome:
        for attempt in range(1, self.job.retries + 2):
            try:
                return Outcome(unit.id, unit.kind, "done", seconds=once())
            except craft_method.CraftError as e:  # a configuration problem: retrying cannot help
                return self._record_failure(unit, str(e), attempt)
            except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                error = f"{type(e).__name__}: {e}"
                log.warning("%s failed (attempt %d): %s", unit.id, attempt, error)
                log.debug(traceback.format_exc())
        return self._record_failure(unit, error, attempt)

    def _record_failure(self, unit: Unit, error: str, attempts: int) -> Outcome:
        plan = self.plans[unit.model]
        wnid = imagenet_class(unit.class_index).wnid
        craft_hash = plan.craft_hash(wnid, unit.class_index)
        record = {"status": "failed", "error": error, "attempts": attempts, "finished_at": _now(), "device": self.device}
        if unit.kind == "maco":
            record["settings_hash"] = plan.maco_hash()
        elif unit.kind == "craft":
            record["settings_hash"] = craft_hash
        else:
            record["settings_hash"] = plan.concept_hash(craft_hash, int(unit.part.split("/")[1]))

        def change(meta: dict[str, Any]) -> None:
            if unit.kind in ("maco", "craft"):
                meta[unit.kind] = record
            elif (concept := _concept(meta, int(unit.part.split("/")[1]))) is not None:
                concept["maco"] = record

        self.store.update_meta(unit.model, unit.class_index, identity(unit.model, unit.class_index), change)
        self.store.log({"event": "unit_failed", "unit": unit.id, "error": error, "attempts": attempts, "device": self.device})
        return Outcome(unit.id, unit.kind, "failed", error)


def _concept(meta: dict[str, Any], concept_id: int) -> dict[str, Any] | None:
    return next((c for c in meta.get("concepts") or [] if c.get("id") == concept_id), None)


def identity(model: str, class_index: int) -> dict[str, Any]:
    c = imagenet_class(class_index)
    return {"model": model, "class_index": c.index, "wnid": c.wnid, "class_name": c.name}


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
    craft_hash = None
    if unit.kind == "maco":
        settings_hash = plan.maco_hash()
        folder = ""
    else:
        craft_hash = plan.craft_hash(imagenet_class(unit.class_index).wnid, unit.class_index)
        settings_hash = plan.concept_hash(craft_hash, int(unit.part.split("/")[1]))
        folder = f"concepts/{unit.part.split('/')[1]}/"
    tag = settings_hash[:8]
    files = {"image": f"{folder}maco.{tag}.png", "alpha": f"{folder}maco_alpha.{tag}.png"}
    store.write_file(unit.model, unit.class_index, files["image"], encode_png(r.image))
    store.write_file(unit.model, unit.class_index, files["alpha"], encode_png(r.alpha))
    record: dict[str, Any] = {
        "status": "done", "files": files, "settings": plan.maco.model_dump(mode="json"), "settings_hash": settings_hash,
        "seed": maco.objective_seed(plan.maco.seed, plan.name, objective.key), "objective_key": objective.key,
        "spectrum": plan.spectrum_id, "steps": plan.maco.steps, "wall_time_s": round(seconds, 3), "batch_size": batch,
        "objective": r.objective, "attempts": attempt, "device": device, "versions": _versions(), "finished_at": _now(),
    }
    if unit.kind == "maco":
        if self_score is None:
            (prob,), (rank,) = maco.classify(m, [r.image], [unit.class_index])
            self_score = (prob, rank)
        record.update(self_prob=self_score[0], self_rank=self_score[1])
    class_dir = store.class_dir(unit.model, unit.class_index)

    def change(meta: dict[str, Any]) -> None:
        if unit.kind == "maco":
            meta["maco"] = record
        else:
            concept = _concept(meta, int(unit.part.split("/")[1]))
            if concept is None or not part_done(meta.get("craft"), craft_hash or ""):
                return  # CRAFT was re-run meanwhile: this direction is gone
            concept["maco"] = record
        _prune(class_dir / folder, {class_dir / f for f in files.values()}, ["maco.*.png", "maco_alpha.*.png"])

    store.update_meta(unit.model, unit.class_index, identity(unit.model, unit.class_index), change)


def save_craft(store: Store, plan: ModelPlan, class_index: int, result: craft_method.CraftResult, m: LoadedModel,
               seconds: float, device: str) -> None:
    wnid = imagenet_class(class_index).wnid
    craft_hash = plan.craft_hash(wnid, class_index)
    tag = craft_hash[:8]
    settings = plan.craft
    record: dict[str, Any] = {
        "status": "done", "settings": settings.model_dump(mode="json"), "settings_hash": craft_hash,
        "n_images": len(result.views), "image_selection": result.selection,
        "nmf_error": None if np.isnan(result.nmf_error) else result.nmf_error,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()}, "wall_time_s": round(seconds, 3),
        "device": device, "versions": _versions(), "finished_at": _now(), "files": {},
        "images_source": "demo photos" if plan.images_dir is None else str(plan.images_dir),
    }
    if result.reason:
        record["reason"] = result.reason
    if result.deletion:
        record["deletion"] = {k: result.deletion[k] for k in ("auc_importance", "auc_random", "curve_importance", "curve_random")}
    credits = sorted({v.source.credit for v in result.views if v.source.credit and "CC BY" in v.source.credit})
    if credits:
        record["credits"] = credits
    concepts, written = [], set()
    size = m.preprocess.input_size
    if result.concepts:
        directions = np.stack([c.direction.numpy() for c in sorted(result.concepts, key=lambda c: c.id)]).astype(np.float32)
        record["files"]["directions"] = f"concepts/directions.{tag}.npy"
        written.add(record["files"]["directions"])
        buf = io.BytesIO()
        np.save(buf, directions, allow_pickle=False)
        store.write_file(m.name, class_index, record["files"]["directions"], buf.getvalue())
    for rank, concept in enumerate(result.concepts, start=1):
        base = f"concepts/{concept.id}"
        crops = []
        for j, crop in enumerate(concept.crops):
            view = result.views[crop.view]
            rel = f"{base}/crop_{j}.{tag}.jpg"
            store.write_file(m.name, class_index, rel, encode_jpeg(craft_method.crop_image(view, crop.box, size)))
            written.add(rel)
            crops.append({"file": rel, "source": view.source.source, "box": craft_method.to_source_box(crop.box, view.region, size),
                          "view_box": list(crop.box), "coefficient": crop.coefficient})
        attributions = []
        vmax = float(result.maps[..., concept.id].max())
        sources = list(dict.fromkeys(crop.view for crop in concept.crops))[: settings.attribution_images]
        for j, v in enumerate(sources):
            rel = f"{base}/attribution_{j}.{tag}.jpg"
            overlay = craft_method.attribution_overlay(result.views[v], result.maps[v, ..., concept.id], vmax)
            store.write_file(m.name, class_index, rel, encode_jpeg(overlay))
            written.add(rel)
            attributions.append({"file": rel, "source": result.views[v].source.source})
        concepts.append({"id": concept.id, "rank": rank, "importance": concept.importance, "logit_share": concept.logit_share,
                         "removal_drop": concept.removal_drop, "crops": crops, "attributions": attributions})
    class_dir = store.class_dir(m.name, class_index)

    def change(meta: dict[str, Any]) -> None:
        meta["craft"] = record
        meta["concepts"] = concepts
        keep = {class_dir / f for f in written}
        _prune(class_dir, keep, ["concepts/directions.*.npy", "concepts/*/crop_*.jpg", "concepts/*/attribution_*.jpg",
                                 "concepts/*/maco.*.png", "concepts/*/maco_alpha.*.png"])

    store.update_meta(m.name, class_index, identity(m.name, class_index), change)


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
        if not self.enabled:
            return
        from tqdm import tqdm

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
        store.log({"event": "run_end", "done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
                   "stopped": summary.stopped, "seconds": round(time.time() - started, 2)})
    return summary


def _record(store: Store, summary: RenderSummary, outcomes: list[Outcome], device: str, batch: int, seconds: float, model: str) -> None:
    for o in outcomes:
        summary.add(o)
    kind = outcomes[0].kind if outcomes else "none"
    store.log({"event": "batch_end", "model": model, "kind": kind, "device": device, "batch_size": batch,
               "seconds": round(seconds, 3), "done": sum(o.status == "done" for o in outcomes),
               "failed": sum(o.status == "failed" for o in outcomes)})


def _run_in_process(job: RenderJob, store: Store, stop: StopFlag, bars: Bars, summary: RenderSummary) -> None:
    worker = Worker(job, job.devices[0], progress=bars.advance)
    try:
        for plan in worker.plans.values():
            wnids = wnids_of(plan.classes)
            units = pending_units(store, plan, wnids)
            if not units:
                continue
            bars.open(plan.name, len(units))
            for u in [u for u in units if u.kind == "craft"]:
                if stop.stopped:
                    return
                t = time.perf_counter()
                o = worker.run_craft(u)
                _record(store, summary, [o], worker.device, 1, time.perf_counter() - t, plan.name)
                bars.advance(plan.name, 1)
            todo = [u for u in pending_units(store, plan, wnids) if u.kind != "craft"]
            bars.grow(plan.name, len(todo) - sum(u.kind != "craft" for u in units))
            previous = None  # (batch, start time, finish): written while the next batch renders

            def finish_previous() -> None:
                nonlocal previous
                if previous is not None:
                    (batch, t, finish), previous = previous, None
                    outcomes = finish()
                    _record(store, summary, outcomes, worker.device, len(batch), time.perf_counter() - t, plan.name)
                    bars.advance(plan.name, sum(o.status != "done" for o in outcomes))

            try:
                for batch in _batches(todo, worker.batch_size(worker.model(plan.name), plan.maco)):
                    if stop.stopped:
                        return
                    t = time.perf_counter()
                    finish = worker.start_maco(batch)
                    finish_previous()
                    previous = (batch, t, finish)
            finally:
                finish_previous()
            bars.finish(plan.name)
    finally:
        worker.writer.close()
        worker.release_all()


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
            except Exception as e:  # noqa: BLE001 - e.g. a model that fails to load
                outcomes = [worker._record_failure(u, f"{type(e).__name__}: {e}", 1) for u in units]
            results.put(("done", kind, units[0].model, device, len(units), time.perf_counter() - t, outcomes))
    finally:
        worker.writer.close()
        worker.release_all()
        results.put(("exit", device))


def _unit(unit_id: str) -> Unit:
    model, cls, part = unit_id.split("/", 2)
    return Unit(model, int(cls), part)


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
    """`--devices 0,1` or all visible GPUs; the CPU (with a notice) where there is none."""
    if device == "cpu":
        return ["cpu"]
    if devices:
        return [d if d == "cpu" or d.startswith("cuda") else f"cuda:{int(d)}" for d in devices.split(",") if d.strip()]
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if device.startswith("cuda"):
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU")
    print("lens: no GPU visible, rendering on the CPU (use small settings, e.g. --classes demo)", file=sys.stderr)
    return ["cpu"]
