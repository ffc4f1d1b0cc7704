"""Typed store records: the unit of work, `meta.json` and `model.json`, defined once.

Every reader and writer of the store goes through these models: plan, status, workers, quality,
the site, the Python API (`lens.open_store`), `lens figure` and `lens render --dry-run/--force`.

The unit of work is `Unit(model, class_index, kind, concept)`: kind `maco` (class visualization),
`craft` (the class's concepts), `concept` (MACO of concept `concept`'s direction) or `atom` (MACO of
atom `concept` of the model's dictionary, `Unit.atom(model, k)`, class_index NO_CLASS, id
`<model>/dictionary/atom-<NNNN>`, recorded in `<model>/dictionary/macos.json`). Its text form
`<model>/<class, 4 digits>/<part>` with part `maco`, `craft` or `concept/<k>` is parsed in one place,
`Unit.parse`. Its settings hash is computed in one place, `plan.ModelPlan.unit_hash`.

On disk (JSON, `extra` keys are kept, so newer writers never lose older readers' data)::

    meta.json (schema 2; schema 1 files read unchanged, since 2 only adds the `no-images` state)
    {"schema": 2, "model": str, "class_index": 0..999, "wnid": str, "class_name": str,
     "maco":    MacoRecord | absent,
     "craft":   CraftRecord | absent,
     "concepts": [Concept, ...]}          # ordered by importance, rank 1 first

    a part record (MacoRecord, CraftRecord): "status": "done" | "failed" | "no-images",
      "settings_hash", and when done "settings", "wall_time_s", "versions", "finished_at", "files",
      "weights_used" (config.WeightsUsed: the weights' source, checkpoint entry and prefixes stripped);
      when failed "error" and "attempts"; "no-images" (CRAFT only): the class had no usable image,
      "reason" says so and "images_source" says where they were looked for. It is neither done nor
      failed: the site shows "no photos were available", status and the run summary count it apart.
    MacoRecord adds "files": {"image", "alpha"}, "seed", "objective_key", "spectrum", "steps",
      "batch_size", "objective", "self_prob", "self_rank", "quality": Quality.
    CraftRecord adds "files": {"directions", "per_image", "thumbs"}, "n_images", "image_selection",
      "nmf_error" (the dictionary's relative reconstruction error), "method" (the dictionary method:
      nmf, semi-nmf...), "timings_s", "images_source", "reason", "deletion", "credits" (the formats
      of the files: generator/sidefiles.py).
    Concept: "id", "rank", "importance", "logit_share", "removal_drop", "crops": [{"file",
      "source", "box", "view_box", "coefficient"}], "attributions": [{"file", "source", "photo"}],
      "maco": MacoRecord | absent.
    Quality: "transfer": {judge: {"rank", "prob"}}, "plausibility": {"model", "same_class",
      "other_classes", "margin"} | absent, "key": what was scored (judges, settings hash), so a
      unit scored by the same judges with the same settings is skipped.

    model.json (schema 2): "name", "arch", "weights", "key_map", "description", "params",
      "preprocess", "concept_layer", "accuracy": {"top1", "n_images", "source"} | null,
      "head": {"file", "kind", "key"} | null (`<model>/head.npz`, generator/sidefiles.py),
      "weights_used": WeightsUsed | absent. "arch" is the builder in words: a timm architecture,
      `torchvision:NAME` or `factory:module:function`.

Per model, the concept dictionary (issue 19): `<model>/dictionary.json` (DictionaryRecord), its atlas
`dictionary/atlas.<h>.json` (AtlasRecord), the atom MACOs' `dictionary/macos.json` (AtomMacos); across
models, `<store>/dictionary-matches/<A>--<B>.json` (MatchRecord). Readers and writers: generator/store.py.

A file that does not parse or does not fit these models is not silently trusted: the store moves
it aside (`meta.json.corrupt-<UTC time>`) and its units count as not done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import WeightsUsed

SCHEMA = 2
READABLE_SCHEMAS = (1, 2)
Kind = Literal["maco", "craft", "concept", "atom"]
Status = Literal["done", "failed", "no-images"]
_UNIT_ID = re.compile(r"^(?P<model>[^/]+)/(?P<cls>\d{1,4})/(?P<part>maco|craft|concept/(?P<k>\d+))$")
_ATOM_ID = re.compile(r"^(?P<model>[^/]+)/dictionary/atom-(?P<k>\d{4,5})$")
NO_CLASS = -1  # the class_index of a model-wide unit (an atom of the dictionary)


@dataclass(frozen=True, order=True)
class Unit:
    """One piece of work: a part of a (model, class)."""

    model: str
    class_index: int
    kind: Kind
    concept: int | None = None

    def __post_init__(self) -> None:
        if (self.kind in ("concept", "atom")) != (self.concept is not None):
            raise ValueError(f"unit {self.model}/{self.class_index}: kind {self.kind!r} with concept {self.concept!r}")
        if (self.kind == "atom") != (self.class_index == NO_CLASS):
            raise ValueError(f"unit {self.model}: kind {self.kind!r} with class {self.class_index}")

    @classmethod
    def atom(cls, model: str, atom: int) -> Unit:
        """The MACO of atom `atom` of the model's dictionary: `<model>/dictionary/atom-<NNNN>`."""
        return cls(model, NO_CLASS, "atom", atom)

    @classmethod
    def of(cls, model: str, class_index: int, part: str) -> Unit:
        """From a part name: `maco`, `craft` or `concept/<k>`."""
        return cls.parse(f"{model}/{class_index:04d}/{part}")

    @classmethod
    def parse(cls, unit_id: str) -> Unit:
        """The one parser of `<model>/<class>/<part>` and `<model>/dictionary/atom-<NNNN>` strings."""
        atom = _ATOM_ID.match(unit_id)
        if atom is not None:
            return cls.atom(atom.group("model"), int(atom.group("k")))
        m = _UNIT_ID.match(unit_id)
        if m is None:
            raise ValueError(f"not a unit id: {unit_id!r}")
        k = m.group("k")
        kind = "concept" if k is not None else m.group("part")
        return cls(m.group("model"), int(m.group("cls")), kind, int(k) if k is not None else None)  # type: ignore[arg-type]

    @property
    def part(self) -> str:
        if self.kind == "atom":
            return f"atom-{self.concept:04d}"
        return f"concept/{self.concept}" if self.kind == "concept" else self.kind

    @property
    def id(self) -> str:
        if self.kind == "atom":
            return f"{self.model}/dictionary/{self.part}"
        return f"{self.model}/{self.class_index:04d}/{self.part}"

    @property
    def folder(self) -> str:
        """Where the unit's MACO files live inside the class folder ("" or `concepts/<k>/`)."""
        return f"concepts/{self.concept}/" if self.kind == "concept" else ""


class _Record(BaseModel):
    # extra="allow": fields added by newer code survive a rewrite by older code, and vice versa.
    model_config = ConfigDict(extra="allow", validate_assignment=False)


class PartRecord(_Record):
    status: Status
    settings_hash: str
    settings: dict[str, Any] | None = None
    files: dict[str, str] = Field(default_factory=dict)
    wall_time_s: float | None = None
    versions: dict[str, str] | None = None
    finished_at: str | None = None
    device: str | None = None
    error: str | None = None
    attempts: int | None = None
    weights_used: WeightsUsed | None = None  # what the weights were read from (checkpoint entry, prefixes)

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def failed(self) -> bool:
        return self.status == "failed"


PartState = Literal["missing", "done", "failed", "no-images"]
# What each state is called where people read it (`lens figure`'s notes; the site's templates word
# their own placeholders from the same states).
STATE_WORDS: dict[str, str] = {"missing": "not rendered", "done": "done", "failed": "failed", "no-images": "no usable images"}


def part_state(record: PartRecord | None) -> PartState:
    """The one name of a stored part's state: `missing` without a record, else its status.

    Judged against a plan (settings, files on disk), `plan.unit_state` refines it: a part without a
    record is `pending` there, and `missing` means its files are gone."""
    return "missing" if record is None else record.status


class Transfer(_Record):
    rank: int
    prob: float


class Plausibility(_Record):
    model: str
    same_class: float
    other_classes: float
    margin: float


class Quality(_Record):
    transfer: dict[str, Transfer] = Field(default_factory=dict)
    plausibility: Plausibility | None = None
    key: str | None = None  # judges and settings this was scored with (incremental `lens quality`)


class MacoRecord(PartRecord):
    seed: int | None = None
    objective_key: str | None = None
    spectrum: str | None = None
    steps: int | None = None
    batch_size: int | None = None
    objective: float | None = None
    self_prob: float | None = None
    self_rank: int | None = None
    quality: Quality | None = None


class Deletion(_Record):
    """CRAFT's deletion check: the logit as concepts are removed by importance vs in random order."""

    auc_importance: float | None = None
    auc_random: float | None = None
    curve_importance: list[float] | None = None
    curve_random: list[float] | None = None


class CraftRecord(PartRecord):
    # Writers assign `deletion` as a dict (workers.save_craft): validated into the record on assignment.
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    n_images: int | None = None
    image_selection: str | None = None
    nmf_error: float | None = None
    method: str | None = None  # dictionary method: nmf, semi-nmf...
    timings_s: dict[str, float] | None = None
    images_source: str | None = None
    reason: str | None = None
    deletion: Deletion | None = None
    credits: list[str] | None = None


class Crop(_Record):
    file: str
    source: str | None = None
    box: list[float] | None = None
    view_box: list[float] | None = None
    coefficient: float | None = None


class Attribution(_Record):
    file: str
    source: str | None = None
    photo: str | None = None  # the plain view under the heatmap, same size and framing


class Concept(_Record):
    id: int = Field(ge=0)
    rank: int = Field(ge=1)
    importance: float | None = None
    logit_share: float | None = None
    removal_drop: float | None = None
    crops: list[Crop] = Field(default_factory=list)
    attributions: list[Attribution] = Field(default_factory=list)
    maco: MacoRecord | None = None


class Meta(_Record):
    """One class of one model: `<store>/<model>/<class>/meta.json`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_version: int = Field(SCHEMA, alias="schema")
    model: str
    class_index: int = Field(ge=0, le=999)
    wnid: str
    class_name: str
    maco: MacoRecord | None = None
    craft: CraftRecord | None = None
    concepts: list[Concept] = Field(default_factory=list)

    # ------------------------------------------------------------ reading and writing
    @classmethod
    def from_json_obj(cls, obj: Any) -> Meta:
        """Validated; raises ValueError (naming the problem) for anything that is not a meta.json."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
        if obj.get("schema") not in READABLE_SCHEMAS:
            raise ValueError(f"schema {obj.get('schema')!r} is not one of {list(READABLE_SCHEMAS)}")
        try:
            return cls.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "top level"
            more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
            raise ValueError(f"{where}: {err['msg']}{more}") from None

    def to_json_obj(self) -> dict[str, Any]:
        """The on-disk dict: fields that are None are left out."""
        out = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        out["schema"] = SCHEMA
        return out

    # ------------------------------------------------------------ units
    def concept(self, concept_id: int) -> Concept | None:
        return next((c for c in self.concepts if c.id == concept_id), None)

    def record(self, unit: Unit) -> PartRecord | None:
        """The record of a unit's part, or None."""
        if unit.kind == "maco":
            return self.maco
        if unit.kind == "craft":
            return self.craft
        c = self.concept(unit.concept)  # type: ignore[arg-type]
        return c.maco if c is not None else None

    def set_record(self, unit: Unit, record: PartRecord) -> bool:
        """Store a unit's record; False when the unit's concept no longer exists (CRAFT re-run)."""
        if unit.kind == "maco":
            self.maco = record  # type: ignore[assignment]
        elif unit.kind == "craft":
            self.craft = record  # type: ignore[assignment]
        else:
            c = self.concept(unit.concept)  # type: ignore[arg-type]
            if c is None:
                return False
            c.maco = record  # type: ignore[assignment]
        return True

    def files_of(self, unit: Unit) -> list[str]:
        """Relative paths of the files the unit's done record lists (CRAFT: directions, crops, heatmaps)."""
        rec = self.record(unit)
        if rec is None:
            return []
        files = list(rec.files.values())
        if unit.kind == "craft":
            for c in self.concepts:
                files += [x.file for x in c.crops] + [a.file for a in c.attributions]
                files += [a.photo for a in c.attributions if a.photo]
        return files

    def unit_ids(self, kinds: tuple[str, ...] = ("maco", "craft", "concept")) -> list[Unit]:
        """Every unit this meta.json holds a record for."""
        units = []
        if "maco" in kinds and self.maco is not None:
            units.append(Unit(self.model, self.class_index, "maco"))
        if "craft" in kinds and self.craft is not None:
            units.append(Unit(self.model, self.class_index, "craft"))
        if "concept" in kinds:
            units += [Unit(self.model, self.class_index, "concept", c.id) for c in self.concepts if c.maco is not None]
        return units


class Preprocess(_Record):
    """What the model was given: LoadedModel.preprocess (models.Preprocess.as_dict), as rendered."""

    input_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None
    crop_pct: float | None = None

    def items(self) -> list[tuple[str, Any]]:
        """The keys model.json holds, in its order (keys a card does not have are left out)."""
        return list(self.model_dump(mode="json", exclude_unset=True).items())


class Accuracy(_Record):
    """Top-1 of the model on `n_images` labelled images of `source`, as `lens quality` measured it."""

    top1: float | None = None
    n_images: int | None = None
    source: str | None = None


class HeadRecord(_Record):
    """What `<model>/head.npz` holds (generator/sidefiles.py): its file, kind and the key it was computed for."""

    file: str
    kind: str | None = None
    key: str | None = None


class ModelCard(_Record):
    """`<store>/<model>/model.json`: what was rendered, and the model's accuracy once scored."""

    # validate_assignment: writers assign plain dicts (worker: preprocess; quality: accuracy), stored as records.
    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=(), validate_assignment=True)

    schema_version: int = Field(SCHEMA, alias="schema")
    name: str
    arch: str | None = None
    weights: str | None = None
    key_map: str | None = None
    description: str | None = None
    params: int | None = None
    preprocess: Preprocess | None = None
    concept_layer: str | None = None
    accuracy: Accuracy | None = None
    head: HeadRecord | None = None
    weights_used: WeightsUsed | None = None  # what the weights were read from (checkpoint entry, prefixes)

    @classmethod
    def from_json_obj(cls, obj: Any) -> ModelCard:
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
        obj = {"schema": 1, **obj}  # cards written before the schema field
        try:
            return cls.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None

    def to_json_obj(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", by_alias=True)
        if out.get("weights_used") is None:  # absent, as in cards written before it existed
            out.pop("weights_used", None)
        out["schema"] = SCHEMA
        return out


class DictionaryRecord(PartRecord):
    """`<store>/<model>/dictionary.json`: the model-wide concept dictionary (issue 19 §2), its own file so
    that stores written before it read unchanged. `files` (relative to `<store>/<model>/`) holds `atoms`,
    a safetensors file of the SAE (D, W_enc, b_enc, b_dec) with each atom's `frequency` and `energy`; once its
    atlas is computed, `atlas` (`dictionary/atlas.<h>.json`, `AtlasRecord`) and `codes`
    (`dictionary/codes.<h>.npz`, generator/sidefiles.py) for cross-model matching."""

    n_images: int | None = None  # photo views the token pass saw
    n_tokens: int | None = None  # tokens trained on
    n_heldout: int | None = None  # tokens R², L0 and the dead fraction are measured on
    images_source: str | None = None
    r2: float | None = None
    l0: float | None = None
    dead_fraction: float | None = None
    frequency: dict[str, float] | None = None  # summary over atoms: min, median, max
    energy_top10: float | None = None  # share of the coded energy held by the 10 most energetic atoms
    epochs: int | None = None
    resumed_from: int | None = None  # epoch the finishing session started from (0: fresh)
    augmented: bool | None = None  # the photos were augmented (mirrors, crops) to give enough tokens
    n_photos: int | None = None  # photos behind the `n_images` views (fewer when augmented)
    timings_s: dict[str, float] | None = None  # `atlas`: the atlas pass after training

    @classmethod
    def from_json_obj(cls, obj: Any) -> DictionaryRecord:
        return cls.model_validate(obj)


# ----------------------------------------------------------------------------- the dictionary's atlas (issue 19 §4-§5)
#
# Paths below are relative to `<store>/<model>/`; `<h>` is the dictionary's settings hash
# (`plan.ModelPlan.dictionary_hash`). The side files they name (region strips, codes) are written and
# read by generator/sidefiles.py.

TOP_SHARED = 5  # a class's top shared concepts (`ClassAtoms.top`); atoms among them are `shown`
TOP_CLASSES = 10  # classes listed per atom (`AtlasAtom.classes`)
TOP_COOCCUR = 5  # co-occurring atoms listed per atom (`AtlasAtom.cooccur`)


class ClassShare(_Record):
    """A class using an atom: its share in % of that class's mean logit (signed)."""

    class_index: int = Field(ge=0, le=999)
    share: float


class AtomScore(_Record):
    """Another atom and a score: Jaccard over tokens (`cooccur`)."""

    atom: int = Field(ge=0)
    score: float


class AtomShare(_Record):
    """An atom and its share in % of a class's mean logit (signed)."""

    atom: int = Field(ge=0)
    share: float


class AtlasAtom(_Record):
    """One atom of the dictionary as the atlas describes it.

    `frequency`: fraction of the tokens where it fires; `energy`: its share of the coded energy;
    `shown`: alive and among some class's TOP_SHARED atoms (it gets a page and a MACO); `xy`: its
    point on the 2-D map (seeded t-SNE of the alive atoms' decoder rows), None when dead; `classes`:
    up to TOP_CLASSES classes using it most, by share; `cooccur`: up to TOP_COOCCUR atoms firing on the
    same tokens most, by Jaccard; `regions`: the stem of its region strips
    (`dictionary/regions/<NNNN>.<h>`, sidefiles.region_strips), None when it has none."""

    index: int = Field(ge=0)
    frequency: float
    energy: float
    alive: bool
    shown: bool = False
    xy: list[float] | None = None
    classes: list[ClassShare] = Field(default_factory=list)
    cooccur: list[AtomScore] = Field(default_factory=list)
    regions: str | None = None


class ClassAtoms(_Record):
    """A class's part of the dictionary: its TOP_SHARED atoms by share, and the bias and residual shares
    (in % of the class's mean logit over its `n_images` photos: every atom + bias + residual = 100)."""

    n_images: int = Field(ge=0)
    top: list[AtomShare] = Field(default_factory=list)
    bias_share: float
    residual_share: float


class AtlasRecord(_Record):
    """`<model>/dictionary/atlas.<h>.json` (dictionary.json `files["atlas"]`): what the dictionary's pages
    show, from one encode pass of the dictionary's photos after training. `head_kind`: "linear" (Γ = D·W,
    exact) or "gradient" (gradient x input on the codes); `classes` keyed by the class index as text."""

    settings_hash: str
    head_kind: Literal["linear", "gradient"]
    n_images: int = Field(ge=0)
    n_tokens: int = Field(ge=0)
    images_source: str | None = None
    augmented: bool = False
    n_photos: int | None = None  # photos behind the `n_images` views (fewer when augmented)
    atoms: list[AtlasAtom] = Field(default_factory=list)
    classes: dict[str, ClassAtoms] = Field(default_factory=dict)

    def atom(self, index: int) -> AtlasAtom | None:
        """The atom with this index, or None (atoms are listed by index: a direct look-up, checked)."""
        if 0 <= index < len(self.atoms) and self.atoms[index].index == index:
            return self.atoms[index]
        return next((a for a in self.atoms if a.index == index), None)

    @property
    def shown(self) -> list[int]:
        """The atoms that get a page and a MACO, in index order."""
        return [a.index for a in self.atoms if a.shown]


class AtomMaco(_Record):
    """One atom's MACO: `image` and `alpha` (relative paths, when done), or the `error` (when failed)."""

    status: Literal["done", "failed"]
    image: str | None = None
    alpha: str | None = None
    error: str | None = None
    seconds: float | None = None


class AtomMacos(_Record):
    """`<model>/dictionary/macos.json`: the atom MACO units' results, keyed by the atom index as text, with
    the settings hash they were rendered with (the one writer: the atom MACO unit, under a lock)."""

    settings_hash: str
    atoms: dict[str, AtomMaco] = Field(default_factory=dict)
    # `dictionary.visualize` when last written: atoms beyond each class's top `visualize` get no MACO
    # (None: every shown atom does; files written before it was recorded read so too).
    visualize: int | None = None


class AtomMatch(_Record):
    """The best atom of the other model for one atom: its Pearson score, and whether the match is mutual."""

    atom: int = Field(ge=0)
    score: float
    mutual: bool


class MatchRecord(_Record):
    """`<store>/dictionary-matches/<A>--<B>.json` (A, B sorted by name): atoms of A and B matched by how
    their code maps correlate over the `n_images` photo views both saw, resampled to the common `grid`.
    Only matches with score >= `threshold` are listed (keys: the atom index as text); `mutual_rate` is the
    share of A's matched atoms whose best in B has A's atom as its best."""

    models: list[str] = Field(min_length=2, max_length=2)
    n_images: int = Field(ge=0)
    grid: list[int] = Field(min_length=2, max_length=2)
    threshold: float
    mutual_rate: float
    a_to_b: dict[str, AtomMatch] = Field(default_factory=dict)
    b_to_a: dict[str, AtomMatch] = Field(default_factory=dict)
    dictionaries: list[str] | None = None  # the settings hashes of A's and B's dictionaries it was computed from
