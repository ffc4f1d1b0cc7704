"""Planning: which units of work (`records.Unit`) a render still owes, and in which shard.

Parts: `maco` (class visualization), `craft` (concepts of the class) and `concept/<k>` (MACO of
concept k's direction, possible once CRAFT is done), and the model-wide `dictionary` (one unit per model,
`<model>/dictionary`, judged by `dictionary_state`). Every unit's settings hash is computed here,
in `ModelPlan.unit_hash`, and its state in `unit_state`: done (the record has the current hash and
every file it lists exists), failed, no-images (CRAFT found no usable photo), stale (done with
other settings), missing (done, but a listed file is gone) or pending. Stale, missing and pending
units are rendered; failed ones are retried by the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .classes import imagenet_class
from .config import CraftSettings, DictionarySettings, MacoSettings, ModelEntry, Zoo, load_zoo, settings_hash
from .errors import PlanError
from .records import AtomMacos, DictionaryRecord, Meta, PartRecord, Unit, part_state
from .store import Store, atlas_record, atom_macos, dictionary_record

if TYPE_CHECKING:
    from .spectrum import Spectrum

PARTS = ("maco", "craft", "dictionary")
# Bump when a change of code changes results (maco 3: issue 22's colour offset and windowed spectrum; craft 3: exact Sobol
# totals for pool + linear heads; atom: an atom MACO, whose hash also holds the MACO and dictionary hashes).
METHOD_VERSION = {"maco": 3, "craft": 3, "dictionary": 1, "atom": 1}


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` with 0 <= K < N, e.g. `$SLURM_ARRAY_TASK_ID/8`."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise PlanError(f"--shard '{text}': expected K/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= k < n):
        raise PlanError(f"--shard '{text}': need 0 <= K < N")
    return k, n


def parse_parts(text: str) -> frozenset[str]:
    parts = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = parts - set(PARTS)
    if unknown or not parts:
        raise PlanError(f"--what '{text}': choose among {', '.join(PARTS)}")
    return parts


def in_shard(model: str, class_index: int, shard: tuple[int, int] | None) -> bool:
    """Deterministic partition of (model, class) pairs; all parts of a class stay in one shard."""
    if shard is None:
        return True
    digest = hashlib.sha256(f"{model}/{class_index:04d}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % shard[1] == shard[0]


def model_identity(entry: ModelEntry) -> dict[str, Any]:
    """What determines a model's outputs (not its description or setting overrides): ModelEntry.identity."""
    return entry.identity()


def images_identity(images_dir: Path | None, wnid: str) -> str:
    """Which images CRAFT draws from for a class: the file list of its folder, or the demo photos."""
    if images_dir is None:
        return "demo-photos"
    d = images_dir / wnid
    files = sorted(f"{p.name}:{p.stat().st_size}" for p in d.iterdir() if p.is_file()) if d.is_dir() else []
    return f"{images_dir.resolve()}:" + hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]


@dataclass
class ModelPlan:
    """One model's share of a render: its resolved settings and the classes it must cover."""

    entry: ModelEntry
    maco: MacoSettings
    craft: CraftSettings
    classes: list[int]
    spectrum_id: str
    images_dir: Path | None
    parts: frozenset[str]
    dictionary: DictionarySettings = field(default_factory=DictionarySettings)
    dictionary_classes: list[int] = field(default_factory=list)  # all the request's classes; empty: not in this shard
    _images_ids: dict[int, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.entry.name

    def maco_hash(self) -> str:
        return settings_hash("maco", METHOD_VERSION["maco"], model_identity(self.entry), self.maco, self.spectrum_id)

    def craft_hash(self, wnid: str, class_index: int) -> str:
        if class_index not in self._images_ids:
            self._images_ids[class_index] = images_identity(self.images_dir, wnid)
        return settings_hash("craft", METHOD_VERSION["craft"], model_identity(self.entry), self.craft, self._images_ids[class_index])

    def concept_hash(self, craft_hash: str, concept_id: int) -> str:
        return settings_hash("concept", self.maco_hash(), craft_hash, concept_id)

    def dictionary_hash(self) -> str:
        """The dictionary's settings hash: its settings, the model, and the photos of every class it reads."""
        photos = ("demo-photos" if self.images_dir is None else
                  [images_identity(self.images_dir, imagenet_class(c).wnid) for c in self.dictionary_classes])
        settings = self.dictionary.model_dump(mode="json")
        del settings["visualize"]  # which atoms get a MACO: not the dictionary's concern
        if not settings["augment"]:  # added later: dictionaries trained before it keep their hash
            del settings["augment"]
        return settings_hash("dictionary", METHOD_VERSION["dictionary"], model_identity(self.entry), settings, photos)

    def atom_hash(self) -> str:
        """The settings hash of the dictionary's atom MACOs (all of them: `macos.json` holds one):
        the class MACOs' settings and the dictionary's."""
        return settings_hash("atom", METHOD_VERSION["atom"], self.maco_hash(), self.dictionary_hash())

    @property
    def has_dictionary(self) -> bool:
        """Whether this plan owes the model's dictionary (selected, and this is the shard that trains it)."""
        return "dictionary" in self.parts and bool(self.dictionary_classes)

    def unit_hash(self, unit: Unit) -> str:
        """The settings hash of a unit: the one definition used to plan, record and judge it."""
        if unit.kind == "maco":
            return self.maco_hash()
        if unit.kind == "atom":
            return self.atom_hash()
        craft = self.craft_hash(imagenet_class(unit.class_index).wnid, unit.class_index)
        return craft if unit.kind == "craft" else self.concept_hash(craft, unit.concept)  # type: ignore[arg-type]


@dataclass
class Request:
    """What a command selects, in plain picklable values: the config, the store, the models, classes
    and parts, the setting overrides (preset, then command line), the images, the spectrum and the
    shard. Defined once; `resolve` turns it into the `Resolved` request every command runs on."""

    config: Path
    out: Path
    models: list[str]
    classes: list[int]
    parts: frozenset[str]
    maco_overrides: dict[str, Any] = field(default_factory=dict)
    craft_overrides: dict[str, Any] = field(default_factory=dict)
    dictionary_overrides: dict[str, Any] = field(default_factory=dict)
    images: Path | None = None
    spectrum: str = "photos"
    shard: tuple[int, int] | None = None
    preset: str | None = None


@dataclass
class Resolved:
    """A request resolved once per process: its zoo, its spectrum and the merged per-model plans.

    Render, status, `--dry-run`, `--force` and the executors all take it; worker processes receive
    it whole (it pickles), so nothing is loaded or merged twice.
    """

    request: Request
    zoo: Zoo
    spectrum: Spectrum
    plans: list[ModelPlan]

    @property
    def store(self) -> Store:
        return Store(self.request.out)

    def plan(self, name: str) -> ModelPlan:
        return next(p for p in self.plans if p.name == name)

    def for_shard(self, shard: tuple[int, int] | None) -> Resolved:
        """The same request restricted to another shard (zoo and spectrum reused)."""
        request = dataclasses.replace(self.request, shard=shard)
        return Resolved(request, self.zoo, self.spectrum, model_plans(request, self.zoo, self.spectrum.id))


def resolve(request: Request, zoo: Zoo | None = None, cache_spectrum: bool = True) -> Resolved:
    """Load the zoo (unless given) and the spectrum, and merge every model's settings, once.

    With `cache_spectrum=False` (a dry run or a report writes nothing) a spectrum the store has not
    cached yet is computed but not written.
    """
    from .spectrum import resolve_spectrum

    zoo = zoo if zoo is not None else load_zoo(request.config)
    spectrum = resolve_spectrum(request.spectrum, request.out / "spectra", request.images, write_cache=cache_spectrum)
    return Resolved(request, zoo, spectrum, model_plans(request, zoo, spectrum.id))


@dataclass
class RenderJob:
    """A resolved request plus how to run it: devices, batch size, retries, progress bars."""

    resolved: Resolved
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    batch_size: int | None = None
    retries: int = 2
    progress: bool = True

    @property
    def request(self) -> Request:
        return self.resolved.request


def model_plans(request: Request, zoo: Zoo, spectrum_id: str) -> list[ModelPlan]:
    """Each selected model's settings (defaults < model < preset < command line) and its share of the classes."""
    plans = []
    for name in request.models:
        entry = zoo.model(name)
        plans.append(ModelPlan(
            entry=entry,
            maco=zoo.maco_settings(entry, request.maco_overrides),
            craft=zoo.craft_settings(entry, request.craft_overrides),
            classes=[c for c in request.classes if in_shard(name, c, request.shard)],
            spectrum_id=spectrum_id, images_dir=request.images, parts=request.parts,
            dictionary=zoo.dictionary_settings(entry, request.dictionary_overrides),
            # one model-wide unit: trained over all the request's classes, by shard 0 alone
            dictionary_classes=list(request.classes) if request.shard is None or request.shard[0] == 0 else [],
        ))
    return plans


STATES = ("done", "pending", "stale", "missing", "failed", "no-images")
TODO = ("pending", "stale", "missing")  # states a render works on (plus failed, retried by a new run)


def part_done(record: PartRecord | None, expected_hash: str) -> bool:
    return record is not None and record.done and record.settings_hash == expected_hash


def unit_state(store: Store, plan: ModelPlan, meta: Meta | None, unit: Unit) -> str:
    """One of STATES for a unit, judged against the plan's settings and the files on disk."""
    record = meta.record(unit) if meta is not None else None
    state = part_state(record)
    if record is None:
        return "pending"
    if record.settings_hash != plan.unit_hash(unit):
        return "stale" if record.done else "pending"
    if state != "done":
        return state  # failed or no-images
    return "missing" if store.missing_files(meta, unit) else "done"  # type: ignore[arg-type]


def dictionary_state(store: Store, plan: ModelPlan) -> str:
    """One of STATES for the model's dictionary, judged as `unit_state` judges a class's units."""
    return judge_dictionary(store, plan, dictionary_record(store, plan.name))


def judge_dictionary(store: Store, plan: ModelPlan, record: DictionaryRecord | None) -> str:
    """`dictionary_state` of a `<model>/dictionary.json` already read (None: absent or unreadable)."""
    if record is None:
        return "pending"
    if record.settings_hash != plan.dictionary_hash():
        return "stale" if record.done else "pending"
    if record.status != "done":
        return record.status
    gone = [f for f in record.files.values() if not (store.root / plan.name / f).is_file()]
    if "atlas" not in record.files and not gone:  # trained: its atlas failed (error recorded) or predates atlases
        return "failed" if record.error else "missing"
    return "missing" if gone else "done"


def visualized_concepts(meta: Meta, craft: CraftSettings) -> list[int]:
    """Ids of the concepts that get a MACO visualization: the `visualize` most important (all by default)."""
    ids = [c.id for c in meta.concepts]
    return ids if craft.visualize is None else ids[: craft.visualize]


def class_units(store: Store, plan: ModelPlan, meta: Meta | None, class_index: int) -> list[tuple[Unit, str]]:
    """Every selected unit of one class with its state; concept units once CRAFT is done."""
    out = []
    if "maco" in plan.parts:
        u = Unit(plan.name, class_index, "maco")
        out.append((u, unit_state(store, plan, meta, u)))
    if "craft" in plan.parts:
        u = Unit(plan.name, class_index, "craft")
        state = unit_state(store, plan, meta, u)
        out.append((u, state))
        if state == "done":
            for k in visualized_concepts(meta, plan.craft):  # type: ignore[arg-type]
                cu = Unit(plan.name, class_index, "concept", k)
                out.append((cu, unit_state(store, plan, meta, cu)))
    return out


def atom_units(store: Store, plan: ModelPlan) -> list[tuple[Unit, str]]:
    """The MACO units of the dictionary's shown atoms (those among some class's `dictionary.visualize`
    top atoms, all by default) with their states, once the dictionary is done
    (by the plan that owes it), as concept units follow their class's CRAFT. An atom is `done` when
    `macos.json` has it done with the current hash and its files exist; `stale` when done with other
    settings; `failed` when it failed with these; else `pending` (`missing`: its files are gone)."""
    if not plan.has_dictionary or dictionary_state(store, plan) != "done":
        return []
    atlas = atlas_record(store, plan.name)
    if atlas is None:
        return []
    macos, h = atom_macos(store, plan.name), plan.atom_hash()
    top = plan.dictionary.visualize
    visualized = set(atlas.shown) if top is None else {t.atom for c in atlas.classes.values() for t in c.top[:top]}
    return [(Unit.atom(plan.name, k), judge_atom(store, plan, macos, h, k)) for k in atlas.shown if k in visualized]


def judge_atom(store: Store, plan: ModelPlan, macos: AtomMacos | None, h: str, atom: int) -> str:
    """One shown atom's state (`atom_units`), from a `macos.json` already read and the current atom hash `h`."""
    entry = macos.atoms.get(str(atom)) if macos is not None else None
    if entry is None:
        return "pending"
    if macos.settings_hash != h:  # type: ignore[union-attr]
        return "stale" if entry.status == "done" else "pending"
    if entry.status == "failed":
        return "failed"
    files = [f for f in (entry.image, entry.alpha) if f]
    return "done" if files and all((store.root / plan.name / f).is_file() for f in files) else "missing"


def pending_units(store: Store, plan: ModelPlan, include_failed: bool = True) -> list[Unit]:
    """Units of this model not yet done with the current settings, in the order they should run:
    CRAFT first (it creates the concept units), then class and concept visualizations, then the
    dictionary's atom visualizations.

    Units recorded as failed with the same settings are included only if `include_failed`.
    """
    todo = TODO + (("failed",) if include_failed else ())
    craft_units, maco_units = [], []
    for c in plan.classes:
        for u, state in class_units(store, plan, store.meta(plan.name, c), c):
            if state in todo:
                (craft_units if u.kind == "craft" else maco_units).append(u)
    return craft_units + maco_units + [u for u, state in atom_units(store, plan) if state in todo]


def settings_diff(recorded: dict[str, Any] | None, current: MacoSettings | CraftSettings) -> dict[str, Any]:
    """The recorded settings that differ from `current` (keys the settings no longer have are ignored)."""
    now = current.model_dump(mode="json")
    return {k: v for k, v in (recorded or {}).items() if k in now and now[k] != v}


def describe_settings(values: dict[str, Any]) -> str:
    """`steps=16, image_size=128`: settings as `lens status` names them."""
    return ", ".join(f"{k}={v}" for k, v in values.items())


def last_settings(store: Store, models: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """For `--settings last`: per part (`maco`, `craft`), the model and the settings of the most
    recently finished done record of these models; a part no record holds is absent."""
    latest: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for model in models:
        for meta in store.iter_meta_records(model, repair=False):
            for kind, record in (("maco", meta.maco), ("craft", meta.craft)):
                if record is not None and record.done and record.settings and record.finished_at:
                    if kind not in latest or record.finished_at > latest[kind][0]:
                        latest[kind] = (record.finished_at, model, record.settings)
    return {kind: (model, settings) for kind, (_, model, settings) in latest.items()}
