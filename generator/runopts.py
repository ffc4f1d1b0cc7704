"""Render options that act before any unit runs: `--dry-run` and `--force`.

- `dry_run` lists, per model, the units a render would do (CRAFT, class and concept
  visualizations; concept units of classes whose CRAFT is still to do are counted from the
  settings) and an estimate of the time, from the units this model already rendered with the
  same settings when the store has some, else from a rough CPU figure, said as such. It writes
  nothing (a spectrum not cached yet is computed in a temporary folder).
- `force_parts` marks the selected parts of existing records as stale (their settings hash is
  prefixed with `forced:`), so that the render that follows re-renders them; until then the
  site keeps showing the old pictures, and an interrupted forced run is resumed by a plain one.
"""

from __future__ import annotations

import statistics
from collections import Counter

from .plan import ModelPlan, Resolved, pending_units
from .records import Meta
from .store import Store

# efficientnet-lite0 on two CPU cores: ~20 crops/s at 224 px, 8 crops per pass (benchmarks/bench_maco.py).
CPU_CROPS_PER_S_224 = 20.0
CPU_CRAFT_S = 30.0  # one class of CRAFT on the demo photos, lite0, two cores (order of magnitude)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _measured(store: Store, plan: ModelPlan) -> tuple[float | None, float | None, int]:
    """Median seconds per visualization and per CRAFT class of this model with these settings, and the sample size."""
    maco_settings, craft_settings = plan.maco.model_dump(mode="json"), plan.craft.model_dump(mode="json")
    maco_s, craft_s = [], []
    for meta in store.iter_meta_records(plan.name, repair=False):  # a dry run changes nothing in the store
        records = [meta.maco] + [c.maco for c in meta.concepts]
        maco_s += [r.wall_time_s for r in records
                   if r is not None and r.done and r.settings == maco_settings and r.wall_time_s is not None]
        r = meta.craft
        if r is not None and r.done and r.settings == craft_settings and r.wall_time_s is not None:
            craft_s.append(r.wall_time_s)
    return (statistics.median(maco_s) if maco_s else None, statistics.median(craft_s) if craft_s else None,
            len(maco_s) + len(craft_s))


def _rough(plan: ModelPlan) -> tuple[float, float]:
    side = plan.maco.input_size or plan.entry.input_size or 224
    return plan.maco.steps * plan.maco.crops * (side / 224) ** 2 / CPU_CROPS_PER_S_224, CPU_CRAFT_S


def dry_run(resolved: Resolved, force: bool = False, device: str = "auto") -> str:
    """The units a render would do and an estimate of its time on one device, as text."""
    st, parts = resolved.store, resolved.request.parts
    lines = [f"{'model':24s} {'craft':>6s} {'maco':>6s} {'concept':>8s}  estimate"]
    total_s, unknown = 0.0, []
    for plan in resolved.plans:
        if force:
            counts = Counter({"maco": len(plan.classes) if "maco" in parts else 0,
                              "craft": len(plan.classes) if "craft" in parts else 0})
        else:
            counts = Counter(u.kind for u in pending_units(st, plan))
        per_class = plan.craft.rank if plan.craft.visualize is None else min(plan.craft.visualize, plan.craft.rank)
        concepts = counts["concept"] + counts["craft"] * per_class  # the concepts CRAFT will create, at most
        maco_s, craft_s, n = _measured(st, plan)
        rough_maco, rough_craft = _rough(plan)
        need_maco, need_craft = counts["maco"] + concepts > 0, counts["craft"] > 0
        rough = (need_maco and maco_s is None) or (need_craft and craft_s is None)
        maco_s = rough_maco if maco_s is None else maco_s
        craft_s = rough_craft if craft_s is None else craft_s
        if not rough:
            basis = f"from {n} units in the store" if n else "nothing to do"
        else:
            basis = f"rough CPU figure where the store has no unit with these settings ({n} have)" if n else "rough CPU figure"
            if device != "cpu":
                unknown.append(plan.name)
        seconds = counts["craft"] * craft_s + (counts["maco"] + concepts) * maco_s
        total_s += seconds
        lines.append(f"{plan.name:24s} {counts['craft']:6d} {counts['maco']:6d} {concepts:8d}  ~{_duration(seconds)} ({basis})")
    lines.append(f"total: ~{_duration(total_s)} on one device (several GPUs or shards divide it); nothing was rendered")
    if unknown:
        lines.append(f"no timing of {', '.join(unknown)} with these settings in the store yet: the rough figure is for two CPU "
                     "cores; render a few classes first (e.g. --classes 0-7) for a measured estimate")
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
    return marked
