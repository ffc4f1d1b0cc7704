"""`models.yaml`: the model zoo and the global settings, validated with pydantic.

Everything a render needs to know is resolved here into plain, hashable settings objects;
no other module reads YAML.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .errors import ConfigError

SLUG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
RESERVED_NAMES = ("spectra", "runs.jsonl", "dictionary-matches")  # entries of the artifact store beside the model folders
CONFIG_FILENAME = "models.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MacoSettings(_Strict):
    """MACO (Fel et al. 2023) settings. Defaults are full-scale, meant for GPUs."""

    # inf or NaN in any of these can only give a NaN image: refused here, not found after a render.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    steps: int = Field(128, ge=1, description="optimisation steps")
    image_size: int = Field(512, ge=32, description="side of the rendered image, in pixels")
    crops: int = Field(8, ge=1, description="random crops per step and objective")
    crop_scale: tuple[float, float] = Field(
        (0.25, 1.0), description="min and max crop side, as a fraction of the image side"
    )
    crop_jitter: float = Field(0.15, ge=0, description="std of the crop centre around the image centre")
    # Turned crops (issue 22): at 512 px plausibility top-5 90 % instead of 80 %, and 26 % faster than roi_align's
    # adaptive sampling of large crops (benchmarks/README.md); 0 gives the axis-aligned crops of before.
    crop_rotation: float = Field(30.0, ge=0, le=180, description="each crop turned by an angle drawn in +-this many "
                                 "degrees (0: axis-aligned crops, as the reference)")
    noise: float = Field(0.05, ge=0, description="amplitude of the noise added to each crop")
    lr: float = Field(1.0, gt=0, description="NAdam learning rate on the phase")
    # Issue 22: at 512 px on its ten classes, over seeds 0-2, plausibility top-1 70 % instead of 63 % and top-5 90 % instead
    # of 80 % against the constant rate (benchmarks/README.md): the large late steps no longer stir the finished image.
    lr_decay: float = Field(0.1, gt=0, le=1, description="learning rate at the last step, as a fraction of `lr`, "
                            "reached along a half cosine (1: constant, as the reference)")
    seed: int = Field(0, description="base seed; each objective derives its own from it")
    cossim_power: float = Field(2.0, ge=0, description="p in dot x cos^p (direction objectives)")
    image_percentile: float = Field(1.0, ge=0, lt=50, description="percentile clipped at each end of the image")
    # ImageNet's mean colour (0.485, 0.456, 0.406) at half strength in logit units: the finishing stretch widens the colour
    # spread, and the full mean overshoots the photos' warmth (benchmarks/README.md, issue 22).
    mean_color: tuple[float, float, float] | None = Field(
        (0.49, 0.48, 0.45), description="mean RGB in (0, 1) the image is drawn around (null: grey, as before issue 22)"
    )
    alpha_percentile: float = Field(90.0, gt=0, le=100, description="percentile at which the alpha map is capped")
    input_size: int | None = Field(None, ge=32, description="side of the crops fed to the model (default: model input)")

    @field_validator("crop_scale")
    @classmethod
    def _ordered_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1.5):
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1.5, got {list(v)}")
        return v

    @model_serializer(mode="wrap")
    def _stable_dump(self, handler: Any) -> dict[str, Any]:
        # Settings that came later are left out at their neutral value, so the settings hashes of renders made before
        # them stay what they were: `crop_rotation` 0 (axis-aligned crops), `lr_decay` 1 (constant learning rate).
        data = handler(self)
        for key, neutral in (("crop_rotation", 0), ("lr_decay", 1)):
            if data.get(key) == neutral:
                del data[key]
        return data

    @field_validator("mean_color")
    @classmethod
    def _open_unit(cls, v: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
        if v is not None and not all(0 < c < 1 for c in v):
            raise ValueError(f"mean_color must lie strictly between 0 and 1, got {list(v)}")
        return v


class CraftSettings(_Strict):
    """CRAFT (Fel et al. CVPR 2023) settings."""

    rank: int = Field(10, ge=1, description="number of concepts (NMF rank)")
    patch_size: int = Field(64, ge=8, description="patch side in pixels at a 224-pixel input (scaled with the input)")
    patch_stride: float = Field(0.8, gt=0, le=1, description="stride as a fraction of the patch side")
    max_images: int = Field(200, ge=1, description="images per class, at most")
    min_predicted: int = Field(
        5, ge=1, description="fewer correctly predicted images than this: use all the class's images"
    )
    top_crops: int = Field(10, ge=1, description="crops shown per concept")
    attribution_images: int = Field(4, ge=0, description="source images with concept attribution maps, per concept")
    sobol_designs: int = Field(32, ge=4, description="quasi-Monte Carlo designs per Sobol estimate")
    nmf_iters: int = Field(500, ge=1, description="factorisation (NMF or Semi-NMF) iterations, at most")
    method: Literal["auto", "nmf", "semi-nmf"] = Field(
        "auto",
        description="concept dictionary: `nmf` (non-negative layers), `semi-nmf` (any layer), `auto` (NMF where the layer is non-negative)",
    )
    visualize: int | None = Field(None, ge=0, description="concepts given a MACO visualization (default: all)")
    seed: int = Field(0)
    mode: Literal["patches", "tokens"] = Field(
        "patches",
        description="what the dictionary factorises: `patches` (crops re-forwarded, CRAFT 2023) or `tokens` "
        "(the concept layer's own positions, one forward pass per image)",
    )

    @model_serializer(mode="wrap")
    def _stable_dump(self, handler: Any) -> dict[str, Any]:
        # `mode` came later: left out at its default so settings hashes of stores written before stay valid.
        data = handler(self)
        if data.get("mode") == "patches":
            del data["mode"]
        return data


class DictionarySettings(_Strict):
    """The model-wide concept dictionary: a TopK sparse autoencoder on concept-layer tokens (`sae.py`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    atoms: int = Field(2048, ge=2, description="dictionary size (concepts)")
    # 64 of 2048, not Leaf Lens's 8: the head's top-1 on reconstructed tokens then agrees with the model's on
    # 93 % of held-out photos (efficientnet-lite0; benchmarks/README.md, issue 19 §6), and atoms stay specific.
    k: int = Field(64, ge=1, description="atoms active per token (top-k)")
    epochs: int = Field(20, ge=1, description="passes over the token sample")
    lr: float = Field(5e-4, gt=0, description="Adam learning rate")
    batch_size: int = Field(1024, ge=1, description="tokens per optimisation step")
    tokens_per_image: int = Field(49, ge=1, description="tokens sampled per image (all of a 7x7 map at the default)")
    max_images: int = Field(200, ge=1, description="images per class, at most, in the token pass")
    aux_k: int = Field(64, ge=1, description="AuxK: dead latents used to model the residual")
    aux_weight: float = Field(1 / 32, ge=0, description="AuxK loss weight (0: off)")
    dead_after: int = Field(100_000, ge=1, description="tokens without firing after which a latent counts as dead")
    seed: int = Field(0)
    visualize: int | None = Field(None, ge=0, description="atoms given a MACO visualization: those among some class's "
                                  "`visualize` top shared atoms (null: all 5; the others' pages show a placeholder)")
    augment: bool = Field(False, description="also train on each photo's mirror and four corner crops (10 views per photo), "
                                             "for few photos (the demo's); the pages say so")

    @model_validator(mode="after")
    def _k_below_atoms(self) -> DictionarySettings:
        if self.k > self.atoms:
            raise ValueError(f"k ({self.k}) must not exceed atoms ({self.atoms}): set `k` below `atoms` (k defaults to 64)")
        return self


class WeightsSource(_Strict):
    """Where a model's weights come from: exactly one of `package`, `file` alone, or `timm`."""

    package: str | None = Field(None, description="installed Python package that ships the checkpoint")
    file: str | None = Field(None, description="checkpoint path (inside `package` when given)")
    timm: str | None = Field(None, description="timm pretrained tag (needs the hub or its cache)")

    @model_validator(mode="after")
    def _one_source(self) -> WeightsSource:
        if self.timm is not None and (self.package or self.file):
            raise ValueError("give either `timm` or `package`/`file`, not both")
        if self.timm is None and not self.package and not self.file:
            raise ValueError("needs one of `package`, `file` or `timm`")
        return self

    def describe(self) -> str:
        if self.timm is not None:
            return f"timm:{self.timm}"
        if self.package:
            return f"package:{self.package}" + (f"/{self.file}" if self.file else "")
        return f"file:{self.file}"


FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
# Entry keys added after stores were first written: left out of a model's identity while unset, so
# that an entry written before hashes as it did and its renders stay done.
_LATER_IDENTITY_KEYS = ("torchvision", "factory", "builder_args")


class ModelEntry(_Strict):
    """One model of the zoo: a timm `arch`, a `torchvision` builder or a `factory` of the user's own
    code, with its `weights`. Everything else defaults (from timm's or torchvision's config).
    A `factory` runs your code, as any Python import does; nothing is ever imported or unpickled
    from a data file (checkpoints are read as tensors only)."""

    name: str = Field(pattern=SLUG_PATTERN, description="slug used in paths and URLs")
    arch: str | None = Field(None, description="timm architecture name (or give `torchvision:` or `factory:`)")
    torchvision: str | None = Field(None, description="torchvision builder, e.g. `resnet18` (instead of `arch:`; weights from `file:`)")
    factory: str | None = Field(
        None, pattern=FACTORY_PATTERN,
        description="`module.path:function` returning the nn.Module (instead of `arch:`): your own code, imported like any "
                    "Python import from an installed package or the config's folder (nothing is imported from a data "
                    "file); weights from `file:`",
    )
    builder_args: dict[str, Any] | None = Field(None, description="keyword arguments for the torchvision builder or the factory")
    weights: WeightsSource
    key_map: str | None = Field(None, description="checkpoint key conversion, e.g. efficientnet_pytorch")
    checkpoint_key: str | None = Field(
        None, description="entry of the checkpoint that holds the weights, e.g. `state_dict` (default: `state_dict_ema` "
                          "where the file has it, as timm's validation does, else guessed)"
    )
    prefix_map: dict[str, str] | None = Field(
        None, description="checkpoint key prefixes to replace, e.g. `{'model.backbone.': ''}`; keys under no listed prefix are ignored"
    )
    description: str | None = None
    input_size: int | None = Field(None, ge=16, description="square input side (default: timm pretrained cfg)")
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: float | None = Field(None, gt=0, le=1)
    concept_layer: str = Field(
        "features", description="`features` (before global pooling), a module path or a graph node; `lens layers MODEL` lists them"
    )
    maco: dict[str, Any] = Field(default_factory=dict, description="per-model MACO overrides")
    craft: dict[str, Any] = Field(default_factory=dict, description="per-model CRAFT overrides")
    dictionary: dict[str, Any] = Field(default_factory=dict, description="per-model concept dictionary overrides")

    @model_validator(mode="after")
    def _one_builder(self) -> ModelEntry:
        given = [k for k in ("arch", "torchvision", "factory") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `arch` (a timm architecture), `torchvision` (a torchvision builder) "
                             f"or `factory` (module:function of your own code){'; got ' + ', '.join(given) if given else ''}")
        if self.arch is None and self.weights.timm is not None:
            raise ValueError("`weights: {timm: ...}` is for timm architectures; give a `file:` (or `package:`)")
        if self.arch is not None and self.builder_args:
            raise ValueError("`builder_args` is for `torchvision:` and `factory:` entries")
        return self

    @property
    def architecture(self) -> str:
        """The builder in words, as model cards and `lens models` show it: `resnet50` (timm),
        `torchvision:resnet18`, `factory:mypkg.models:build`."""
        if self.arch is not None:
            return self.arch
        return f"torchvision:{self.torchvision}" if self.torchvision is not None else f"factory:{self.factory}"

    def identity(self) -> dict[str, Any]:
        """What determines the model's outputs (not its description or setting overrides); keys added
        later are left out while unset, so an entry written before keeps its settings hash."""
        out = self.model_dump(mode="json", exclude={"description", "maco", "craft", "dictionary"})
        for key in _LATER_IDENTITY_KEYS:
            if out.get(key) is None:
                out.pop(key, None)
        return out


class WeightsUsed(BaseModel):
    """What a model's weights were actually read from: `lens models --check` prints it, model.json and
    every meta.json part record keep it. `entry` is the checkpoint entry read (`state_dict_ema`), None
    when the file is the state dict itself; `other_entries` are state dicts the file holds but were
    not used; `prefixes_stripped` are wrapper prefixes removed (`module.`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    source: str
    file: str | None = None
    entry: str | None = None
    other_entries: list[str] = Field(default_factory=list)
    prefixes_stripped: list[str] = Field(default_factory=list)
    prefix_map: dict[str, str] | None = None
    key_map: str | None = None

    def describe(self) -> str:
        parts = [self.source]
        if self.entry is not None:
            notes = ["EMA"] if "ema" in self.entry.lower() else []
            if self.other_entries:
                notes.append(f"the file also holds {', '.join(repr(e) for e in self.other_entries)}")
            parts.append(f"checkpoint entry '{self.entry}'" + (f" ({'; '.join(notes)})" if notes else ""))
        if self.prefixes_stripped:
            parts.append(f"prefix {', '.join(repr(p) for p in self.prefixes_stripped)} stripped")
        if self.prefix_map:
            parts.append(f"prefix_map {self.prefix_map}")
        if self.key_map:
            parts.append(f"key_map {self.key_map}")
        return ", ".join(parts)


class Defaults(_Strict):
    maco: MacoSettings = MacoSettings()
    craft: CraftSettings = CraftSettings()
    dictionary: DictionarySettings = DictionarySettings()


def _path_value(value: str | None) -> str | None:
    """A path in models.yaml: empty text is refused, as on the command line (it would silently mean
    the folder of models.yaml)."""
    if value is not None and not value.strip():
        raise ValueError("an empty path; name a file or folder ('.' for the folder of models.yaml)")
    return value


class Preset(_Strict):
    """A named run: a class selection plus setting overrides (e.g. the CPU demo)."""

    classes: str = Field(description="class SPEC, e.g. `281,967` or `0-99`")
    models: list[str] | None = None
    images: str | None = None
    maco: dict[str, Any] = Field(default_factory=dict)
    craft: dict[str, Any] = Field(default_factory=dict)
    dictionary: dict[str, Any] = Field(
        default_factory=dict, description="concept dictionary overrides applied on top of `defaults.dictionary` and each model's")
    what: str | None = Field(None, description="parts the preset renders when `--what` is not given, e.g. `maco,craft,dictionary` "
                                               "(default: maco,craft)")
    description: str | None = None

    _paths = field_validator("images")(_path_value)


class ZooFile(_Strict):
    """The top level of `models.yaml`."""

    title: str = "Lens gallery"
    images: str | None = Field(None, description="ImageNet-layout folder for CRAFT (default: demo photos)")
    spectrum: str = Field("photos", description="`photos`, `powerlaw`, `images` or a .npy path")
    out: str = Field("artifacts", description="artifact store")
    site: str = Field("site", description="site output folder")
    site_url: str | None = Field(None, description="public http(s) URL of the published site, with the folder it is served from "
                                 "(GitHub project pages: USER.github.io/REPO/); gives canonical links, a sitemap "
                                 "and a 404 page that works under that folder")
    site_full_res: bool = Field(False, description="also publish every visualization as a lossless full-resolution PNG "
                                "with its attribution map as alpha (for papers; several times the site's weight)")
    defaults: Defaults = Defaults()
    presets: dict[str, Preset] = Field(default_factory=dict)
    models: list[ModelEntry] = Field(min_length=1)

    _paths = field_validator("images", "spectrum", "out", "site")(_path_value)


class Zoo:
    """A validated `models.yaml`: models by name, presets, and the settings for each model."""

    def __init__(self, data: ZooFile, path: Path, root: Path | None = None):
        self.data = data
        self.path = path
        # Relative paths resolve against the file's folder; the embedded default zoo's against the
        # current folder (root), so that it never writes into the installed package.
        self.root = root if root is not None else path.parent
        self.embedded = root is not None
        self.models: dict[str, ModelEntry] = {m.name: m for m in data.models}

    def describe(self) -> str:
        """Which config this is, for the line every command prints."""
        if self.embedded:
            return (f"the embedded default zoo ({self.path}); store and site relative to {self.root} "
                    f"(`lens init` writes an editable models.yaml here)")
        return str(self.path)

    def resolve_path(self, value: str | None) -> Path | None:
        """A path from `models.yaml`, relative to the file itself; `~` and `$VARS` expanded."""
        if value is None:
            return None
        p = Path(os.path.expandvars(os.path.expanduser(value)))
        return p if p.is_absolute() else self.root / p

    def model(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise ConfigError(f"{self.path}: no model named '{name}'{_did_you_mean(name, self.models)}")
        return self.models[name]

    def select_models(self, names: str | list[str] | None) -> list[ModelEntry]:
        """`None` means every model; otherwise a comma-separated string or a list of names."""
        if names is None:
            return list(self.models.values())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        return [self.model(n) for n in names]

    def preset(self, name: str) -> Preset:
        if name not in self.data.presets:
            raise ConfigError(f"{self.path}: no preset named '{name}'{_did_you_mean(name, self.data.presets)}")
        return self.data.presets[name]

    def maco_settings(self, model: ModelEntry, *overrides: dict[str, Any]) -> MacoSettings:
        """defaults < model < each override in turn (preset, then command line)."""
        where = f"{self.path}: model '{model.name}'"
        return _merge(MacoSettings, self.data.defaults.maco, model.maco, *overrides, where=where, prefix="maco")

    def dictionary_settings(self, model: ModelEntry, *overrides: dict[str, Any]) -> DictionarySettings:
        """Defaults, then the model's `dictionary:` entry, then overrides (a preset's, the command line's)."""
        where = f"{self.path}: model '{model.name}'"
        return _merge(DictionarySettings, self.data.defaults.dictionary, model.dictionary, *overrides, where=where,
                      prefix="dictionary")

    def craft_settings(self, model: ModelEntry, *overrides: dict[str, Any]) -> CraftSettings:
        where = f"{self.path}: model '{model.name}'"
        return _merge(CraftSettings, self.data.defaults.craft, model.craft, *overrides, where=where, prefix="craft")


def _merge(kind: type[BaseModel], base: BaseModel, *overrides: dict[str, Any], where: str, prefix: str) -> Any:
    """Settings = base updated by each override in turn; errors name `where` and the key."""
    merged = base.model_dump()
    for o in overrides:
        merged.update({k: v for k, v in (o or {}).items() if v is not None})
    try:
        return kind.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(f"{where}: " + "; ".join(_describe_error(err, prefix) for err in e.errors())) from None


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else f" (known: {', '.join(sorted(choices))})"


def _describe_error(err: dict[str, Any], prefix: str) -> str:
    loc = ".".join([prefix, *(str(p) for p in err["loc"])])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{loc}'"
    if err["type"] == "missing":
        return f"missing key '{loc}'"
    return f"key '{loc}': {err['msg']}"


def _locate(loc: tuple[Any, ...], raw: dict[str, Any]) -> str:
    """Turn a pydantic location into words: `model 'x' (entry 2), key 'weights.file'`."""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        entries = raw.get("models") or []
        entry = entries[loc[1]] if loc[1] < len(entries) else {}
        name = entry.get("name") if isinstance(entry, dict) else None
        who = f"model '{name}' (entry {loc[1] + 1})" if name else f"model entry {loc[1] + 1}"
        return who + (f", key '{'.'.join(str(p) for p in loc[2:])}'" if len(loc) > 2 else "")
    return f"key '{'.'.join(str(p) for p in loc)}'"


def _format_validation(path: Path, raw: dict[str, Any], e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        where = _locate(tuple(err["loc"]), raw)
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: {where}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{path}: {where}: missing required key")
        else:
            lines.append(f"{path}: {where}: {err['msg']}")
    return "\n".join(lines)


def default_config_path() -> Path:
    """`./models.yaml` if there is one, else the embedded default zoo (never a source checkout's file
    found from elsewhere: run from another folder, lens works there, not in the checkout)."""
    here = Path.cwd() / CONFIG_FILENAME
    if here.is_file():
        return here
    from .resources import default_zoo_path

    return default_zoo_path()


def config_root(path: Path, explicit: bool) -> Path | None:
    """Where relative paths of `path` resolve: None for its own folder (the documented rule), the
    current folder for the embedded default zoo when it was not named (`lens` run from a folder
    without models.yaml works in that folder) and for the installed package's copy in any case."""
    from .resources import DATA_DIR, default_zoo_path

    resolved = path.resolve()
    if DATA_DIR in resolved.parts and resolved.parent.parent == Path(__file__).resolve().parent:
        return Path.cwd()  # generator/_data/models.yaml of an installed wheel: never write into the package
    if not explicit and resolved == default_zoo_path().resolve() and resolved != (Path.cwd() / CONFIG_FILENAME).resolve():
        return Path.cwd()
    return None


def load_zoo(path: str | os.PathLike[str] | None = None) -> Zoo:
    """Read and validate `models.yaml`. Every problem raises ConfigError naming the file and key."""
    explicit = path is not None
    path = Path(path) if path is not None else default_config_path()
    if path.is_dir() and (path / CONFIG_FILENAME).is_file():  # --config FOLDER: the models.yaml in it
        path = path / CONFIG_FILENAME
    root = config_root(path, explicit)
    if not path.exists():
        raise ConfigError(f"{path}: file not found (pass --config PATH to use another models.yaml)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a models.yaml file")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_error(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a `models:` list at the top level")
    try:
        data = ZooFile.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation(path, raw, e)) from None

    seen: dict[str, int] = {}
    for i, m in enumerate(data.models):
        if m.name in RESERVED_NAMES:
            raise ConfigError(f"{path}: model '{m.name}' (entry {i + 1}): key 'name': '{m.name}' is reserved for the store's "
                              f"own files ({', '.join(RESERVED_NAMES)}); choose another name")
        for key in ("mean", "std"):  # NaN or a zero std can only give NaN inputs
            values = getattr(m, key)
            if values is not None and (not all(math.isfinite(v) for v in values) or (key == "std" and min(values) <= 0)):
                raise ConfigError(f"{path}: model '{m.name}' (entry {i + 1}): key '{key}': {list(values)} "
                                  + ("must be finite and > 0" if key == "std" else "must be finite"))
        if m.name in seen:
            raise ConfigError(
                f"{path}: model '{m.name}' (entry {i + 1}): duplicate name, already used by entry {seen[m.name] + 1}"
            )
        seen[m.name] = i
    zoo = Zoo(data, path, root)
    # Settings overrides are validated now, not at render time.
    for m in data.models:
        zoo.maco_settings(m)
        zoo.craft_settings(m)
        zoo.dictionary_settings(m)
    for pname, p in data.presets.items():
        for mname in p.models or []:
            if mname not in zoo.models:
                raise ConfigError(f"{path}: preset '{pname}': unknown model '{mname}'{_did_you_mean(mname, zoo.models)}")
        _merge(MacoSettings, data.defaults.maco, p.maco, where=f"{path}: preset '{pname}'", prefix="maco")
        _merge(CraftSettings, data.defaults.craft, p.craft, where=f"{path}: preset '{pname}'", prefix="craft")
        _merge(DictionarySettings, data.defaults.dictionary, p.dictionary, where=f"{path}: preset '{pname}'", prefix="dictionary")
        if p.what is not None and not {x.strip() for x in p.what.split(",")} <= {"maco", "craft", "dictionary"}:
            raise ConfigError(f"{path}: preset '{pname}': key 'what': '{p.what}' is not a list of maco, craft, dictionary")
    return zoo


def _yaml_error(e: yaml.YAMLError) -> str:
    """A YAML error on one line: what, and where (line, column)."""
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(what)


def settings_hash(*parts: Any) -> str:
    """A short stable hash of settings (pydantic models, dicts, strings)."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
