"""Relations between concepts (the concept atlas): importance charts, important concepts, similar
concepts across classes, alignment with classes, decision strategies, and the model-wide map.

What it reads of the store, through `reading` (the formats: generator/sidefiles.py): per class
with CRAFT done, the concept vectors (`craft.files.directions`), the per-image records
(`craft.files.per_image`: coefficients, Sobol totals, source ids) and the thumbnail grid's path
(`craft.files.thumbs`); per model `head.npz`, the class rows of the head in the pooled
concept-layer space, "linear" (exact) or "gradient" (a local linearisation, labelled so on the
site). Without it, concepts have no aligned classes.

The maths (each a pure function, unit-tested):
- similarity: cosine of concept vectors; a concept's similar concepts are the SIMILAR_TOP most
  similar concepts of OTHER classes of the same model with cosine >= SIMILARITY_THRESHOLD;
- alignment: cosine of a concept vector with each class row of the head; the ALIGNED_TOP best;
- per-image importance: where h is linear, the exact per-image logit terms
  coefficient_k * (W_k . w_class); else the per-image Sobol indices; else the coefficients;
- important concepts: most important for >= min_images(N) of the class's N images (5 %, at least
  1: Lens's 10 at CRAFT's 200 images);
- decision strategies: each image's importance vector (as fractions of its total) projected by PCA
  (deterministic) to 2-D;
- the map: t-SNE (scikit-learn, Barnes-Hut, seeded) of the unit concept vectors after PCA to 50.

Caching: per model, the inputs of each class are keyed by its CRAFT record (settings hash, finish
time, file names); a class whose key is unchanged is not re-read, and the global parts (similar
concepts, alignment, map) are recomputed only when some class key or the head changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..records import Meta
from ..sidefiles import THUMB_CELL as THUMB_CELL  # re-exported: the site's sprite geometry
from ..sidefiles import THUMB_COLS as THUMB_COLS
from ..sidefiles import Head, SideFileError
from ..store import ClassPaths, Store, atomic_write_bytes
from .reading import Unreadable, read_directions, read_head, read_per_image

# Cosine of concept vectors. On 50 classes of efficientnet-lite0 (benchmarks/relations_sanity.py) the
# cross-class cosines have median 0.26 and 99th percentile 0.51 (non-negative vectors: never near 0);
# 0.7 is far in that tail and still gives 9 % of concepts a similar one among only 49 other classes.
SIMILARITY_THRESHOLD = 0.7
SIMILAR_TOP = 3
ALIGNED_TOP = 5
IMPORTANT_FRACTION = 0.05  # of a class's images, for "important concept"; 10 of CRAFT's 200, as Lens
MAP_SEED = 0
MAP_PCA = 50
MAP_ITER = 350
CACHE_VERSION = "1"
PER_IMAGE_UNREADABLE = "per-image records unreadable"  # the start of ClassConcepts.problem that the report repeats


# ----------------------------------------------------------------------------- the maths


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def similar_concepts(vectors: np.ndarray, owners: np.ndarray, top: int = SIMILAR_TOP,
                     threshold: float = SIMILARITY_THRESHOLD, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each concept, the `top` most similar concepts of other classes (cosine >= threshold).

    Returns (indices, cosines), both (n, top); missing entries are -1 / nan. Blocked, so 10 000
    concepts need 40 MB, not 400."""
    u = unit_rows(vectors)
    n = len(u)
    idx = np.full((n, top), -1, dtype=np.int64)
    cos = np.full((n, top), np.nan, dtype=np.float32)
    owners = np.asarray(owners)
    for start in range(0, n, block):
        sims = u[start:start + block] @ u.T
        sims[owners[start:start + block, None] == owners[None, :]] = -np.inf  # same class: not a relation
        k = min(top, n)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(sims), 1))
        vals = np.take_along_axis(sims, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)  # by cosine, ties by index: deterministic
        part, vals = np.take_along_axis(part, order, axis=1)[:, :top], np.take_along_axis(vals, order, axis=1)[:, :top]
        ok = vals >= threshold
        idx[start:start + block, :part.shape[1]] = np.where(ok, part, -1)
        cos[start:start + block, :part.shape[1]] = np.where(ok, vals, np.nan)
    return idx, cos


def aligned_classes(vectors: np.ndarray, head_weight: np.ndarray, top: int = ALIGNED_TOP) -> tuple[np.ndarray, np.ndarray]:
    """For each concept, the `top` classes whose head row has the largest cosine with it: (n, top) each."""
    sims = unit_rows(vectors) @ unit_rows(head_weight).T
    top = min(top, sims.shape[1])
    part = np.argpartition(-sims, top - 1, axis=1)[:, :top]
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def per_image_importance(coefficients: np.ndarray | None, sobol: np.ndarray | None, vectors: np.ndarray,
                         class_row: np.ndarray | None) -> tuple[np.ndarray | None, str]:
    """(N, r) importance of each concept in each image, and what it is.

    With a linear head row: the exact logit terms coefficient * (W_k . w_class); else the
    per-image Sobol indices; else the coefficients themselves (presence, not importance)."""
    if coefficients is not None and class_row is not None:
        return coefficients * (vectors @ class_row)[None, :], "logit"
    if sobol is not None:
        return sobol, "sobol"
    if coefficients is not None:
        return coefficients, "presence"
    return None, "none"


def min_images(n_images: int, fraction: float = IMPORTANT_FRACTION) -> int:
    """Images a concept must top to count as important: 5 % of the class's images, at least 1."""
    return max(1, math.ceil(fraction * n_images - 1e-9))


def important_concepts(importance: np.ndarray, fraction: float = IMPORTANT_FRACTION) -> tuple[np.ndarray, np.ndarray, int]:
    """(counts per concept of images where it is the most important, mask of important, threshold N)."""
    top = np.argmax(importance, axis=1)
    counts = np.bincount(top, minlength=importance.shape[1])
    need = min_images(len(importance), fraction)
    return counts, counts >= need, need


def strategy_layout(importance: np.ndarray) -> np.ndarray:
    """Images in 2-D by their importance vectors (as fractions of each image's total |importance|):
    PCA, deterministic (sign fixed so the largest loading is positive), scaled to [0, 1]."""
    x = np.asarray(importance, dtype=np.float64)
    x = x / np.maximum(np.abs(x).sum(axis=1, keepdims=True), 1e-12)
    x = x - x.mean(axis=0)
    if len(x) < 2 or not np.any(x):
        return np.full((len(x), 2), 0.5)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    xy = x @ (comps * signs[:, None]).T
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((len(xy), 1))])
    return _unit_box(xy)


def _unit_box(xy: np.ndarray) -> np.ndarray:
    """Each axis scaled to [0, 1]; a flat axis sits at 0.5."""
    xy = np.asarray(xy, dtype=np.float64)
    lo, span = xy.min(axis=0), np.ptp(xy, axis=0)
    out = np.full_like(xy, 0.5)
    ok = span > 1e-12
    out[:, ok] = (xy[:, ok] - lo[ok]) / span[ok]
    return out


def concept_map(vectors: np.ndarray, seed: int = MAP_SEED, max_iter: int = MAP_ITER) -> np.ndarray:
    """Every concept of a model in 2-D by similarity of their vectors, scaled to [0, 1].

    t-SNE of the unit vectors (so Euclidean distance ranks like cosine) after PCA to MAP_PCA
    dimensions; deterministic for a seed. Fewer than 5 concepts: PCA alone."""
    u = unit_rows(vectors).astype(np.float64)
    n = len(u)
    if n == 0:
        return np.zeros((0, 2))
    from sklearn.decomposition import PCA

    if n < 5:
        dims = min(2, n, u.shape[1])
        xy = PCA(dims, random_state=seed).fit_transform(u) if n > 1 else np.zeros((1, 2))
        return _unit_box(np.hstack([xy, np.zeros((n, 2 - xy.shape[1]))]))
    from sklearn.manifold import TSNE

    x = PCA(min(MAP_PCA, n, u.shape[1]), random_state=seed).fit_transform(u) if u.shape[1] > MAP_PCA else u
    tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed, max_iter=max(250, max_iter),
                angle=0.6, n_jobs=min(2, os.cpu_count() or 1))
    return _unit_box(tsne.fit_transform(x))


# ----------------------------------------------------------------------------- reading the store


@dataclass
class ClassConcepts:
    """What the relations need of one (model, class)."""

    index: int
    key: str
    ids: list[int]  # concept ids, in the row order of `vectors`
    vectors: np.ndarray  # (r, C)
    coefficients: np.ndarray | None = None  # (N, r)
    sobol: np.ndarray | None = None  # (N, r)
    sources: list[str] = field(default_factory=list)
    thumbs: str | None = None  # store path of the thumbnail grid
    problem: str | None = None  # why per-image relations are missing


def class_key(meta: Meta | Unreadable | None) -> str | None:
    """What decides a class's relations: its CRAFT record's identity. None: no concepts."""
    if not isinstance(meta, Meta):
        return None
    craft = meta.craft
    if craft is None or not craft.done or not craft.files.get("directions"):
        return None
    return json.dumps([craft.settings_hash, craft.finished_at, craft.files], sort_keys=True)


def read_class(paths: ClassPaths, index: int, meta: Meta, key: str) -> ClassConcepts | None:
    """The concept vectors and per-image records of one class (each file through the store's path
    check), None when it has no concepts; SideFileError when its concept vectors cannot be read."""
    files = meta.craft.files if meta.craft is not None else {}
    vectors = read_directions(paths, files["directions"])
    ids = sorted(c.id for c in meta.concepts)
    if len(ids) != len(vectors):
        ids = list(range(len(vectors)))
        if not ids:
            return None
    cc = ClassConcepts(index, key, ids, vectors)
    rel = files.get("per_image")
    if not rel:
        cc.problem = "this render did not record per-image concept coefficients"
    else:
        try:
            records = read_per_image(paths, rel, len(ids))
            cc.coefficients, cc.sobol, cc.sources = records.coefficients, records.importance, records.sources
        except SideFileError as e:
            cc.problem = f"{PER_IMAGE_UNREADABLE} ({e})"
    thumbs = files.get("thumbs")
    cc.thumbs = thumbs or None
    return cc


# ----------------------------------------------------------------------------- a model's relations


@dataclass
class ModelRelations:
    """Everything relations know of one model; indices into `concepts` are global concept numbers."""

    model: str
    classes: dict[int, ClassConcepts]
    head: Head | None
    owner: np.ndarray  # (n,) class index of each concept
    concept_id: np.ndarray  # (n,) concept id within its class
    similar: np.ndarray  # (n, SIMILAR_TOP) global concept numbers, -1 none
    similar_cos: np.ndarray
    aligned: np.ndarray | None  # (n, ALIGNED_TOP) class indices
    aligned_cos: np.ndarray | None
    xy: np.ndarray  # (n, 2) map position in [0, 1]
    seconds: float = 0.0
    recomputed: bool = False
    problems: list[str] = field(default_factory=list)  # "0006: concept vectors unreadable (...)", for the report

    def number(self, index: int, concept_id: int) -> int | None:
        return self._numbers.get((index, concept_id))

    def __post_init__(self) -> None:
        self._numbers = {(int(i), int(k)): n for n, (i, k) in enumerate(zip(self.owner, self.concept_id))}


def model_relations(model: str, store: Store | Path, metas: dict[int, Meta | Unreadable | None], cache_dir: Path) -> ModelRelations:
    """Read (or take from the cache) every class's concepts, then the global parts. `store`: the
    Store, or its root. A class whose concept vectors cannot be read is left out, with one line in
    `problems`."""
    import time

    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    cache_file = cache_dir / "relations" / f"{model}.npz"
    cached = _load_cache(cache_file)
    head = read_head(store.root / model)
    classes: dict[int, ClassConcepts] = {}
    problems: list[str] = []
    for index, meta in sorted(metas.items()):
        key = class_key(meta)
        if key is None:
            continue
        cc = cached.get(index) if cached else None
        if cc is None or cc.key != key:
            try:
                cc = read_class(store.class_paths(model, index), index, meta, key)  # type: ignore[arg-type]
            except SideFileError as e:
                problems.append(f"{index:04d}: concept vectors unreadable ({e})")
                continue
        if cc is not None:
            classes[index] = cc
            if cc.problem and cc.problem.startswith(PER_IMAGE_UNREADABLE):  # cached or not: every build says so
                problems.append(f"{index:04d}: {cc.problem}")
    owner = np.array([i for i, cc in classes.items() for _ in cc.ids], dtype=np.int64)
    concept_id = np.array([k for cc in classes.values() for k in cc.ids], dtype=np.int64)
    vectors = np.concatenate([cc.vectors for cc in classes.values()]) if classes else np.zeros((0, 1), np.float32)
    global_key = hashlib.sha256(json.dumps([CACHE_VERSION, SIMILARITY_THRESHOLD, MAP_SEED, MAP_ITER,
                                            head.digest if head else None, head.weight.shape if head else None,
                                            [(i, cc.key) for i, cc in classes.items()]]).encode()).hexdigest()
    recomputed = False
    if cached is not None and cached.get("global_key") == global_key:
        g = cached["global"]
    else:
        recomputed = True
        g = {}
        g["similar"], g["similar_cos"] = similar_concepts(vectors, owner) if len(vectors) else (np.zeros((0, SIMILAR_TOP), np.int64),) * 2
        if head is not None and len(vectors) and head.weight.shape[1] == vectors.shape[1]:
            g["aligned"], g["aligned_cos"] = aligned_classes(vectors, head.weight)
        g["xy"] = concept_map(vectors)
    rel = ModelRelations(model, classes, head, owner, concept_id, g["similar"], g["similar_cos"], g.get("aligned"),
                         g.get("aligned_cos"), g["xy"], recomputed=recomputed, problems=problems)
    if recomputed or cached is None or any(cached.get(i) is not cc for i, cc in classes.items()):
        _save_cache(cache_file, rel, global_key)
    rel.seconds = time.perf_counter() - t0
    return rel


def _save_cache(path: Path, rel: ModelRelations, global_key: str) -> None:
    """One npz per model (no pickles): class inputs as arrays plus a JSON index of them."""
    arrays: dict[str, Any] = {}
    index = []
    for i, cc in rel.classes.items():
        entry = {"index": i, "key": cc.key, "ids": cc.ids, "sources": cc.sources, "thumbs": cc.thumbs, "problem": cc.problem}
        arrays[f"v{i}"] = cc.vectors
        if cc.coefficients is not None:
            arrays[f"c{i}"] = cc.coefficients
        if cc.sobol is not None:
            arrays[f"s{i}"] = cc.sobol
        index.append(entry)
    for name in ("similar", "similar_cos", "aligned", "aligned_cos", "xy"):
        value = getattr(rel, name)
        if value is not None:
            arrays[f"g_{name}"] = value
    arrays["index"] = np.array(json.dumps({"version": CACHE_VERSION, "global_key": global_key, "classes": index}))
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_cache(path: Path) -> dict[Any, Any] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["index"]))
            if meta.get("version") != CACHE_VERSION:
                return None
            out: dict[Any, Any] = {"global_key": meta["global_key"], "global": {}}
            for name in ("similar", "similar_cos", "aligned", "aligned_cos", "xy"):
                if f"g_{name}" in z.files:
                    out["global"][name] = z[f"g_{name}"]
            for e in meta["classes"]:
                i = e["index"]
                out[i] = ClassConcepts(i, e["key"], e["ids"], z[f"v{i}"], z[f"c{i}"] if f"c{i}" in z.files else None,
                                       z[f"s{i}"] if f"s{i}" in z.files else None, e["sources"], e["thumbs"], e["problem"])
            return out
    except (OSError, KeyError, ValueError):
        return None


# ----------------------------------------------------------------------------- one class's relations


@dataclass
class ClassRelations:
    """Per-image relations of one class: important concepts and the decision-strategy layout."""

    kind: str  # what the per-image importance is: logit | sobol | presence | none
    counts: dict[int, int]  # concept id -> images where it is the most important
    need: int  # images a concept must top to be important
    n_images: int
    points: list[tuple[float, float, int]]  # per image: x, y in [0, 1], id of its most important concept
    sources: list[str]
    thumbs: str | None
    problem: str | None


def class_relations(rel: ModelRelations, index: int) -> ClassRelations | None:
    cc = rel.classes.get(index)
    if cc is None:
        return None
    row = None
    if rel.head is not None and rel.head.kind == "linear" and index < len(rel.head.weight) \
            and rel.head.weight.shape[1] == cc.vectors.shape[1]:
        row = rel.head.weight[index]
    importance, kind = per_image_importance(cc.coefficients, cc.sobol, cc.vectors, row)
    if importance is None or len(importance) == 0:
        return ClassRelations("none", {}, 0, 0, [], [], None, cc.problem or "no per-image records")
    counts, _, need = important_concepts(importance)
    xy = strategy_layout(importance)
    top = np.argmax(importance, axis=1)
    points = [(round(float(x), 4), round(float(y), 4), cc.ids[int(t)]) for (x, y), t in zip(xy, top)]
    sources = cc.sources if len(cc.sources) == len(points) else []
    return ClassRelations(kind, {cc.ids[k]: int(n) for k, n in enumerate(counts)}, need, len(points), points, sources,
                          cc.thumbs, None)
