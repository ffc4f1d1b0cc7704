"""MACO (Fel et al. 2023): a fixed Fourier magnitude, an optimised phase, random crops.

Separate pieces, as in Lucent, a module each (lower ones never import higher ones):
`rng` (counter-based random numbers) -> `parameterization` (phase -> image) and `transforms`
(crops and noise) -> `objectives` (class logit; direction in pooled features) -> `finish`
(percentile clip, alpha map; showing a finished render to a model) -> `loop` (NAdam, many
objectives per forward/backward pass, step modes, the batch-size probe). This package re-exports
every name `generator.maco` had as a single module; a test that swaps a piece patches it where
`loop` looks it up (`generator.maco.loop`).

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

from ..spectrum import COLOR_CORRELATION, Spectrum
from .finish import classify, finish_alpha, finish_image, render_inputs
from .loop import (
    STEP_MODE_ENV,
    STEP_MODES,
    MacoRender,
    operator_calls_per_step,
    probe_batch_size,
    render,
    step_mode,
)
from .objectives import Objective, atom_objective, class_objective, direction_objective, dot_cossim, objective_scores, objective_seed
from .parameterization import color_bias_of, initial_phase, phase_to_image, standardize
from .rng import (
    GOLDEN,
    NOISE_VARIANCE,
    STREAM_BOXES,
    STREAM_NOISE,
    STREAM_PHASE,
    _signed,
    counters,
    mix64,
    noise_from_bits_,
    normal_from_bits,
    random_bits,
    seed_tensor,
    stream_keys,
    uniform_from_bits,
)
from .transforms import crop_noise, random_crops, sample_angles, sample_boxes, turned_crops

# The package's names, as generator/maco.py exported them before it became a package.
__all__ = [
    "_signed",
    "atom_objective",
    "class_objective",
    "color_bias_of",
    "classify",
    "COLOR_CORRELATION",
    "counters",
    "crop_noise",
    "direction_objective",
    "dot_cossim",
    "finish_alpha",
    "finish_image",
    "GOLDEN",
    "initial_phase",
    "MacoRender",
    "mix64",
    "noise_from_bits_",
    "NOISE_VARIANCE",
    "normal_from_bits",
    "Objective",
    "objective_scores",
    "objective_seed",
    "operator_calls_per_step",
    "phase_to_image",
    "probe_batch_size",
    "random_bits",
    "random_crops",
    "render_inputs",
    "render",
    "sample_angles",
    "sample_boxes",
    "turned_crops",
    "seed_tensor",
    "Spectrum",
    "standardize",
    "step_mode",
    "STEP_MODE_ENV",
    "STEP_MODES",
    "STREAM_BOXES",
    "stream_keys",
    "STREAM_NOISE",
    "STREAM_PHASE",
    "uniform_from_bits",
]
