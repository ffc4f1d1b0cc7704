"""The Python API, for notebooks and scripts: `import generator as lens`.

Models, from three sources:
    lens.from_zoo("efficientnet-lite0")               an entry of models.yaml (the embedded zoo by default)
    lens.from_timm("resnet50", checkpoint="w.pth")    any timm architecture, with a checkpoint or hub weights
    lens.from_module(net, input_size=224, mean=..., std=..., split="layer4")
                                                       any nn.Module classifier (a torchvision model...)

What they do:
    lens.visualize(model, "espresso,tabby")           MACO class visualizations
    lens.visualize_directions(model, directions)      MACO visualizations of directions in the concept layer
    lens.find_concepts(model, images, "espresso")     CRAFT concepts of a class from a list of PIL images
    lens.open_store("artifacts").records()            what `lens render` wrote
    lens.render(model, "espresso", store="artifacts") what `lens render` writes, for any of the three kinds
                                                       of model: then `lens site --store artifacts` publishes it
    lens.layers(model)                                the cut points `lens layers` lists

Guarantees: results are plain dataclasses holding PIL images and numpy arrays (no tensors, no
files left behind); nothing is written anywhere but by `render`, into the store it is given; the
network is never used unless timm hub weights are asked for; every user error raises a
`generator.errors.LensError` subclass with a one-line message. The settings are those of
`models.yaml` (`MacoSettings`, `CraftSettings`); any of their fields can be given as a keyword
(`steps=32`, `rank=5`). The CLI and this API share the same code (generator/maco/, craft.py,
models/), so a visualization made here equals the one
`lens render` stores for the same model, settings and seed.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .classes import imagenet_class, parse_class_spec
from .config import CraftSettings, MacoSettings, ModelEntry, WeightsSource, load_zoo
from .errors import ConfigError, CraftError, DictionaryError, ModelError, StoreError
from .records import MacoRecord, Meta, part_state
from .store import ClassPaths, UnsafePath

__all__ = [
    "Model", "Visualization", "Concept", "CraftResult", "Record", "StoredPicture", "StoredConcept", "Store",
    "from_zoo", "from_timm", "from_module", "visualize", "visualize_directions", "find_concepts", "demo_images", "open_store",
    "render", "layers",
    "MacoSettings", "CraftSettings",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- models


@dataclass
class Model:
    """A classifier ready for MACO and CRAFT: the module, its preprocessing and its concept-layer split."""

    loaded: Any  # generator.models.LoadedModel
    maco_settings: MacoSettings = field(default_factory=MacoSettings)
    craft_settings: CraftSettings = field(default_factory=CraftSettings)
    has_split: bool = True  # False: concepts (CRAFT) need `split=`; class visualizations work

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def input_size(self) -> int:
        return self.loaded.preprocess.input_size

    @property
    def device(self) -> str:
        return str(self.loaded.device)

    def __repr__(self) -> str:
        p = self.loaded.preprocess
        layer = self.loaded.entry.concept_layer if self.has_split else "none (logits)"
        return f"Model({self.name!r}, input {p.input_size}px, concept layer {layer}, on {self.device})"


def from_zoo(name: str, config: str | Path | None = None, device: str = "cpu") -> Model:
    """An entry of models.yaml (default: ./models.yaml, else the embedded zoo), with its settings."""
    from .models import load_model

    zoo = load_zoo(config)
    entry = zoo.model(name)
    return Model(load_model(entry, zoo.root, device), zoo.maco_settings(entry), zoo.craft_settings(entry))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")[:64] or "model"


def _entry(name: str, weights: dict[str, str], concept_layer: str, preprocess: dict[str, Any], **keys: Any) -> ModelEntry:
    """The models.yaml entry an API model stands for (its identity in the store's settings hashes)."""
    try:
        return ModelEntry(name=_slug(name), weights=WeightsSource(**weights), concept_layer=concept_layer,
                          **{k: v for k, v in {**preprocess, **keys}.items() if v is not None})
    except Exception as e:  # noqa: BLE001 - pydantic's message, in one line
        raise ConfigError(f"model '{name}': {' '.join(str(e).split())}") from None


def from_timm(arch: str, *, checkpoint: str | Path | None = None, pretrained: bool = False, name: str | None = None,
              concept_layer: str = "features", device: str = "cpu", input_size: int | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None, interpolation: str | None = None,
              crop_pct: float | None = None, checkpoint_key: str | None = None, prefix_map: dict[str, str] | None = None,
              key_map: str | None = None) -> Model:
    """Any timm architecture: weights from `checkpoint` (loaded strictly, tensors only), from the
    hub (`pretrained=True`, needs network or the hub cache), or random (neither). `checkpoint_key`,
    `prefix_map` and `key_map` mean what they mean in models.yaml (a timm training checkpoint's
    EMA weights are preferred unless `checkpoint_key="state_dict"`); the weights go through the same
    loader as `lens render`'s, and `model.loaded.weights_used` says which entry and prefixes were
    used. Preprocessing defaults to timm's pretrained config; `concept_layer` as in models.yaml."""
    import timm

    from .models import LoadedModel, build_model, resolve_device

    preprocess = {"input_size": input_size, "mean": tuple(mean) if mean else None, "std": tuple(std) if std else None,
                  "interpolation": interpolation, "crop_pct": crop_pct}
    if pretrained and checkpoint is not None:
        raise ConfigError(f"from_timm('{arch}'): give either checkpoint= or pretrained=True, not both")
    if checkpoint is None and (checkpoint_key or prefix_map or key_map):
        raise ConfigError(f"from_timm('{arch}'): checkpoint_key=, prefix_map= and key_map= need checkpoint=")
    if pretrained or checkpoint is not None:
        weights = {"timm": ""} if pretrained else {"file": str(Path(checkpoint).resolve())}  # type: ignore[arg-type]
        entry = _entry(name or arch, weights, concept_layer, preprocess, arch=arch, checkpoint_key=checkpoint_key,
                       prefix_map=prefix_map, key_map=key_map)
        module, used = build_model(entry, Path.cwd())
        return Model(LoadedModel(entry, module, resolve_device(device), weights_used=used))
    if not timm.is_model(arch):
        raise ModelError(f"'{arch}' is not a timm architecture (timm.list_models() lists them)")
    module = timm.create_model(arch, pretrained=False).eval()
    entry = _entry(name or arch, {"file": f"random initialisation {_fingerprint(module)}"}, concept_layer, preprocess, arch=arch)
    return Model(LoadedModel(entry, module, resolve_device(device)))


def _fingerprint(module: nn.Module) -> str:
    """sha256 of every tensor of the module's state, so that an in-memory model's identity (and the
    settings hash of what `render` writes) changes when its weights do."""
    import hashlib

    digest = hashlib.sha256()
    for key, t in module.state_dict().items():
        digest.update(key.encode())
        flat = t.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return f"sha256:{digest.hexdigest()[:16]}"


def from_module(module: Any, *, input_size: int = 224, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD, interpolation: str = "bilinear", crop_pct: float = 0.875,
                split: str | tuple[Callable, Callable] | None = None, name: str = "module", device: str = "cpu") -> Model:
    """Any `nn.Module` that maps a normalised (N, 3, S, S) batch to class logits.

    `split` says where concepts live (CRAFT needs it, class visualizations do not):
    - a module path such as `"layer4"` (traced with torch.fx; refused when a skip connection crosses it),
    - or a pair `(g, h)`: g maps inputs to non-negative activations (N, C, H, W) or (N, T, C), h maps them to logits,
    - or None: class visualizations only (directions then live in logit space).
    The module is put in eval mode, its parameters frozen, and it is moved to `device`.
    """
    from .models import LoadedModel, resolve_device

    if not isinstance(module, nn.Module):
        raise ModelError(f"from_module: expected a torch nn.Module, got {type(module).__name__}")
    module.eval()
    preprocess = {"input_size": input_size, "mean": tuple(mean), "std": tuple(std), "interpolation": interpolation,
                  "crop_pct": crop_pct}
    layer = split if isinstance(split, str) else "features"
    kind = f"{type(module).__module__}.{type(module).__qualname__}"
    entry = _entry(name, {"file": f"in-memory {type(module).__name__} {_fingerprint(module)}"}, layer, preprocess, arch=kind)
    if isinstance(split, str):
        wrapped = module
    else:
        if split is None:
            def g(x: torch.Tensor) -> torch.Tensor:
                return module(x)[:, :, None, None]  # logits as a 1x1 'feature map'

            def h(act: torch.Tensor) -> torch.Tensor:
                return act.flatten(1)
        else:
            g, h = split
        wrapped = _Split(module, g, h)
    return Model(LoadedModel(entry, wrapped, resolve_device(device)), has_split=split is not None)


class _Split(nn.Module):
    """timm's forward_features / forward_head over any g and h: where LoadedModel splits a model."""

    def __init__(self, module: nn.Module, g: Callable, h: Callable):
        super().__init__()
        self.module, self.g_fn, self.h_fn = module, g, h  # module registered: .to(device) moves it

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.g_fn(x)

    def forward_head(self, act: torch.Tensor) -> torch.Tensor:
        return self.h_fn(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h_fn(self.g_fn(x))


# ----------------------------------------------------------------------------- MACO


@dataclass
class Visualization:
    """One MACO visualization: the picture, its attribution map, and how the model scores it."""

    key: str  # "class/0967" or the direction's key
    image: Image.Image  # RGB
    alpha: Image.Image  # L: |d objective / d image| accumulated over the optimisation, capped
    objective: float
    finite: bool
    class_index: int | None = None
    class_name: str | None = None
    probability: float | None = None  # the model's probability of the class on the whole picture
    rank: int | None = None  # 1 = the model's top class

    @property
    def rgba(self) -> np.ndarray:
        """(H, W, 4) uint8, the attribution map as alpha channel (as on the site)."""
        return np.dstack([np.asarray(self.image), np.asarray(self.alpha)])

    def overlay(self, background: int = 255) -> Image.Image:
        """The picture seen through its attribution map, over a plain background."""
        a = np.asarray(self.alpha, dtype=np.float32)[..., None] / 255
        rgb = np.asarray(self.image, dtype=np.float32) * a + background * (1 - a)
        return Image.fromarray(rgb.round().astype(np.uint8))


_spectra: dict[str, Any] = {}


def _spectrum(choice: str) -> Any:
    from .spectrum import resolve_spectrum

    key = choice
    if key not in _spectra:
        with tempfile.TemporaryDirectory() as tmp:  # computed once per process, cached in memory, never on disk
            try:
                _spectra[key] = resolve_spectrum(choice, Path(tmp))
            except ValueError as e:
                raise ConfigError(f"spectrum: {e}") from None
    return _spectra[key]


def _maco_settings(model: Model, settings: MacoSettings | None, overrides: dict[str, Any]) -> MacoSettings:
    base = settings or model.maco_settings
    try:
        return MacoSettings.model_validate({**base.model_dump(), **overrides})
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"MACO settings {overrides}: {' '.join(str(e).split())}") from None


def _classes(classes: int | str | Sequence[int]) -> list[int]:
    if isinstance(classes, (int, np.integer)):
        return [imagenet_class(int(classes)).index]
    if isinstance(classes, str):
        return parse_class_spec(classes)
    return [imagenet_class(int(c)).index for c in classes]


def _render(model: Model, objectives: list[Any], settings: MacoSettings, spectrum: str, batch_size: int | None) -> list[Any]:
    from .maco import probe_batch_size, render

    spec = _spectrum(spectrum)
    size = batch_size or probe_batch_size(model.loaded, settings, spec)
    out: list[Any] = []
    for i in range(0, len(objectives), size):
        out += render(model.loaded, objectives[i : i + size], settings, spec)
    return out


def visualize(model: Model, classes: int | str | Sequence[int], *, settings: MacoSettings | None = None,
              spectrum: str = "photos", batch_size: int | None = None, **overrides: Any) -> list[Visualization]:
    """MACO class visualizations, one per class (an index, a list, or a SPEC such as "espresso,0-3").

    Settings: the model's (models.yaml for zoo models, else full-scale defaults), then `settings`,
    then keywords (`steps=32, image_size=128`). `spectrum`: photos | powerlaw | a .npy path.
    """
    from .maco import class_objective, classify

    s = _maco_settings(model, settings, overrides)
    indices = _classes(classes)
    renders = _render(model, [class_objective(c) for c in indices], s, spectrum, batch_size)
    probs, ranks = classify(model.loaded, [r.image for r in renders], indices)
    return [Visualization(r.key, Image.fromarray(r.image), Image.fromarray(r.alpha, mode="L"), r.objective, r.finite, c,
                          imagenet_class(c).name, p, k) for r, c, p, k in zip(renders, indices, probs, ranks)]


def visualize_directions(model: Model, directions: Sequence[Any] | np.ndarray, *, keys: Sequence[str] | None = None,
                         settings: MacoSettings | None = None, spectrum: str = "photos", batch_size: int | None = None,
                         **overrides: Any) -> list[Visualization]:
    """MACO visualizations of directions in the pooled concept-layer features (e.g. CRAFT concepts'
    `direction`), objective dot x cos^p as in `lens render`."""
    from .maco import direction_objective

    s = _maco_settings(model, settings, overrides)
    rows = [np.asarray(d.detach().cpu() if hasattr(d, "detach") else d, dtype=np.float32).reshape(-1) for d in directions]
    keys = list(keys) if keys is not None else [f"direction/{i}" for i in range(len(rows))]
    if len(keys) != len(rows):
        raise ConfigError(f"visualize_directions: {len(rows)} directions but {len(keys)} keys")
    channels = model.loaded.num_concept_channels
    for k, row in zip(keys, rows):
        if row.size != channels:
            raise ConfigError(f"visualize_directions: '{k}' has {row.size} values; the concept layer of '{model.name}' has {channels}")
    objectives = [direction_objective(k, torch.from_numpy(row)) for k, row in zip(keys, rows)]
    return [Visualization(r.key, Image.fromarray(r.image), Image.fromarray(r.alpha, mode="L"), r.objective, r.finite)
            for r in _render(model, objectives, s, spectrum, batch_size)]


# ----------------------------------------------------------------------------- CRAFT


@dataclass
class Concept:
    """One CRAFT concept, most important first in `CraftResult.concepts`."""

    id: int  # NMF component
    rank: int  # 1 = most important
    importance: float  # Sobol total index for the class logit
    logit_share: float | None  # exact share of the logit where h is pool + linear
    removal_drop: float  # class logit drop when only this concept is removed
    direction: np.ndarray  # (C,) float32: visualize it with visualize_directions
    crops: list[Image.Image]  # the patches that express it most
    heatmaps: list[Image.Image]  # where it appears in the source images (blended overlays)


@dataclass
class CraftResult:
    class_index: int
    class_name: str
    concepts: list[Concept]
    image_selection: str  # predicted | all (too few predicted as the class) | none
    n_images: int
    nmf_error: float
    deletion: dict[str, Any]
    reason: str | None = None  # why there are no concepts, when there are none


def demo_images() -> list[Image.Image]:
    """The nine natural photos bundled with scikit-image, scikit-learn and matplotlib (offline)."""
    from .images import demo_photos

    return [p.image for p in demo_photos()]


def find_concepts(model: Model, images: Sequence[Image.Image | str | Path], class_index: int | str, *,
          settings: CraftSettings | None = None, **overrides: Any) -> CraftResult:
    """CRAFT concepts of one class (an index or a name) from a list of images (PIL images or paths).

    As in `lens render`: the images the model predicts as the class are used, or all of them when
    fewer than `min_predicted` are. Settings: the model's, then `settings`, then keywords (`rank=5`).
    """
    from . import craft as craft_method
    from .images import SourceImage, load_rgb

    if not model.has_split:
        raise CraftError(f"model '{model.name}': CRAFT needs the concept layer: pass split= to from_module")
    indices = _classes(class_index)
    if len(indices) != 1:
        raise ConfigError(f"craft: one class at a time, got {len(indices)} from {class_index!r}")
    c = indices[0]
    sources = []
    for i, im in enumerate(images):
        if isinstance(im, Image.Image):
            sources.append(SourceImage(f"image/{i}", im.convert("RGB")))
        else:
            loaded = load_rgb(im)
            if loaded is not None:
                sources.append(SourceImage(str(im), loaded))
    base = settings or model.craft_settings
    try:
        s = CraftSettings.model_validate({**base.model_dump(), **overrides})
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"CRAFT settings {overrides}: {' '.join(str(e).split())}") from None
    result = craft_method.run_craft(model.loaded, sources, c, s)
    size = model.input_size
    concepts = []
    for rank, k in enumerate(result.concepts, start=1):
        vmax = float(result.maps[..., k.id].max())
        views = list(dict.fromkeys(crop.view for crop in k.crops))[: s.attribution_images]
        concepts.append(Concept(
            k.id, rank, k.importance, k.logit_share, k.removal_drop, k.direction.numpy().astype(np.float32),
            [craft_method.crop_image(result.views[crop.view], crop.box, size) for crop in k.crops],
            [craft_method.attribution_overlay(result.views[v], result.maps[v, ..., k.id], vmax) for v in views],
        ))
    return CraftResult(c, imagenet_class(c).name, concepts, result.selection, len(result.views), float(result.nmf_error),
                       dict(result.deletion), result.reason)


# ----------------------------------------------------------------------------- layers and rendering into a store


def sample_layers(module: nn.Module, transform: Callable, samples: int = 4,
                  include_unclean: bool = False) -> tuple[list[Any], int]:
    """`lens layers`: the module's cut points (generator.models.LayerRow: name, clean cut, shape,
    sign) run on the first `samples` demo photos, and how many photos that was."""
    from .images import demo_photos
    from .models import layer_table

    photos = demo_photos()[: max(1, samples)]
    x = torch.stack([transform(p.image) for p in photos])
    return layer_table(module, x, include_unclean=include_unclean), len(photos)


def layers(model: Model, *, samples: int = 4, include_unclean: bool = False) -> list[Any]:
    """The model's concept-layer candidates, as `lens layers` lists them: a list of
    generator.models.LayerRow (`.name`, `.clean`, `.shape`, `.non_negative`, `.module`), `features` first.
    Any clean cut's name can be given as `split=` (from_module) or `concept_layer=`."""
    loaded = model.loaded
    module = loaded.module.module if isinstance(loaded.module, _Split) else loaded.module
    param = next(module.parameters(), None)
    transform = loaded.image_transform()
    dtype = param.dtype if param is not None else torch.float32

    def to_module(image: Image.Image) -> torch.Tensor:
        return transform(image).to(loaded.device, dtype)

    return sample_layers(module, to_module, samples, include_unclean)[0]


_SETTINGS_KEYS = {"maco": set(MacoSettings.model_fields), "craft": set(CraftSettings.model_fields)}


def render(model: Model, classes: int | str | Sequence[int], *, store: str | Path = "artifacts", what: str = "maco,craft",
           images: str | Path | None = None, spectrum: str = "photos", batch_size: int | None = None,
           progress: bool = False, **overrides: Any) -> Any:
    """Render a model into an artifact store, as `lens render` does, so that `lens site --store STORE`
    publishes it (a notebook's model included).

    The same code as `lens render` writes the same records: MACO and CRAFT parts per class, the
    model card, and settings hashes from the model's identity (for `from_module` and random
    `from_timm` models that includes a hash of the weights, so changed weights re-render). Units
    the store holds with the same settings are skipped; one that fails is recorded as failed and
    the others go on. Settings: the model's, then keywords (`steps=32`, `rank=5`; `seed=` sets both
    methods' seed). `what`: maco, craft or maco,craft; `images`: an ImageNet-layout folder for
    CRAFT (default: the demo photos). Runs in this process on the model's device. Returns the run's
    RenderSummary (`.done`, `.failed`, `.failures`, `.exit_code`)."""
    import signal

    from .config import Defaults, Zoo, ZooFile
    from .plan import RenderJob, Request, parse_parts, resolve
    from .workers import run_render

    unknown = sorted(set(overrides) - _SETTINGS_KEYS["maco"] - _SETTINGS_KEYS["craft"])
    if unknown:
        raise ConfigError(f"render: unknown setting {', '.join(map(repr, unknown))} (MACO: "
                          f"{', '.join(sorted(_SETTINGS_KEYS['maco']))}; CRAFT: {', '.join(sorted(_SETTINGS_KEYS['craft']))})")
    if not model.has_split and "craft" in parse_parts(what):
        raise CraftError(f"model '{model.name}': CRAFT needs the concept layer: pass split= to from_module, or what='maco'")
    if not model.has_split and "dictionary" in parse_parts(what):
        raise DictionaryError(f"model '{model.name}': the dictionary needs the concept layer: pass split= to from_module")
    entry = model.loaded.entry
    zoo = Zoo(ZooFile(models=[entry], defaults=Defaults(maco=model.maco_settings, craft=model.craft_settings)),
              Path(f"<python API: model '{entry.name}'>"), root=Path.cwd())
    request = Request(
        config=zoo.path, out=Path(store), models=[entry.name], classes=_classes(classes), parts=parse_parts(what),
        maco_overrides={k: v for k, v in overrides.items() if k in _SETTINGS_KEYS["maco"]},
        craft_overrides={k: v for k, v in overrides.items() if k in _SETTINGS_KEYS["craft"]},
        images=Path(images) if images is not None else None, spectrum=spectrum,
    )
    zoo.maco_settings(entry, request.maco_overrides)  # a bad value is one ConfigError now, not a failed unit
    zoo.craft_settings(entry, request.craft_overrides)
    job = RenderJob(resolve(request, zoo=zoo), devices=[model.device], batch_size=batch_size, progress=progress)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_render(job, models={entry.name: model.loaded})
    finally:  # the render's Ctrl-C handling ends with it (a notebook keeps its own)
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


# ----------------------------------------------------------------------------- the store


@dataclass
class StoredPicture:
    """A stored visualization (or the reason there is none); images load when first read."""

    status: str  # done | failed | missing
    error: str | None = None
    image_path: Path | None = None
    alpha_path: Path | None = None
    record: MacoRecord | None = None  # the meta.json part record (generator/records.py)

    @property
    def image(self) -> Image.Image | None:
        return Image.open(self.image_path).convert("RGB") if self.image_path else None

    @property
    def alpha(self) -> Image.Image | None:
        return Image.open(self.alpha_path).convert("L") if self.alpha_path else None


@dataclass
class StoredConcept:
    id: int
    rank: int
    importance: float
    logit_share: float | None
    crop_paths: list[Path]
    visualization: StoredPicture

    @property
    def crops(self) -> list[Image.Image]:
        return [Image.open(p).convert("RGB") for p in self.crop_paths]


@dataclass
class Record:
    """What the store holds for one (model, class)."""

    model: str
    class_index: int
    class_name: str
    maco: StoredPicture
    craft_status: str  # done | failed | missing
    concepts: list[StoredConcept]
    meta: Meta  # the validated meta.json (schema in generator/records.py)


def _picture(paths: ClassPaths, rec: MacoRecord | None) -> StoredPicture:
    if rec is None:
        return StoredPicture(part_state(rec))
    if not rec.done:
        return StoredPicture(part_state(rec), rec.error, record=rec)
    files = rec.files
    try:  # the store's one path check: a path that leaves the store is never opened
        return StoredPicture("done", None, paths.path(files["image"]) if "image" in files else None,
                             paths.path(files["alpha"]) if "alpha" in files else None, rec)
    except UnsafePath as e:
        return StoredPicture("missing", str(e), record=rec)


class Store:
    """Read-only view of an artifact store (the folder `lens render` writes)."""

    def __init__(self, root: str | Path):
        from .store import Store as _Store

        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no such artifact store (a folder written by `lens render`)")
        self._store = _Store(self.root)

    def models(self) -> list[str]:
        return self._store.models()

    def record(self, model: str, class_index: int) -> Record | None:
        meta = self._store.meta(model, class_index, repair=False)
        return None if meta is None else self._record(model, meta)

    def records(self, model: str | None = None, classes: int | str | Sequence[int] | None = None) -> list[Record]:
        """Records of one model (default: all), optionally of some classes, in (model, class) order."""
        wanted = None if classes is None else set(_classes(classes))
        out = []
        for m in [model] if model else self.models():
            out += [self._record(m, meta) for meta in self._store.iter_meta_records(m, wanted, repair=False)]
        return out

    def _record(self, model: str, meta: Meta) -> Record:
        c = meta.class_index
        paths = self._store.class_paths(model, c)
        concepts = [StoredConcept(k.id, k.rank, k.importance if k.importance is not None else float("nan"), k.logit_share,
                                  [p for p in map(paths.path_or_none, (crop.file for crop in k.crops)) if p is not None],
                                  _picture(paths, k.maco))
                    for k in meta.concepts]
        return Record(model, c, imagenet_class(c).name, _picture(paths, meta.maco),
                      part_state(meta.craft), concepts, meta)

    def figure(self, classes: int | str | Sequence[int], models: Sequence[str] | None = None, *, overlay: bool = False,
               concepts: int = 0, cell: float = 1.4) -> Any:
        """The `lens figure` grid as a matplotlib Figure (save it with .savefig)."""
        from .figure import grid_figure

        return grid_figure(self.root, _classes(classes), list(models or self.models()), overlay, concepts, cell)


def open_store(root: str | Path) -> Store:
    """A read-only view of an artifact store: `.models()`, `.records()`, `.record(model, class)`, `.figure()`."""
    return Store(root)
