"""One worker: renders units on one device, one model loaded at a time; claims, retries and failures
recorded per unit (a model that cannot load fails its units once, with the reason)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from typing import Callable

import torch

from .. import concept_data, maco
from .. import craft as craft_method
from ..classes import imagenet_class
from ..config import MacoSettings
from ..errors import LensError, StoreError
from ..images import SourceImage, demo_photos, load_class_images
from ..models import LoadedModel, load_model
from ..pipeline import Pending, Writer
from ..plan import ModelPlan, RenderJob, dictionary_state, judge_atom, part_done, unit_state
from ..records import NO_CLASS, CraftRecord, MacoRecord, Meta, ModelCard, Unit
from ..sae import load_atoms
from ..sidefiles import read_directions
from ..spectrum import Spectrum
from ..store import Claim, Store, atom_macos, checked_rel, dictionary_record
from .outcomes import Outcome
from .saving import now_iso, record_atom_failures, save_atom_maco, save_craft, save_maco, self_scores

log = logging.getLogger("lens")


HEARTBEAT_S = 30.0


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


class Worker:
    """Renders units on one device. Holds one model at a time (units arrive grouped by model)."""

    def __init__(self, job: RenderJob, device: str, progress: Callable[[str, float], None] | None = None,
                 models: dict[str, LoadedModel] | None = None):
        self.job = job
        self.zoo = job.resolved.zoo
        self._loaded = dict(models or {})  # already loaded (the Python API's): used as they are
        self.store = Store(job.request.out)
        self.device = device
        self.spectrum: Spectrum = job.resolved.spectrum
        self.plans = {p.name: p for p in job.resolved.plans}
        self.progress = progress or (lambda model, n: None)
        self._model: LoadedModel | None = None
        self._demo_by_class: dict[int, list[SourceImage]] | None = None
        self._claims: list[Claim] = []
        self._batch_size: dict[str, int] = {}
        # Deterministic load errors, kept for the run: a model is tried once, not once per unit.
        self._load_errors: dict[str, str] = {}
        self._concept_errors: dict[str, str] = {}  # loads without its concept layer: MACO only
        self._decoders: dict[tuple[str, str], torch.Tensor] = {}  # the dictionaries' atoms, by (model, settings)
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
            if not {"craft", "dictionary"} & self.plans[name].parts:
                entry = plain  # `--what maco`: the concept layer is not used, so it cannot stop the run
            try:
                self._model = self._loaded.get(name) or load_model(entry, self.zoo.root, self.device)
            except Exception as e:  # noqa: BLE001 - recorded on every unit of this model, the run goes on
                reason = failure_reason(e)
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
            card.arch, card.weights, card.key_map = m.entry.architecture, m.entry.weights.describe(), m.entry.key_map
            card.weights_used = m.weights_used
            card.description, card.params, card.preprocess = m.entry.description, m.num_params, m.preprocess.as_dict()
            card.concept_layer = concept_layer

        self.store.update_model_card(m.name, change)
        concept_data.write_head(self.store, m, concept_layer)  # the atlas's class rows, once per model

    def class_images(self, m: LoadedModel, class_index: int, limit: int) -> list[SourceImage]:
        """The class's images from the configured folder, else the demo photos this model assigns to it."""
        if self.job.request.images is not None:
            return load_class_images(self.job.request.images, imagenet_class(class_index).wnid, limit)
        if self._demo_by_class is None:
            photos = demo_photos()
            views, x = craft_method.make_views(photos, m)
            with torch.no_grad():
                predicted = m.logits(x).argmax(-1).tolist()
            self._demo_by_class = {}
            for photo, c in zip(photos, predicted):
                self._demo_by_class.setdefault(c, []).append(photo)
        return self._demo_by_class.get(class_index, [])

    def unload(self) -> None:
        """Drop the loaded model (the heartbeat thread keeps this worker alive for the run, not its model)."""
        self._model, self._demo_by_class = None, None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    @property
    def loaded(self) -> str | None:
        """The model this worker holds now (the scheduler keeps it busy with that model's units)."""
        return self._model.name if self._model is not None else None

    def sizes(self) -> dict[str, int]:
        """Objectives per pass of each model this worker has probed."""
        return dict(self._batch_size)

    def probe(self, name: str) -> int:
        """Load the model and find its objectives per pass; a model that cannot load gets the
        user's size (or 256), so that its units fail together, with the reason, in one pass."""
        try:
            return self.batch_size(self.model(name, "maco"), self.plans[name].maco)
        except ModelUnavailable:
            self._batch_size[name] = self.job.batch_size or 256
            return self._batch_size[name]

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
        if unit.kind == "atom":  # the dictionary still done with these settings (so its shown atoms unchanged), the atom not
            # done: macos.json alone is re-read, not the atlas (large at 2048 atoms) once per claimed atom
            return dictionary_state(self.store, plan) == "done" and judge_atom(
                self.store, plan, atom_macos(self.store, plan.name), plan.atom_hash(), unit.concept) != "done"  # type: ignore[arg-type]
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
            m = self.model(plan.name, "concept" if any(u.kind in ("concept", "atom") for u in units) else "maco")
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
                        scored.get(u.id)) if u.kind != "atom" else self.writer.submit(
                        save_atom_maco, self.store, plan, u, r, seconds))
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
        if unit.kind == "atom":
            return maco.atom_objective(unit.concept, self._decoder(unit.model)[unit.concept])  # type: ignore[index]
        k = unit.concept
        meta = self.store.meta(unit.model, unit.class_index)
        if meta is None or meta.craft is None or "directions" not in meta.craft.files:
            raise RuntimeError("CRAFT record or its concept directions are gone")
        # The store's path check: a link leading outside the store is never opened (UnsafePath, one line).
        path = self.store.file_path(unit.model, unit.class_index, meta.craft.files["directions"])
        directions = read_directions(path)
        return maco.direction_objective(f"concept/{unit.class_index:04d}/{k}", torch.from_numpy(directions[k]))

    def _decoder(self, name: str) -> torch.Tensor:
        """The decoder rows (atoms, C) of the model's done dictionary, read once per run and settings."""
        plan = self.plans[name]
        key = (name, plan.dictionary_hash())
        if key not in self._decoders:
            record = dictionary_record(self.store, name)
            if record is None or not record.done or record.settings_hash != key[1]:
                raise RuntimeError("the dictionary is not done with these settings")
            path = self.store.root / name / checked_rel(record.files["atoms"], f"{name}/dictionary.json")
            self._decoders[key] = load_atoms(path, plan.dictionary.k).D.detach()
        return self._decoders[key]

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
        """Record units as failed with the reason, one meta.json update per class (atoms: one macos.json update)."""
        by_class: dict[tuple[str, int], list[Unit]] = {}
        for u in units:
            by_class.setdefault((u.model, u.class_index), []).append(u)
        for (model, _), group in [(key, g) for key, g in by_class.items() if key[1] == NO_CLASS]:
            record_atom_failures(self.store, self.plans[model], group, error)
            del by_class[(model, NO_CLASS)]
        for (model, class_index), group in by_class.items():
            plan = self.plans[model]

            def change(meta: Meta, group: list[Unit] = group, plan: ModelPlan = plan) -> None:
                for u in group:
                    h = plan.unit_hash(u)
                    if part_done(meta.record(u), h):
                        continue  # another worker finished it meanwhile: never overwrite a result
                    cls = CraftRecord if u.kind == "craft" else MacoRecord
                    meta.set_record(u, cls(status="failed", settings_hash=h, error=error, attempts=attempts,
                                           finished_at=now_iso(), device=self.device))

            self.store.update_meta(model, class_index, change)
        self.store.log({"event": "unit_failed", "units": [u.id for u in units[:50]], "n": len(units), "error": error,
                        "attempts": attempts, "device": self.device})
        return [Outcome(u.id, u.kind, "failed", error) for u in units]


class ModelUnavailable(Exception):
    """A model that cannot be built, loaded or split here; the message is the recorded reason."""


def failure_reason(e: BaseException) -> str:
    """One line for meta.json: a LensError's own message, else the exception type and message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, LensError) else f"{type(e).__name__}: {text}"
