"""MACO (Fel et al. 2023): a fixed Fourier magnitude, an optimised phase, random crops.

Separate pieces, as in Lucent: the parameterisation (phase -> image), the transforms (crops and
noise), the objectives (class logit; direction in pooled features), the render loop (NAdam, many
objectives per forward/backward pass) and the finishing (percentile clip, alpha map).

Guarantees:
- Batching never changes a result: every objective's random numbers are a pure function of its
  seed (from its key), the step and an element index (a counter-based generator, SplitMix64 on
  int64 tensors), and the loss is a sum of independent per-image terms.
- The host work per step does not depend on the batch size B: boxes, crops and noise of all
  objectives are drawn in a fixed number of batched tensor operations (tested by counting
  operator calls with the profiler).
- The step never synchronises with the device (no `.item()`, no Python loop over objectives), so
  it can be compiled (`torch.compile`, also with CUDA graphs: mode `reduce-overhead`) or captured
  whole in a CUDA graph (`cuda-graph`). See `STEP_MODES`; the default is eager.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .config import MacoSettings
from .errors import ConfigError
from .models import LoadedModel
from .spectrum import COLOR_CORRELATION, Spectrum

# ----------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """What one image is optimised for: a class logit, or a direction in pooled concept-layer features."""

    key: str  # e.g. "class/0967" or "concept/0967/3"; seeds the image and names the result
    class_index: int | None = None
    direction: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.class_index is None) == (self.direction is None):
            raise ValueError(f"objective '{self.key}' needs exactly one of class_index or direction")


def class_objective(class_index: int) -> Objective:
    return Objective(f"class/{class_index:04d}", class_index=class_index)


def direction_objective(key: str, direction: torch.Tensor) -> Objective:
    return Objective(key, direction=direction.detach().float().cpu())


def objective_seed(base_seed: int, model_name: str, key: str) -> int:
    """A seed per (base seed, model, objective), independent of how objectives are batched."""
    digest = hashlib.sha256(f"{base_seed}:{model_name}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class _Targets:
    is_class: torch.Tensor  # (B,) bool
    class_index: torch.Tensor  # (B,) long, 0 where unused
    direction: torch.Tensor  # (B, C), zeros where unused


def _targets(objectives: Sequence[Objective], channels: int, device: torch.device, dtype: torch.dtype = torch.float32) -> _Targets:
    direction = torch.zeros(len(objectives), channels, dtype=dtype)
    for i, o in enumerate(objectives):
        if o.direction is not None:
            if o.direction.numel() != channels:
                raise ValueError(f"objective '{o.key}': direction has {o.direction.numel()} values, the concept layer {channels}")
            direction[i] = o.direction.reshape(-1)
    return _Targets(
        is_class=torch.tensor([o.class_index is not None for o in objectives], device=device),
        class_index=torch.tensor([o.class_index or 0 for o in objectives], device=device),
        direction=direction.to(device),
    )


def dot_cossim(features: torch.Tensor, direction: torch.Tensor, power: float) -> torch.Tensor:
    """dot(f, d) * max(cos(f, d), 0.1)^p, per row (Olah et al.; Horama)."""
    dot = (features * direction).sum(-1)
    cos = dot / (features.norm(dim=-1) * direction.norm(dim=-1) + 1e-8)
    return dot * cos.clamp(min=0.1) ** power


def objective_scores(logits: torch.Tensor, pooled: torch.Tensor, targets: _Targets, crops: int, power: float) -> torch.Tensor:
    """Mean score over each objective's crops: (B * crops, ...) -> (B,)."""
    is_class = targets.is_class.repeat_interleave(crops)
    class_score = logits.gather(1, targets.class_index.repeat_interleave(crops)[:, None])[:, 0]
    direction_score = dot_cossim(pooled, targets.direction.repeat_interleave(crops, dim=0), power)
    return torch.where(is_class, class_score, direction_score).view(-1, crops).mean(1)


# ----------------------------------------------------------------------------- parameterisation


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per image."""
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + 1e-4)


def phase_to_image(phase: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W//2+1) phase with a fixed magnitude -> (B, 3, H, W) RGB in [0, 1].

    The standardised phase is scaled by pi: with unit std, E[cos(phase)] = 0.61 and every frequency
    adds up in phase at pixel (0, 0), which shows as a glowing spot in the four corners.
    """
    phase = standardize(phase) * math.pi
    spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
    size = phase.shape[-2]
    x = standardize(torch.fft.irfft2(spectrum, s=(size, size)))
    # Recorrelate colours, out[:, d] = sum_c x[:, c] C[c, d]: a broadcast product dispatches the same ops for every
    # batch size (einsum's reshape is a view at B = 1 and a copy above).
    x = (x[:, :, None] * COLOR_CORRELATION.to(x)[None, :, :, None, None]).sum(1)
    return torch.sigmoid(x)


def initial_phase(keys: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 3, size, size//2+1) standard-normal-like phase, one row per objective key (see `stream_keys`)."""
    shape = (3, size, size // 2 + 1)
    bits = random_bits(keys, counters(math.prod(shape), keys.device))
    return normal_from_bits(bits, dtype).view(len(keys), *shape)


# ----------------------------------------------------------------------------- counter-based random numbers
#
# Every random number is SplitMix64(key + i * golden), with key = mix(mix(seed) + (4 step + stream + 1) * golden):
# a pure function of (objective seed, step, stream, index), so an objective draws the same numbers in any batch,
# and all objectives draw theirs in one batched call. int64 tensor arithmetic wraps modulo 2^64 (two's complement),
# which is what the hash needs; `tests/test_maco.py` checks it against a Python reference.
# Normal draws are Irwin-Hall sums of 16-bit uniforms: exact arithmetic only (no log/cos whose vectorised and scalar
# kernels may round differently), so the bits are the same on every device, batch size and vector width.


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
STREAM_PHASE, STREAM_BOXES, STREAM_NOISE = 0, 1, 2
_U16 = 1.0 / 65536


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser on int64 tensors (wrapping arithmetic)."""
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def seed_tensor(seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """(B,) int64 mixed seeds, the root of every objective's streams."""
    return mix64(torch.tensor([_signed(s) for s in seeds], dtype=torch.int64, device=device))


def stream_keys(mixed_seeds: torch.Tensor, step: torch.Tensor | int, stream: int) -> torch.Tensor:
    """(B,) keys of one (step, stream); `step` may be a 0-d device tensor (no host synchronisation)."""
    if isinstance(step, int):  # Python ints do not wrap: reduce modulo 2^64 by hand
        return mix64(mixed_seeds + _signed(((step * 4 + stream + 1) * GOLDEN) % (1 << 64)))
    return mix64(mixed_seeds + (step * 4 + (stream + 1)) * GOLDEN)


def counters(n: int, device: torch.device) -> torch.Tensor:
    """(n,) int64 SplitMix64 increments 1..n times the golden gamma; static per render."""
    return torch.arange(1, n + 1, dtype=torch.int64, device=device) * GOLDEN


def _mix64_(x: torch.Tensor) -> torch.Tensor:
    """mix64 in place, with one scratch buffer: a third of the memory traffic (this is the per-step noise's cost)."""
    scratch = torch.empty_like(x)
    for shift, mult in ((30, _MIX1), (27, _MIX2), (31, None)):
        torch.bitwise_right_shift(x, shift, out=scratch)
        x.bitwise_xor_(scratch.bitwise_and_((1 << (64 - shift)) - 1))
        if mult is not None:
            x.mul_(mult)
    return x


def random_bits(keys: torch.Tensor, increments: torch.Tensor) -> torch.Tensor:
    """(B, n) independent 64-bit words, row b a SplitMix64 stream keyed by keys[b]."""
    return _mix64_(keys[:, None] + increments)


def uniform_from_bits(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """U(0, 1) from the top 24 bits (exact in float32), never 0 or 1."""
    return (_shr(bits, 40).to(dtype) + 0.5) * 2.0**-24


def _u16_sum3(bits: torch.Tensor) -> torch.Tensor:
    return (bits & 0xFFFF) + ((bits >> 16) & 0xFFFF) + ((bits >> 32) & 0xFFFF)


def normal_from_bits(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Approximately N(0, 1): sum of four 16-bit uniforms, centred and scaled to unit variance (|x| < 3.47)."""
    total = (_u16_sum3(bits) + _shr(bits, 48)).to(dtype)
    return ((total + 2.0) * _U16 - 2.0) * math.sqrt(3.0)


_BYTES, _LANES = 0x00FF00FF00FF00FF, 0x0000FFFF0000FFFF
NOISE_VARIANCE = 13 / 12  # of N(0, 1) + U(-1/2, 1/2), the reference's randn + rand - 0.5


def noise_from_bits_(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, n) words -> (B, 2n) values, zero mean, variance 13/12 (as randn + rand - 0.5), bell-shaped, |x| < 3.6.

    Each 32-bit half of a word gives one value, the sum of its four bytes (Irwin-Hall, 1021 levels: far finer than
    the pixels' 1/255), added lane-wise in the 64-bit word: few passes over memory, exact arithmetic. Overwrites bits.
    """
    scratch = torch.empty_like(bits)
    for shift, mask in ((8, _BYTES), (16, _LANES)):  # bytes -> sums of byte pairs -> sums of four bytes
        torch.bitwise_right_shift(bits, shift, out=scratch)
        bits.bitwise_and_(mask).add_(scratch.bitwise_and_(mask))
    values = bits.view(torch.int32).to(dtype)  # the two 32-bit lanes of each word, side by side
    return values.sub_(510.0).mul_(math.sqrt(NOISE_VARIANCE / 21845.0))  # 4 x byte: mean 510, variance 4 x 5461.25


# ----------------------------------------------------------------------------- transforms


def sample_boxes(keys: torch.Tensor, settings: MacoSettings | _StepConfig, size: int, dtype: torch.dtype = torch.float32,
                 increments: torch.Tensor | None = None) -> torch.Tensor:
    """(B, crops, 4) square boxes (x0, y0, x1, y1) in pixels, one row of settings.crops per key:
    side ~ U(crop_scale) x size, centre ~ N(size/2, jitter x size), kept inside the image."""
    n = settings.crops
    if increments is None:
        increments = counters(3 * n, keys.device)
    bits = random_bits(keys, increments).view(len(keys), n, 3)
    lo, hi = settings.crop_scale
    half = ((lo + (hi - lo) * uniform_from_bits(bits[..., :1], dtype)).clamp(max=1.0) * size) / 2  # (B, n, 1)
    centre = size * (0.5 + settings.crop_jitter * normal_from_bits(bits[..., 1:], dtype))  # (B, n, 2)
    centre = torch.minimum(torch.maximum(centre, half), size - half)
    return torch.cat([centre - half, centre + half], dim=-1)


def random_crops(images: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """Crop every image at its (crops, 4) boxes and resize to out_size, area-averaged by one batched roi_align:
    (B, 3, H, W), (B, crops, 4) -> (B * crops, 3, S, S)."""
    b, n = boxes.shape[:2]
    index = torch.arange(b, device=images.device, dtype=images.dtype).repeat_interleave(n)[:, None]
    rois = torch.cat([index, boxes.reshape(b * n, 4).to(images.dtype)], dim=1)
    return roi_align(images, rois, output_size=out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def crop_noise(keys: torch.Tensor, settings: MacoSettings | _StepConfig, out_size: int, dtype: torch.dtype = torch.float32,
               increments: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian plus uniform noise per crop, in the model's normalised input space (as the reference):
    (B * crops, 3, S, S), one batched draw for all keys."""
    n = settings.crops * 3 * out_size**2
    if increments is None:
        increments = counters((n + 1) // 2, keys.device)  # two values per 64-bit word
    noise = noise_from_bits_(random_bits(keys, increments), dtype)[:, :n]
    return (noise * settings.noise).view(-1, 3, out_size, out_size)


# ----------------------------------------------------------------------------- render loop


@dataclass
class MacoRender:
    """One finished visualization: pixels, alpha map, and its final objective value."""

    key: str
    image: np.ndarray  # (H, W, 3) uint8, percentile-clipped and normalised
    alpha: np.ndarray  # (H, W) uint8, the attribution/transparency map
    objective: float
    finite: bool  # False if the objective or the image went NaN/inf

    @property
    def rgba(self) -> np.ndarray:
        return np.concatenate([self.image, self.alpha[..., None]], axis=-1)


STEP_MODES = ("eager", "compile", "reduce-overhead", "cuda-graph")
STEP_MODE_ENV = "LENS_MACO_STEP"


def step_mode(requested: str | None = None) -> str:
    """The step mode: `requested`, else $LENS_MACO_STEP, else eager.

    eager: plain PyTorch (the CPU default: torch.compile measured slower there). compile /
    reduce-overhead: torch.compile of the parameterisation and of the crops-noise-model-loss function
    (reduce-overhead adds CUDA graphs on CUDA). cuda-graph: the whole step (forward, backward, alpha,
    NAdam) captured in one CUDA graph after 3 eager warm-up steps, then replayed (CUDA only).
    """
    mode = requested or os.environ.get(STEP_MODE_ENV) or "eager"
    if mode not in STEP_MODES:
        raise ConfigError(f"{STEP_MODE_ENV}={mode}: expected one of {', '.join(STEP_MODES)}")
    return mode


@dataclass(frozen=True)
class _StepConfig:
    """Plain values of MacoSettings that the step needs (a frozen dataclass traces cleanly under torch.compile)."""

    crops: int
    crop_scale: tuple[float, float]
    crop_jitter: float
    noise: float
    cossim_power: float
    image_size: int
    input_size: int


@dataclass
class _Static:
    """Tensors that stay the same through a render: fixed addresses, as CUDA graphs need."""

    mixed_seeds: torch.Tensor  # (B,) int64
    box_increments: torch.Tensor  # (3 * crops,) int64
    noise_increments: torch.Tensor  # (ceil(crops * 3 * S * S / 2),) int64
    magnitude: torch.Tensor
    targets: _Targets


def _step_scores(model: LoadedModel, image: torch.Tensor, step: torch.Tensor, static: _Static, cfg: _StepConfig,
                 autocast_cache: bool = True) -> torch.Tensor:
    """Crops, noise, one forward pass, objective scores (B,): a fixed sequence of batched ops, no host sync."""
    box_keys = stream_keys(static.mixed_seeds, step, STREAM_BOXES)
    noise_keys = stream_keys(static.mixed_seeds, step, STREAM_NOISE)
    boxes = sample_boxes(box_keys, cfg, cfg.image_size, image.dtype, static.box_increments)
    x = model.normalize(random_crops(image, boxes, cfg.input_size))
    noise = crop_noise(noise_keys, cfg, cfg.input_size, image.dtype, static.noise_increments)
    x = (x + noise).contiguous(memory_format=model.memory_format)
    with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=model.autocast_bf16, cache_enabled=autocast_cache):
        logits, pooled = model.forward(x)
    return objective_scores(logits.to(image.dtype), pooled.to(image.dtype), static.targets, cfg.crops, cfg.cossim_power)


_COMPILED: dict[tuple[int, str], tuple[Callable, Callable]] = {}


def _compiled(model: LoadedModel, mode: str) -> tuple[Callable, Callable]:
    """torch.compile'd (phase_to_image, _step_scores), one pair per model and mode: later renders reuse the graphs
    (shapes are static per B; a new B compiles once more)."""
    key = (id(model), mode)
    if key not in _COMPILED:
        kwargs = {"dynamic": False, "mode": "reduce-overhead" if mode == "reduce-overhead" else None}
        _COMPILED[key] = (torch.compile(phase_to_image, **kwargs), torch.compile(_step_scores, **kwargs))
    return _COMPILED[key]


def render(
    model: LoadedModel,
    objectives: Sequence[Objective],
    settings: MacoSettings,
    spectrum: Spectrum,
    progress: Callable[[int], None] | None = None,
    mode: str | None = None,
) -> list[MacoRender]:
    """Optimise one image per objective, all in the same forward/backward passes.

    On CUDA the model runs under bf16 autocast (`model.autocast_bf16`; channels_last, like on the CPU), and the step loop
    never waits for the device: everything is read back once, after the last step. `mode`: see `step_mode`.
    """
    mode = step_mode(mode)
    device, dtype = model.device, model.dtype
    if mode == "cuda-graph" and device.type != "cuda":
        raise ConfigError(f"{STEP_MODE_ENV}=cuda-graph needs a CUDA device; model '{model.name}' is on {device}")
    cfg = _StepConfig(settings.crops, tuple(settings.crop_scale), settings.crop_jitter, settings.noise,  # type: ignore[arg-type]
                      settings.cossim_power, settings.image_size, settings.input_size or model.preprocess.input_size)
    static = _Static(
        mixed_seeds=seed_tensor([objective_seed(settings.seed, model.name, o.key) for o in objectives], device),
        box_increments=counters(3 * cfg.crops, device),
        noise_increments=counters((cfg.crops * 3 * cfg.input_size**2 + 1) // 2, device),
        magnitude=spectrum.resized(cfg.image_size).to(device, dtype),
        targets=_targets(objectives, model.num_concept_channels, device, dtype),
    )
    step = torch.zeros((), dtype=torch.int64, device=device)  # on the device: keys need no host value
    phase = initial_phase(stream_keys(static.mixed_seeds, 0, STREAM_PHASE), cfg.image_size, dtype).requires_grad_(True)
    optimizer = torch.optim.NAdam([phase], lr=settings.lr, capturable=mode == "cuda-graph")
    alpha = torch.zeros(len(objectives), 3, cfg.image_size, cfg.image_size, device=device, dtype=dtype)
    if mode in ("compile", "reduce-overhead"):
        to_image, step_scores = _compiled(model, mode)
    else:
        to_image, step_scores = phase_to_image, _step_scores

    def one_step(autocast_cache: bool = True) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        image = to_image(phase, static.magnitude)
        image.retain_grad()
        scores = step_scores(model, image, step, static, cfg, autocast_cache)
        (-scores.sum()).backward()
        alpha.add_(image.grad.abs())  # type: ignore[union-attr]
        optimizer.step()
        step.add_(1)
        return scores

    scores = torch.zeros(len(objectives), device=device, dtype=dtype)
    if mode == "cuda-graph":
        scores = _run_cuda_graph(one_step, settings.steps, device, progress)
    else:
        for _ in range(settings.steps):
            if mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            scores = one_step()
            if progress is not None:
                progress(1)

    with torch.no_grad():
        final = phase_to_image(phase, static.magnitude)
    finite = (torch.isfinite(scores) & torch.isfinite(final).flatten(1).all(1) & torch.isfinite(alpha).flatten(1).all(1)).cpu()
    scores, final, alpha = scores.detach().cpu(), final.cpu(), alpha.cpu()
    return [
        MacoRender(o.key, finish_image(final[i], settings.image_percentile), finish_alpha(alpha[i], settings.alpha_percentile),
                   float(scores[i]), bool(finite[i]))
        for i, o in enumerate(objectives)
    ]


def _run_cuda_graph(one_step: Callable[..., torch.Tensor], steps: int, device: torch.device,
                    progress: Callable[[int], None] | None, warmup: int = 3) -> torch.Tensor:
    """Run `warmup` real steps eagerly on a side stream (cuDNN/cuBLAS/cuFFT plans, NAdam state), capture one step in a
    CUDA graph and replay it for the rest: one launch per step. The step counter, alpha and NAdam's state live on the
    device and are updated inside the graph."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    scores = None
    with torch.cuda.stream(side):
        for _ in range(min(warmup, steps)):
            scores = one_step(autocast_cache=False)
            if progress is not None:
                progress(1)
    torch.cuda.current_stream(device).wait_stream(side)
    if steps <= warmup:
        return scores  # type: ignore[return-value]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_scores = one_step(autocast_cache=False)  # recorded, not run: the first replay runs it
    for _ in range(steps - warmup):
        graph.replay()
        if progress is not None:
            progress(1)
    return static_scores


# ----------------------------------------------------------------------------- finishing


def finish_image(image: torch.Tensor, percentile: float) -> np.ndarray:
    """Clip `percentile` % at each end, stretch to [0, 255] (the reference's display practice)."""
    image = torch.nan_to_num(image.float())
    if percentile > 0:
        lo, hi = torch.quantile(image.flatten(), torch.tensor([percentile / 100, 1 - percentile / 100], dtype=image.dtype))
        image = image.clamp(lo, hi)
    image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def finish_alpha(alpha: torch.Tensor, percentile: float) -> np.ndarray:
    """Channel-mean |d objective / d image|, capped at its `percentile` and scaled to [0, 255]."""
    a = torch.nan_to_num(alpha.float()).mean(0)
    cap = torch.quantile(a.flatten(), percentile / 100).clamp(min=1e-12)
    return ((a.clamp(max=cap) / cap).numpy() * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def classify(model: LoadedModel, images: Sequence[np.ndarray], class_indices: Sequence[int]) -> tuple[list[float], list[int]]:
    """Probability and rank (1 = top) of each image's class, the whole square image resized to the model input."""
    if not images:
        return [], []
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images]).float().div(255).to(model.device)
    side = model.preprocess.input_size
    mode = "bicubic" if model.preprocess.interpolation == "bicubic" else "bilinear"
    x = F.interpolate(x, size=(side, side), mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    probs = model.logits(model.normalize(x)).float().softmax(-1)
    target = torch.tensor(list(class_indices), device=probs.device)
    p = probs.gather(1, target[:, None])
    ranks = 1 + (probs > p).sum(1)
    return p[:, 0].cpu().tolist(), ranks.cpu().tolist()


def operator_calls_per_step(model: LoadedModel, objectives: Sequence[Objective], settings: MacoSettings, spectrum: Spectrum,
                            mode: str | None = None) -> tuple[int, int]:
    """(all, top-level) operator calls of one step, counted with torch.profiler: the difference between a 3-step and a
    2-step render, so setup and finishing cancel out. Top-level calls are the ones the host dispatches (ops called from
    Python, autograd nodes run by the engine); `all` adds the ops nested inside them, whose choice of kernel (e.g. a
    convolution algorithm) may depend on the shapes."""
    from torch.profiler import ProfilerActivity, profile

    def count(steps: int) -> tuple[int, int]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            render(model, objectives, settings.model_copy(update={"steps": steps}), spectrum, mode=mode)
        events = prof.events()
        return len(events), sum(1 for e in events if e.cpu_parent is None)

    (a3, t3), (a2, t2) = count(3), count(2)
    return a3 - a2, t3 - t2


def probe_batch_size(model: LoadedModel, settings: MacoSettings, spectrum: Spectrum, limit: int = 256) -> int:
    """Objectives per pass that fit in free device memory, measured with a 1-step render of 2 objectives.

    On the CPU, throughput per crop falls once a pass outgrows the caches (depthwise convolutions
    are memory-bound; benchmarks/README.md), so a pass holds about 8 crops' worth of 160-px pixels:
    8 crops at 160 px (demo settings: 2 objectives per pass, the best measured), 50 at 64 px (where
    4 objectives per pass of 2 crops rendered 5.8 objectives/s, 16 rendered 8.7 and 40 9.7).
    """
    if model.device.type != "cuda":
        side = settings.input_size or model.preprocess.input_size
        return max(1, min(limit, round(8 * (160 / side) ** 2) // settings.crops))
    probe = settings.model_copy(update={"steps": 1})
    torch.cuda.synchronize(model.device)
    torch.cuda.reset_peak_memory_stats(model.device)
    base = torch.cuda.memory_allocated(model.device)
    render(model, [class_objective(0), class_objective(1)], probe, spectrum)
    per_objective = max(1, (torch.cuda.max_memory_allocated(model.device) - base) // 2)
    free, _ = torch.cuda.mem_get_info(model.device)
    return int(max(1, min(limit, 0.8 * free // per_objective)))
