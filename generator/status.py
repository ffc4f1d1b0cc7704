"""`lens status`: done, pending and failed units per model and part, and why units failed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .classes import imagenet_class
from .config import Zoo
from .plan import ModelPlan, RenderJob, model_plans, part_done, part_failed, visualized_concepts
from .spectrum import resolve_spectrum
from .store import Store


def unit_states(store: Store, plan: ModelPlan) -> tuple[Counter, list[tuple[str, str]]]:
    """Counts of (part, state) and the failures (unit id, error) of one model."""
    counts: Counter = Counter()
    failures = []
    for c in plan.classes:
        meta = store.read_meta(plan.name, c) or {}
        records: list[tuple[str, dict[str, Any] | None, str]] = []
        if "maco" in plan.parts:
            records.append(("maco", meta.get("maco"), plan.maco_hash()))
        if "craft" in plan.parts:
            craft_hash = plan.craft_hash(imagenet_class(c).wnid, c)
            records.append(("craft", meta.get("craft"), craft_hash))
            if part_done(meta.get("craft"), craft_hash):
                for concept in visualized_concepts(meta, plan.craft):
                    records.append((f"concept/{concept['id']}", concept.get("maco"), plan.concept_hash(craft_hash, concept["id"])))
        for part, rec, h in records:
            kind = part.split("/")[0]
            if part_done(rec, h):
                counts[kind, "done"] += 1
            elif part_failed(rec, h):
                counts[kind, "failed"] += 1
                failures.append((f"{plan.name}/{c:04d}/{part}", str(rec.get("error"))))  # type: ignore[union-attr]
            else:
                counts[kind, "pending"] += 1
    return counts, failures


def render_status(zoo: Zoo, out: Path, models: list[str], classes: list[int], parts: frozenset[str],
                  maco: dict[str, Any], craft: dict[str, Any], images: Path | None, spectrum: str) -> tuple[str, int]:
    """A table of counts and the failure list; returns (text, number of failed units)."""
    store = Store(out)
    spectrum_id = resolve_spectrum(spectrum, out / "spectra", images).id
    job = RenderJob(config=zoo.path, out=out, models=models, classes=classes, parts=parts,
                    maco_overrides=maco, craft_overrides=craft, images=images, spectrum=spectrum)
    lines = [f"{'model':24s} {'part':8s} {'done':>6s} {'pending':>8s} {'failed':>7s}"]
    all_failures = []
    for plan in model_plans(job, zoo, spectrum_id):
        counts, failures = unit_states(store, plan)
        all_failures += failures
        for kind in ("maco", "craft", "concept"):
            if any(counts[kind, s] for s in ("done", "pending", "failed")):
                done, pending, failed = (counts[kind, s] for s in ("done", "pending", "failed"))
                lines.append(f"{plan.name:24s} {kind:8s} {done:6d} {pending:8d} {failed:7d}")
    if "craft" in parts:
        lines.append("(concept visualizations are counted once CRAFT of their class is done)")
    if all_failures:
        lines.append(f"\n{len(all_failures)} failed units:")
        lines += [f"  {unit}: {error}" for unit, error in all_failures]
    return "\n".join(lines), len(all_failures)
