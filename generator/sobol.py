"""Sobol total-order indices: quasi-Monte Carlo designs and the Jansen estimator (as in CRAFT).

Total index of input i: ST_i = E[(f(A) - f(A_B^i))^2] / (2 Var f), where A_B^i is design A with
column i taken from design B (Jansen 1999; Saltelli et al. 2010).
"""

from __future__ import annotations

import torch


def sobol_designs(dim: int, n: int, seed: int = 0) -> torch.Tensor:
    """Stacked designs [A; B; A_B^1; ...; A_B^dim] in [0, 1]^dim: shape (n * (dim + 2), dim).

    A and B are the two halves of a scrambled Sobol sequence in 2 * dim dimensions.
    """
    engine = torch.quasirandom.SobolEngine(dimension=2 * dim, scramble=True, seed=seed)
    points = engine.draw(n, dtype=torch.float32)
    A, B = points[:, :dim], points[:, dim:]
    mixed = []
    for i in range(dim):
        C = A.clone()
        C[:, i] = B[:, i]
        mixed.append(C)
    return torch.cat([A, B, *mixed])


def jansen_total_indices(f: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """Total indices from the outputs of f on `sobol_designs(dim, n)`: f of shape (n * (dim + 2), ...)."""
    fA, fB = f[:n], f[n : 2 * n]
    fC = f[2 * n :].reshape(dim, n, *f.shape[1:])
    variance = torch.cat([fA, fB]).var(dim=0, correction=0).clamp(min=1e-12)
    return ((fA[None] - fC) ** 2).mean(dim=1) / (2 * variance)
