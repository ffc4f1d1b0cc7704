"""MACO's render loop: NAdam over the phases of many objectives per forward/backward pass, in one
of the step modes (eager, torch.compile, CUDA graphs), and the batch-size probe."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import MacoSettings
from ..errors import ConfigError
from ..models import LoadedModel
from ..spectrum import Spectrum
from .finish import finish_alpha, finish_image
from .objectives import Objective, _Targets, _targets, class_objective, objective_scores, objective_seed
from .parameterization import color_bias_of, initial_phase, phase_to_image
from .rng import STREAM_BOXES, STREAM_NOISE, STREAM_PHASE, counters, seed_tensor, stream_keys
from .transforms import _StepConfig, crop_noise, random_crops, rotation_increments, sample_angles, sample_boxes, turned_crops


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


@dataclass
class _Static:
    """Tensors that stay the same through a render: fixed addresses, as CUDA graphs need."""

    mixed_seeds: torch.Tensor  # (B,) int64
    box_increments: torch.Tensor  # (3 * crops,) int64
    rotation_increments: torch.Tensor | None  # (crops,) int64, when crops are turned
    noise_increments: torch.Tensor  # (ceil(crops * 3 * S * S / 2),) int64
    magnitude: torch.Tensor
    color_bias: torch.Tensor | None  # (3, 1, 1) or None (grey)
    targets: _Targets


def _step_scores(model: LoadedModel, image: torch.Tensor, step: torch.Tensor, static: _Static, cfg: _StepConfig,
                 autocast_cache: bool = True) -> torch.Tensor:
    """Crops, noise, one forward pass, objective scores (B,): a fixed sequence of batched ops, no host sync."""
    box_keys = stream_keys(static.mixed_seeds, step, STREAM_BOXES)
    noise_keys = stream_keys(static.mixed_seeds, step, STREAM_NOISE)
    boxes = sample_boxes(box_keys, cfg, cfg.image_size, image.dtype, static.box_increments)
    if static.rotation_increments is None:
        x = model.normalize(random_crops(image, boxes, cfg.input_size))
    else:
        angles = sample_angles(box_keys, cfg, image.dtype, static.rotation_increments)
        x = model.normalize(turned_crops(image, boxes, angles, cfg.input_size))
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
    cfg, static = _setup(model, objectives, settings, spectrum)
    step = torch.zeros((), dtype=torch.int64, device=device)  # on the device: keys need no host value
    phase = initial_phase(stream_keys(static.mixed_seeds, 0, STREAM_PHASE), cfg.image_size, dtype).requires_grad_(True)
    schedule = lr_schedule(settings)
    # A CUDA graph bakes a float lr in: there it is a device tensor, set from the schedule by the step counter inside the
    # graph. Eager modes set a float each step (a tensor lr would cost NAdam a host read per step).
    lr = torch.tensor(schedule[0], device=device, dtype=dtype) if mode == "cuda-graph" else schedule[0]
    lrs = torch.tensor(schedule, device=device, dtype=dtype) if mode == "cuda-graph" else None
    optimizer = torch.optim.NAdam([phase], lr=lr, capturable=mode == "cuda-graph")
    alpha = torch.zeros(len(objectives), 3, cfg.image_size, cfg.image_size, device=device, dtype=dtype)
    if mode in ("compile", "reduce-overhead"):
        to_image, step_scores = _compiled(model, mode)
    else:
        to_image, step_scores = phase_to_image, _step_scores

    rates = iter(schedule)  # eager: one float per step, from the host (one_step runs exactly `steps` times)

    def one_step(autocast_cache: bool = True) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        image = to_image(phase, static.magnitude, static.color_bias)
        image.retain_grad()
        scores = step_scores(model, image, step, static, cfg, autocast_cache)
        (-scores.sum()).backward()
        alpha.add_(image.grad.abs())  # type: ignore[union-attr]
        if lrs is not None:  # the graph's replays read the rate at the step counter they reach
            lr.copy_(lrs[step.clamp(max=len(schedule) - 1)])  # type: ignore[union-attr]
        else:
            optimizer.param_groups[0]["lr"] = next(rates)
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
        final = phase_to_image(phase, static.magnitude, static.color_bias)
    return _finished(objectives, settings, scores, final, alpha)


def lr_schedule(settings: MacoSettings) -> list[float]:
    """The learning rate of each step: `lr` falling along a half cosine to `lr * lr_decay` at the last step."""
    n, lr, end = settings.steps, settings.lr, settings.lr * settings.lr_decay
    return [end + (lr - end) * 0.5 * (1 + math.cos(math.pi * t / max(1, n - 1))) for t in range(n)]


def _setup(model: LoadedModel, objectives: Sequence[Objective], settings: MacoSettings,
           spectrum: Spectrum) -> tuple[_StepConfig, _Static]:
    """The step's plain settings and the tensors that stay put through the render."""
    device, dtype = model.device, model.dtype
    cfg = _StepConfig(settings.crops, tuple(settings.crop_scale), settings.crop_jitter, settings.noise,  # type: ignore[arg-type]
                      settings.crop_rotation, settings.cossim_power, settings.image_size,
                      settings.input_size or model.preprocess.input_size)
    static = _Static(
        mixed_seeds=seed_tensor([objective_seed(settings.seed, model.name, o.key) for o in objectives], device),
        box_increments=counters(3 * cfg.crops, device),
        rotation_increments=rotation_increments(cfg.crops, device) if cfg.crop_rotation > 0 else None,
        noise_increments=counters((cfg.crops * 3 * cfg.input_size**2 + 1) // 2, device),
        magnitude=spectrum.resized(cfg.image_size).to(device, dtype),
        color_bias=color_bias_of(settings.mean_color, device, dtype),
        targets=_targets(objectives, model.num_concept_channels, device, dtype),
    )
    return cfg, static


def _finished(objectives: Sequence[Objective], settings: MacoSettings, scores: torch.Tensor, final: torch.Tensor,
              alpha: torch.Tensor) -> list[MacoRender]:
    """Read everything back once (the only host synchronisation) and finish each image and alpha map."""
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
