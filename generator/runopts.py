"""Render options that act before any unit runs: `--dry-run` and `--force`.

- `dry_run` lists, per model, the units a render would do (CRAFT, class and concept
  visualizations; concept units of classes whose CRAFT is still to do are counted from the
  settings), per model and device: the time, from the units this model already rendered with the
  same settings on that kind of device when the store has some, else from the model's forward
  FLOPs (labelled an estimate), scaled by the photos found per class; and the bytes the store
  and the site grow by at these settings; with `--what ...dictionary`, each model's dictionary
  unit from FLOPs (always labelled an estimate), and its atoms' visualizations (counted once the
  dictionary is done, else at most TOP_SHARED per class). It writes nothing (a spectrum not cached yet is
  computed in a temporary folder).
- `force_parts` marks the selected parts of existing records as stale (their settings hash is
  prefixed with `forced:`; the dictionary's in `<model>/dictionary.json`, its atoms' visualizations'
  in `<model>/dictionary/macos.json`), so that the render that follows re-renders them; until then the
  site keeps showing the old pictures, and an interrupted forced run is resumed by a plain one.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .classes import imagenet_class
from .images import _SKIMAGE_PHOTOS, IMAGE_SUFFIXES, VIEWS_PER_PHOTO
from .plan import TODO, ModelPlan, Resolved, atom_units, dictionary_state, pending_units
from .progress import duration
from .records import TOP_SHARED, Meta, PartRecord
from .store import Store, dictionary_record, force_atom_macos, write_dictionary_record

# efficientnet-lite0 on two CPU cores: ~20 crops/s at 224 px, 8 crops per pass (benchmarks/bench_maco.py), at 0.77
# forward GFLOP per crop (torch.utils.flop_counter): a crop-pass (forward and backward, ~3x forward) costs 3 x 0.77.
CPU_FLOPS = 20.0 * 3 * 0.77e9
# No GPU figure is measured yet: an assumed 30 TFLOP/s achieved (bf16, a fraction of a modern GPU's peak), said as such.
GPU_FLOPS = 30e12
CRAFT_FIXED_S = 0.2  # NMF and Sobol of one class, beyond the forward passes (benchmarks/README.md: 0.09 s on lite0)
# Bytes per class x model at default settings (512 px, 10 concepts of 10 crops): the store's lossless PNGs and
# side files, and the site's WebP images (benchmarks/README.md, "Dry-run scale answers"); scaled by image area and
# by visualizations per class.
STORE_BYTES_DEFAULT = 8.8e6
SITE_BYTES_DEFAULT = 550e3  # with the 256 px concept views (benchmarks/README.md, issue 21)


def _bare_network(arch: str | None) -> Any:
    """The timm architecture with random weights (nothing loaded), built once per process for the
    estimates; None where timm cannot build it bare (the estimates then fall back to lite0's figures)."""
    if arch not in _BARE:
        try:
            import timm

            _BARE[arch] = timm.create_model(arch, pretrained=False).eval()
        except Exception:  # noqa: BLE001 - an arch timm cannot build bare: the estimate falls back to lite0's cost
            _BARE[arch] = None
    return _BARE[arch]


_BARE: dict[str | None, Any] = {}


def _forward_flops(plan: ModelPlan, side: int) -> float | None:
    """Forward FLOPs of one crop through the model's architecture (random weights, nothing loaded), or None."""
    key = (plan.entry.arch, side)
    if key not in _FLOPS:
        net, _FLOPS[key] = _bare_network(plan.entry.arch), None  # type: ignore[assignment]
        if net is not None:
            try:
                import torch
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter, torch.no_grad():
                    net(torch.zeros(1, 3, side, side))
                _FLOPS[key] = float(counter.get_total_flops())
            except Exception:  # noqa: BLE001 - a network that cannot run at this side: the estimate falls back to lite0's cost
                pass
    return _FLOPS[key]


_FLOPS: dict[tuple[str | None, int], float] = {}


def photos_per_class(images: Path | None, classes: list[int], limit: int, sample: int = 50) -> float:
    """Mean photos CRAFT uses per class (at most `limit`), over up to `sample` of the classes; 1 for the demo photos."""
    if images is None or not classes:
        return 1.0
    step = max(1, len(classes) // sample)
    counts = []
    for c in classes[::step][:sample]:
        d = images / imagenet_class(c).wnid
        n = sum(1 for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.stat().st_size > 0) if d.is_dir() else 0
        counts.append(min(n, limit))
    return statistics.mean(counts)


def _measured(store: Store, plan: ModelPlan, gpu: bool) -> tuple[float | None, float | None, int]:
    """Median seconds per visualization and per CRAFT photo of this model with these settings on this
    kind of device (GPU or CPU), and the sample size."""
    maco_settings, craft_settings = plan.maco.model_dump(mode="json"), plan.craft.model_dump(mode="json")

    def usable(r: PartRecord | None, settings: dict) -> bool:
        return (r is not None and r.done and r.settings == settings and r.wall_time_s is not None
                and (r.device or "cpu").startswith("cuda") == gpu)

    maco_s, craft_s = [], []
    for meta in store.iter_meta_records(plan.name, repair=False):  # a dry run changes nothing in the store
        maco_s += [r.wall_time_s for r in [meta.maco] + [c.maco for c in meta.concepts] if usable(r, maco_settings)]
        if usable(meta.craft, craft_settings):
            craft_s.append(meta.craft.wall_time_s / max(1, meta.craft.n_images or 1))  # type: ignore[union-attr, operator]
    return (statistics.median(maco_s) if maco_s else None, statistics.median(craft_s) if craft_s else None,
            len(maco_s) + len(craft_s))


def _rough(plan: ModelPlan, photos: float, gpu: bool) -> tuple[float, float]:
    """Seconds per visualization and per CRAFT class from the model's FLOPs at its MACO input size."""
    side = plan.maco.input_size or plan.entry.input_size or 224
    flops = _forward_flops(plan, side) or 0.77e9 * (side / 224) ** 2
    rate = GPU_FLOPS if gpu else CPU_FLOPS
    maco_s = plan.maco.steps * plan.maco.crops * 3 * flops / rate
    input_side = plan.entry.input_size or 224
    patch = plan.craft.patch_size * input_side / 224
    per_side = int((input_side - patch) // (patch * plan.craft.patch_stride)) + 1
    forwards = photos * (per_side**2 + 1)  # every patch through g, and the photo itself
    return maco_s, CRAFT_FIXED_S + forwards * (_forward_flops(plan, input_side) or flops) / rate


def _channels(plan: ModelPlan) -> int:
    """Channels of the features the dictionary reads (timm's `num_features`, built bare), else lite0's 1280."""
    net = _bare_network(plan.entry.arch)
    return int(getattr(net, "num_features", 1280)) if net is not None else 1280


def dictionary_estimate(plan: ModelPlan, images: Path | None, gpu: bool) -> tuple[float, float, str]:
    """Seconds to train the model's dictionary, from FLOPs (always an estimate): one forward pass per
    photo, then per token and epoch ~12 C x atoms FLOPs (encoder and dense decoder, forward and backward);
    and the bytes of its atoms file (encoder and decoder, float32)."""
    s = plan.dictionary
    photos = (len(_SKIMAGE_PHOTOS) + 3 if images is None else
              photos_per_class(images, plan.dictionary_classes, s.max_images) * len(plan.dictionary_classes))
    photos *= VIEWS_PER_PHOTO if s.augment else 1  # views, each through the model
    side = plan.entry.input_size or 224
    forward = _forward_flops(plan, side) or 0.77e9 * (side / 224) ** 2
    tokens = photos * s.tokens_per_image
    flops = photos * forward + tokens * s.epochs * 12 * _channels(plan) * s.atoms
    seconds = flops / (GPU_FLOPS if gpu else CPU_FLOPS)
    store_bytes = 2 * 4 * s.atoms * _channels(plan)
    return seconds, store_bytes, (f"{plan.name:24s} dictionary: ~{duration(seconds)} (estimate from FLOPs: {photos:.0f} photo views, "
                                  f"~{tokens:.0f} tokens x {s.epochs} epochs, {s.atoms} atoms; {_bytes(store_bytes)} in the store)")


def sizes(plan: ModelPlan, classes: int) -> tuple[float, float]:
    """Bytes the store and the site grow by for `classes` classes of this model at its settings."""
    per_class = plan.craft.rank if plan.craft.visualize is None else min(plan.craft.visualize, plan.craft.rank)
    parts = (1 if "maco" in plan.parts else 0) + (per_class if "craft" in plan.parts else 0)
    scale = (plan.maco.image_size / 512) ** 2 * parts / 11  # 11 visualizations at the defaults
    return STORE_BYTES_DEFAULT * scale * classes, SITE_BYTES_DEFAULT * parts / 11 * classes


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def dry_run(resolved: Resolved, force: bool = False, device: str = "auto") -> str:
    """The units a render would do, per model: the time on one device (measured in the store, else
    from the model's FLOPs, said as such), scaled by the photos found per class, and the bytes the
    store and the site will grow by. As text."""
    import torch

    st, request = resolved.store, resolved.request
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    where = "one GPU" if gpu else "the CPU"
    lines = [f"{'model':24s} {'craft':>6s} {'maco':>6s} {'concept':>8s} {'photos':>7s} {'store':>9s} {'site':>9s}  "
             f"time on {where}"]
    total_s, total_store, total_site, estimated = 0.0, 0.0, 0.0, []
    for plan in resolved.plans:
        if force:
            counts = Counter({"maco": len(plan.classes) if "maco" in request.parts else 0,
                              "craft": len(plan.classes) if "craft" in request.parts else 0})
        else:
            counts = Counter(u.kind for u in pending_units(st, plan))
        per_class = plan.craft.rank if plan.craft.visualize is None else min(plan.craft.visualize, plan.craft.rank)
        concepts = counts["concept"] + counts["craft"] * per_class  # the concepts CRAFT will create, at most
        photos = photos_per_class(request.images, plan.classes, plan.craft.max_images) if counts["craft"] else 0.0
        maco_s, craft_photo_s, n = _measured(st, plan, gpu)
        rough_maco, rough_craft = _rough(plan, photos or 1.0, gpu)
        need_maco, need_craft = counts["maco"] + concepts > 0, counts["craft"] > 0
        rough = (need_maco and maco_s is None) or (need_craft and craft_photo_s is None)
        maco_s = rough_maco if maco_s is None else maco_s
        craft_s = rough_craft if craft_photo_s is None else craft_photo_s * max(photos, 1.0)
        if not rough:
            basis = f"measured: {n} units in the store" if n else "nothing to do"
        else:
            basis = f"estimate from the model's FLOPs ({n} units with these settings on {where} in the store)"
            estimated.append(plan.name)
        seconds = counts["craft"] * craft_s + (counts["maco"] + concepts) * maco_s
        store_b, site_b = sizes(plan, max(counts["maco"], counts["craft"]))
        total_s, total_store, total_site = total_s + seconds, total_store + store_b, total_site + site_b
        lines.append(f"{plan.name:24s} {counts['craft']:6d} {counts['maco']:6d} {concepts:8d} {photos:7.0f} "
                     f"{_bytes(store_b):>9s} {_bytes(site_b):>9s}  ~{duration(seconds)} ({basis})")
    for plan in resolved.plans:
        retrain = plan.has_dictionary and (force or dictionary_state(st, plan) in (*TODO, "failed"))
        if retrain:
            seconds, store_b, line = dictionary_estimate(plan, request.images, gpu)
            total_s, total_store = total_s + seconds, total_store + store_b
            lines.append(line)
        if plan.has_dictionary:  # the shown atoms' visualizations: counted once the dictionary is done, else at most
            per_class = TOP_SHARED if plan.dictionary.visualize is None else min(plan.dictionary.visualize, TOP_SHARED)
            atoms = (min(plan.dictionary.atoms, per_class * len(plan.dictionary_classes)) if retrain else
                     sum(state in (*TODO, "failed") for _, state in atom_units(st, plan)))
            measured = _measured(st, plan, gpu)[0]
            seconds = atoms * (measured if measured is not None else _rough(plan, 1.0, gpu)[0])
            total_s += seconds
            if atoms:
                lines.append(f"{plan.name:24s} atom visualizations: {'at most ' if retrain else ''}{atoms}, ~{duration(seconds)} "
                             f"({'measured per class visualization' if measured is not None else 'estimate from FLOPs'})")
    lines.append(f"total: ~{duration(total_s)} on {where} (several GPUs or shards divide it); the store grows by about "
                 f"{_bytes(total_store)} and the site by {_bytes(total_site)}; nothing was rendered")
    if estimated:
        speed = ("an assumed 30 TFLOP/s achieved on the GPU" if gpu else
                 "efficientnet-lite0's measured speed on two CPU cores, per FLOP")
        lines.append(f"{', '.join(estimated)}: no timing with these settings on {where} in the store yet, so the time is an "
                     f"estimate from forward FLOPs at {speed}; render 8 classes first (--classes 0-7) to measure it")
    return "\n".join(lines)


def force_parts(resolved: Resolved) -> int:
    """Mark the selected parts of existing records stale so that the next render redoes them; returns how many."""
    st, parts = resolved.store, resolved.request.parts
    marked = 0
    for plan in resolved.plans:
        model = plan.name
        for c in plan.classes:  # the shard's classes
            if st.meta(model, c) is None:
                continue
            count = [0]

            def change(meta: Meta) -> None:
                for part in ("maco", "craft"):
                    rec = getattr(meta, part)
                    if part in parts and rec is not None and not rec.settings_hash.startswith("forced:"):
                        rec.settings_hash = f"forced:{rec.settings_hash}"
                        count[0] += 1

            st.update_meta(model, c, change)
            marked += count[0]
        record = dictionary_record(st, model) if plan.has_dictionary else None
        if record is not None and not record.settings_hash.startswith("forced:"):
            record.settings_hash = f"forced:{record.settings_hash}"
            write_dictionary_record(st, model, record)
            marked += 1
        if plan.has_dictionary and force_atom_macos(st, model):  # the atoms' visualizations: redone after it
            marked += 1
    return marked
