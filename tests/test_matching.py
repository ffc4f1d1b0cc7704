"""generator/matching.py on synthetic codes: planted atoms are found, unrelated ones are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generator import matching
from generator.errors import DictionaryError


def random_codes(views: int, grid: tuple[int, int], atoms: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k codes as codes.npz holds them: distinct atoms per token, positive values (float16)."""
    rng = np.random.default_rng(seed)
    tokens = grid[0] * grid[1]
    indices = np.argsort(rng.random((views, tokens, atoms)), axis=-1)[..., :k].astype(np.int16)
    values = rng.uniform(0.1, 1.0, (views, tokens, k)).astype(np.float16)
    return indices, values


def test_planted_atoms_under_permutation_match_mutually_with_score_one():
    grid, atoms = (7, 7), 48
    indices, values = random_codes(40, grid, atoms, 4, seed=0)
    perm = np.random.default_rng(1).permutation(atoms)
    a = matching.code_maps(indices, values, grid, atoms, grid)
    b = matching.code_maps(perm[indices.astype(np.int64)], values, grid, atoms, grid)
    found = matching.match_atoms(a, b, cells=49)
    assert np.array_equal(found.a_to_b.best, perm)
    assert np.array_equal(found.b_to_a.best, np.argsort(perm))
    assert np.allclose(found.a_to_b.score, 1.0) and np.allclose(found.b_to_a.score, 1.0)
    assert found.a_to_b.mutual.all() and found.mutual_rate == 1.0
    assert matching.MIN_THRESHOLD <= found.threshold < 0.5
    entries = found.entries()
    assert len(entries) == atoms and entries["3"] == {"atom": int(perm[3]), "score": 1.0, "mutual": True}


def test_unrelated_codes_fall_below_the_null_threshold():
    grid, atoms = (7, 7), 48
    a = matching.code_maps(*random_codes(40, grid, atoms, 4, seed=0), grid, atoms, grid)
    b = matching.code_maps(*random_codes(40, grid, atoms, 4, seed=5), grid, atoms, grid)
    found = matching.match_atoms(a, b, cells=49)
    assert found.a_to_b.score.max() < found.threshold
    assert found.entries() == {} and found.entries("b_to_a") == {}
    assert found.mutual_rate == 0.0


def test_partly_shared_dictionaries_match_only_the_shared_atoms():
    """B shares A's first 16 atoms (relabelled, with extra noise codes); its other atoms are unrelated."""
    grid, atoms, shared = (7, 7), 32, 16
    ia, va = random_codes(60, grid, atoms, 3, seed=2)
    ib, vb = random_codes(60, grid, atoms, 3, seed=3)
    mask = ia < shared
    ib = np.where(mask, ia + 100, ib + 200).astype(np.int64)  # shared atoms move to 100.., unrelated to 200..
    vb = np.where(mask, va * 0.9, vb).astype(np.float16)
    rng = np.random.default_rng(4)
    noise = rng.uniform(0, 0.3, va.shape).astype(np.float16) * (rng.random(va.shape) < 0.2)
    a = matching.code_maps(ia, va, grid, atoms, grid)
    b = matching.code_maps(ib, vb + noise * mask, grid, 300, grid)
    found = matching.match_atoms(a, b, cells=49)
    matched = {int(i): v["atom"] for i, v in found.entries().items()}
    assert matched == {i: i + 100 for i in range(shared)}
    assert all(v["mutual"] for v in found.entries().values())
    assert all(found.a_to_b.score[i] > 0.9 for i in range(shared))


def test_resampler_is_torchs_interpolation():
    rng = np.random.default_rng(0)
    for grid, common, mode in [((9, 9), (7, 7), "area"), ((5, 6), (7, 8), "bilinear")]:
        x = rng.random(grid)
        expected = torch.nn.functional.interpolate(torch.tensor(x)[None, None], size=common, mode=mode,
                                                   **({} if mode == "area" else {"align_corners": False}))[0, 0]
        got = matching.resampler(grid, common) @ x.reshape(-1)
        assert np.allclose(got, expected.numpy().reshape(-1))


def test_different_grids_resample_to_the_common_one():
    """A on 7x7; B the same codes, relabelled, on 14x14 (each cell copied to its 2x2 block): area gives A back."""
    atoms = 24
    indices, values = random_codes(30, (7, 7), atoms, 3, seed=7)
    perm = np.random.default_rng(8).permutation(atoms)
    up = lambda t: np.repeat(np.repeat(t.reshape(30, 7, 7, 3), 2, axis=1), 2, axis=2).reshape(30, 196, 3)  # noqa: E731
    assert matching.common_grid((7, 7), (14, 14)) == (7, 7)
    a = matching.code_maps(indices, values, (7, 7), atoms, (7, 7))
    b = matching.code_maps(up(perm[indices.astype(np.int64)]), up(values), (14, 14), atoms, (7, 7))
    assert b.shape == a.shape == (30 * 49, atoms)
    found = matching.match_atoms(a, b, cells=49)
    assert np.array_equal(found.a_to_b.best, perm) and np.allclose(found.a_to_b.score, 1.0)


def test_match_codes_aligns_the_shared_views_and_is_deterministic():
    atoms = 20
    indices, values = random_codes(24, (7, 7), atoms, 3, seed=9)
    sources = [f"n{i:04d}/photo.jpg" + ("#flip" if i % 2 else "") for i in range(24)]
    a = {"sources": np.array(sources), "grid": np.array([7, 7]), "indices": indices, "values": values}
    order = np.random.default_rng(3).permutation(24)[:20]  # B saw 20 of the views, in another order, plus others
    extra_i, extra_v = random_codes(5, (7, 7), atoms, 3, seed=11)
    b = {"sources": np.array([sources[i] for i in order] + [f"other{i}" for i in range(5)]), "grid": np.array([7, 7]),
         "indices": np.concatenate([indices[order], extra_i]), "values": np.concatenate([values[order], extra_v])}
    first, common, n = matching.match_codes(a, b, atoms, atoms)
    again, _, _ = matching.match_codes(a, b, atoms, atoms)
    assert common == (7, 7) and n == 20
    assert np.array_equal(first.a_to_b.best, np.arange(atoms)) and first.mutual_rate == 1.0
    assert first.threshold == again.threshold and first.entries() == again.entries()
    assert np.array_equal(first.b_to_a.score, again.b_to_a.score)


def test_blocks_do_not_change_the_result():
    atoms = 40
    a = matching.code_maps(*random_codes(20, (7, 7), atoms, 4, seed=1), (7, 7), atoms, (7, 7))
    b = matching.code_maps(*random_codes(20, (7, 7), atoms, 4, seed=2), (7, 7), atoms, (7, 7))
    whole = matching._best_both_ways(a, b, block=1024)
    blocked = matching._best_both_ways(a, b, block=7)
    for x, y in zip(whole, blocked):
        assert np.allclose(x, y)


def test_silent_atoms_have_no_match():
    indices, values = random_codes(10, (7, 7), 8, 2, seed=0)
    a = matching.code_maps(indices, values, (7, 7), 10, (7, 7))  # atoms 8 and 9 never fire
    found = matching.match_atoms(a, a, threshold=0.5)
    assert list(found.a_to_b.best[8:]) == [-1, -1] and list(found.a_to_b.score[8:]) == [0.0, 0.0]
    assert not found.a_to_b.mutual[8:].any() and "8" not in found.entries()


@pytest.mark.parametrize("call, message", [
    (lambda: matching.code_maps(np.zeros((2, 48, 3)), np.zeros((2, 48, 3)), (7, 7), 4, (7, 7)), "do not fill"),
    (lambda: matching.code_maps(np.full((2, 49, 3), 9), np.ones((2, 49, 3)), (7, 7), 4, (7, 7)), "outside"),
    (lambda: matching.code_maps(np.zeros((2, 49, 3)), np.zeros((2, 49, 2)), (7, 7), 4, (7, 7)), "must be the same"),
    (lambda: matching.match_codes({"sources": ["x"], "grid": [7, 7], "indices": np.zeros((1, 49, 1)),
                                   "values": np.ones((1, 49, 1))},
                                  {"sources": ["y"], "grid": [7, 7], "indices": np.zeros((1, 49, 1)),
                                   "values": np.ones((1, 49, 1))}, 2, 2), "found 0"),
])
def test_bad_codes_are_one_line_errors(call, message):
    with pytest.raises(DictionaryError, match=message):
        call()
