"""The concept atlas maths and store reading (generator/site/relations.py): similarity, alignment,
per-image importance, important concepts, 2-D layouts, the cache, and the chart's honest numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator.site import relations as R
from generator.site.views import ConceptView, ImageView, importance_chart
from generator.store import Store

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- similarity


def test_similar_concepts_are_from_other_classes_ranked_by_cosine_above_the_threshold():
    v = np.array([[1, 0, 0], [0.9, 0.1, 0], [1, 0.05, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float32)
    owners = np.array([0, 0, 1, 1, 2, 2])
    idx, cos = R.similar_concepts(v, owners, top=2, threshold=0.7)
    # concept 0 (class 0): concept 2 (class 1, cos 0.9988) then concept 5 (class 2, cos 0.6 < 0.7: dropped)
    assert idx[0].tolist() == [2, -1] and cos[0, 0] == pytest.approx(1 / np.sqrt(1 + 0.05 ** 2), rel=1e-5)
    assert np.isnan(cos[0, 1])
    # concept 3 (class 1, the y axis): concept 5 (cos 0.8); never concept 2 of its own class
    assert idx[3].tolist() == [5, -1] and cos[3, 0] == pytest.approx(0.8, rel=1e-5)
    for i, row in enumerate(idx):
        assert all(j < 0 or owners[j] != owners[i] for j in row)


def test_similar_concepts_blocks_give_the_same_answer_as_one_block():
    rng = np.random.default_rng(0)
    v = rng.gamma(0.5, 1.0, (300, 16)).astype(np.float32)
    owners = np.repeat(np.arange(30), 10)
    a = R.similar_concepts(v, owners, threshold=0.5, block=1024)
    b = R.similar_concepts(v, owners, threshold=0.5, block=7)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], equal_nan=True)
    # brute force for one row
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    sims = u[42] @ u.T
    sims[owners == owners[42]] = -np.inf
    assert a[0][42, 0] == int(np.argmax(sims))


# ----------------------------------------------------------------------------- alignment


def test_aligned_classes_are_the_best_cosines_with_head_rows_in_order():
    head = np.array([[1, 0], [0, 1], [1, 1], [-1, 0], [2, 0.1]], dtype=np.float32)
    idx, cos = R.aligned_classes(np.array([[3, 0]], dtype=np.float32), head, top=3)
    assert idx[0].tolist() == [0, 4, 2]  # cos 1, 0.9988, 0.7071 (scale of a row does not matter)
    assert cos[0].tolist() == pytest.approx([1.0, 2 / np.sqrt(4.01), 1 / np.sqrt(2)], rel=1e-5)
    idx, cos = R.aligned_classes(np.array([[0, 1]], dtype=np.float32), head, top=5)
    assert idx[0, -1] in (0, 3) and cos[0, -1] <= 0  # orthogonal or opposite rows come last


# ----------------------------------------------------------------------------- per-image importance, important concepts


def test_per_image_importance_is_the_exact_logit_term_with_a_linear_head():
    coef = np.array([[1.0, 2.0], [0.5, 0.0]], dtype=np.float32)
    w = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    row = np.array([2.0, -1.0], dtype=np.float32)
    imp, kind = R.per_image_importance(coef, None, w, row)
    assert kind == "logit" and imp.tolist() == [[2.0, -2.0], [1.0, 0.0]]
    # each image's terms add up to its class logit without bias: mean-pool(U W) . w_c
    assert imp.sum(1).tolist() == pytest.approx(((coef @ w) @ row).tolist())
    sob = np.ones((2, 2), np.float32)
    assert R.per_image_importance(coef, sob, w, None)[1] == "sobol"
    assert R.per_image_importance(coef, None, w, None)[1] == "presence"
    assert R.per_image_importance(None, None, w, None) == (None, "none")


@pytest.mark.parametrize("n, need", [(1, 1), (12, 1), (20, 1), (21, 2), (100, 5), (200, 10)])
def test_important_needs_five_percent_of_images_lens_ten_at_200(n, need):
    assert R.min_images(n) == need


def test_important_concepts_count_the_images_each_concept_tops():
    imp = np.zeros((40, 3))
    imp[:30, 0] = 1  # concept 0 tops 30 images
    imp[30:39, 1] = 1  # concept 1 tops 9
    imp[39, 2] = 1  # concept 2 tops 1
    counts, important, need = R.important_concepts(imp)
    assert need == 2 and counts.tolist() == [30, 9, 1] and important.tolist() == [True, True, False]


# ----------------------------------------------------------------------------- layouts


def test_strategy_layout_separates_images_by_their_top_concept_and_is_deterministic():
    rng = np.random.default_rng(1)
    imp = rng.uniform(0, 0.1, (30, 4))
    imp[:15, 0] += 1
    imp[15:, 2] += 1
    xy = R.strategy_layout(imp)
    assert xy.shape == (30, 2) and xy.min() >= 0 and xy.max() <= 1
    a, b = xy[:15].mean(0), xy[15:].mean(0)
    assert np.linalg.norm(a - b) > 0.5  # the two strategies are far apart
    assert np.array_equal(xy, R.strategy_layout(imp.copy()))
    assert R.strategy_layout(imp[:1]).tolist() == [[0.5, 0.5]]


def test_concept_map_is_deterministic_under_a_seed_and_keeps_neighbours():
    rng = np.random.default_rng(2)
    centres = rng.gamma(0.5, 1.0, (5, 32))
    v = np.concatenate([c + rng.gamma(0.2, 0.05, (12, 32)) for c in centres]).astype(np.float32)
    a = R.concept_map(v, seed=3, max_iter=300)
    b = R.concept_map(v, seed=3, max_iter=300)
    assert np.array_equal(a, b)
    assert a.shape == (60, 2) and a.min() >= 0 and a.max() <= 1
    groups = np.repeat(np.arange(5), 12)
    d = np.linalg.norm(a[:, None] - a[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (groups[np.argmin(d, axis=1)] == groups).mean() > 0.9  # nearest neighbour in the same group
    assert R.concept_map(v[:3]).shape == (3, 2) and R.concept_map(v[:0]).shape == (0, 2)


# ----------------------------------------------------------------------------- the chart's honest numbers


def _concept(rank: int, sobol: float | None, share: float | None) -> ConceptView:
    return ConceptView(id=rank, rank=rank, importance="", importance_pct=0, logit_share=None, logit_pct=0,
                       vis=ImageView(), sobol=sobol, share=share)


def test_chart_keeps_the_sign_of_negative_logit_shares():
    concepts = [_concept(1, 0.5, 0.6), _concept(2, 0.3, 0.33), _concept(3, 0.1, -0.07)]
    chart = importance_chart(concepts, {1: 5, 2: 1, 3: 0}, 2)
    assert chart.kind == "logit" and chart.has_negative
    assert [b.percent for b in chart.bars] == [60.0, 33.0, -7.0]
    assert [b.negative for b in chart.bars] == [False, False, True]
    assert chart.bars[0].value == 1.0 and chart.bars[2].value == pytest.approx(-0.07 / 0.6, abs=1e-4)
    assert [c.important for c in concepts] == [True, False, False]


def test_chart_bounds_sobol_estimates_above_one_and_says_how_many():
    concepts = [_concept(1, 1.68, None), _concept(2, 0.5, None), _concept(3, 0.5, None)]
    chart = importance_chart(concepts, None, None)
    assert chart.kind == "sobol" and chart.clipped == 1 and not chart.has_negative
    assert [b.percent for b in chart.bars] == [50.0, 25.0, 25.0]  # 1 (bounded), 0.5, 0.5 of 2
    assert sum(c.share for c in concepts) == pytest.approx(1.0)
    assert chart.bars[0].sobol == 1.68  # the raw estimate stays visible


# ----------------------------------------------------------------------------- the store and the cache


def test_model_relations_read_the_store_and_reuse_the_cache(tmp_path):
    store = write_synthetic_store(tmp_path / "store", 6, DEFAULT_MODELS[:1])
    model = DEFAULT_MODELS[0]
    metas = {i: Store(store).meta(model, i) for i in range(6)}
    first = R.model_relations(model, store, metas, tmp_path / "cache")
    assert first.recomputed and first.head is not None and first.head.kind == "linear"
    n = len(first.owner)
    assert n == 10 * len(first.classes) and first.xy.shape == (n, 2) and first.aligned.shape == (n, R.ALIGNED_TOP)
    rel0 = R.class_relations(first, 0)
    assert rel0.kind == "logit" and rel0.n_images == 12 and rel0.need == 1 and len(rel0.points) == 12
    assert sum(rel0.counts.values()) == 12 and rel0.thumbs and rel0.sources

    again = R.model_relations(model, store, metas, tmp_path / "cache")
    assert not again.recomputed and np.array_equal(again.xy, first.xy) and np.array_equal(again.similar, first.similar)

    # One class's CRAFT changes: only it is re-read, and the global parts are recomputed.
    metas[1].craft.finished_at = "2026-01-01T00:00:00Z"
    directions = store / model / "0001" / metas[1].craft.files["directions"]
    vectors = np.load(directions)
    directions.unlink()
    np.save(directions, vectors[::-1].copy())
    changed = R.model_relations(model, store, metas, tmp_path / "cache")
    assert changed.recomputed
    assert np.array_equal(changed.classes[1].vectors, vectors[::-1]) and changed.classes[0] is not None


def test_a_class_without_per_image_records_still_has_similar_concepts(tmp_path):
    store = write_synthetic_store(tmp_path / "store", 3, DEFAULT_MODELS[:1])
    model = DEFAULT_MODELS[0]
    metas = {i: Store(store).meta(model, i) for i in range(3)}
    del metas[0].craft.files["per_image"]  # a render from before per-image records
    (store / model / "head.npz").unlink()
    rel = R.model_relations(model, store, metas, tmp_path / "cache")
    assert rel.head is None and rel.aligned is None
    assert 0 in rel.classes and rel.classes[0].problem
    assert R.class_relations(rel, 0).kind == "none"
    assert R.class_relations(rel, 1).kind == "sobol"  # no head: per-image Sobol indices
