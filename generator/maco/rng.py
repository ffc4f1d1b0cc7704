"""Counter-based random numbers (SplitMix64 on int64 tensors): every draw is a pure function of
(objective seed, step, stream, index), so an objective draws the same numbers in any batch."""

from __future__ import annotations

import math
from typing import Sequence

import torch

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
