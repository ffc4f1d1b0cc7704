"""`lens status`: the state of every selected unit per model and part, and why units are not done.

States (`plan.STATES`): done; pending (never rendered); stale (done with other settings: a render
with the current settings redoes it); missing (done, but a file meta.json lists is gone: a render
repairs it); failed (with the reason); no-images (CRAFT found no usable photo for the class).
With `--what ...dictionary`, each model's dictionary unit (`<model>/dictionary`, part
`dictionary`) is judged the same way, from `<model>/dictionary.json`. It names the store and config it
reads and the unusable meta.json files it met, and
`--json` gives the same as one JSON object for scripts. Exit code: 0 when everything selected is
done (no-images counts as finished), else 1.

A report changes nothing: status never moves, rewrites or adds a file in the store (an unusable
meta.json stays where it is, and is reported; `lens render` alone moves it aside).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plan import STATES, ModelPlan, Resolved, atom_units, class_units, describe_settings, judge_dictionary, settings_diff
from .store import Store, atom_macos, dictionary_record

KINDS = ("maco", "craft", "concept", "dictionary", "atom")


@dataclass
class StatusReport:
    store: Path
    config: Path
    counts: dict[str, dict[str, Counter]] = field(default_factory=dict)  # model -> kind -> state -> n
    failures: list[tuple[str, str]] = field(default_factory=list)  # (unit id, error)
    missing: list[tuple[str, list[str]]] = field(default_factory=list)  # (unit id, missing files)
    problems: list[str] = field(default_factory=list)
    other_settings: Counter = field(default_factory=Counter)  # "steps=16, image_size=128" -> stale units done so
    presets: list[str] = field(default_factory=list)  # presets that hold the most common other settings
    _diffs: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # description -> (part, values)

    def total(self, state: str) -> int:
        return sum(c[state] for kinds in self.counts.values() for c in kinds.values())

    @property
    def all_done(self) -> bool:
        return not any(self.total(s) for s in STATES if s not in ("done", "no-images"))

    def as_json(self) -> dict[str, Any]:
        return {
            "store": str(self.store), "config": str(self.config),
            "models": {m: {k: {s: c[s] for s in STATES} for k, c in kinds.items()} for m, kinds in self.counts.items()},
            "totals": {s: self.total(s) for s in STATES},
            "failures": [{"unit": u, "error": e} for u, e in self.failures],
            "missing_files": [{"unit": u, "files": f} for u, f in self.missing],
            "problems": self.problems, "all_done": self.all_done,
            "other_settings": [{"settings": k, "units": n} for k, n in self.other_settings.most_common()],
        }

    def _other_settings(self) -> list[str]:
        """Which settings the stale units were done with, and how to use them instead of re-rendering."""
        lines = [f"  {n} units done with {k}" if k else
                 f"  {n} units done with these settings but another spectrum, images folder, model or code version"
                 for k, n in self.other_settings.most_common(5)]
        if any(self.other_settings):
            presets = f" (or --preset {self.presets[0]}, which has them)" if self.presets else ""
            only = "the store holds this work only under other settings: " if not self.total("done") else ""
            lines.append(f"  {only}`--settings last` reuses the settings of the latest renders{presets}, "
                         "in status, render, quality and build")
        return lines

    def text(self) -> str:
        lines = [f"store {self.store}, config {self.config}", "",
                 f"{'model':24s} {'part':8s} {'done':>6s} {'pending':>8s} {'stale':>6s} {'missing':>8s} {'failed':>7s} {'no-images':>10s}"]
        for model, kinds in self.counts.items():
            for kind in KINDS:
                c = kinds.get(kind)
                if c and sum(c.values()):
                    lines.append(f"{model:24s} {kind:8s} {c['done']:6d} {c['pending']:8d} {c['stale']:6d} {c['missing']:8d} "
                                 f"{c['failed']:7d} {c['no-images']:10d}")
        lines.append(f"{'total':24s} {'':8s} " + " ".join(f"{self.total(s):{w}d}" for s, w in
                     zip(STATES, (6, 8, 6, 8, 7, 10))))
        lines.append("(concept visualizations are counted once CRAFT of their class is done, atom visualizations once "
                     "the dictionary is)" if any(k.get("atom") for k in self.counts.values()) or any(
                         k.get("dictionary") for k in self.counts.values()) else
                     "(concept visualizations are counted once CRAFT of their class is done)")
        if self.total("stale"):
            lines.append(f"stale: done with other settings ({self.total('stale')} units); "
                         "`lens render` with these settings renders them again")
            lines += self._other_settings()
        if self.total("missing"):
            lines.append(f"missing: done, but {sum(len(f) for _, f in self.missing)} files meta.json lists are gone "
                         f"({self.total('missing')} units); `lens render` repairs them")
            lines += [f"  {u}: {', '.join(f[:3])}{' ...' if len(f) > 3 else ''}" for u, f in self.missing[:20]]
        if self.total("no-images"):
            lines.append(f"no-images: {self.total('no-images')} classes had no usable photo for CRAFT; "
                         "set `images:` in models.yaml (or --images) to an ImageNet-layout folder")
        if self.problems:
            lines.append(f"\n{len(self.problems)} unusable records:")
            lines += [f"  {p}" for p in self.problems]
        if self.failures:
            lines.append(f"\n{len(self.failures)} failed units:")
            lines += [f"  {unit}: {error}" for unit, error in self.failures]
        return "\n".join(lines)


def unit_states(store: Store, plan: ModelPlan, report: StatusReport) -> None:
    """Adds one model's units to the report."""
    counts = report.counts.setdefault(plan.name, {k: Counter() for k in KINDS})
    for c in plan.classes:
        meta = store.meta(plan.name, c, repair=False)  # a report changes nothing: `lens render` alone moves files aside
        for unit, state in class_units(store, plan, meta, c):
            counts[unit.kind][state] += 1
            if state == "stale":
                part = "craft" if unit.kind == "craft" else "maco"
                diff = settings_diff(meta.record(unit).settings, getattr(plan, part))  # type: ignore[union-attr]
                report.other_settings[describe_settings(diff)] += 1
                report._diffs.setdefault(describe_settings(diff), (part, diff))
            elif state == "failed":
                report.failures.append((unit.id, str(meta.record(unit).error)))  # type: ignore[union-attr]
            elif state == "missing":
                report.missing.append((unit.id, store.missing_files(meta, unit)))  # type: ignore[arg-type]


def dictionary_states(store: Store, plan: ModelPlan, report: StatusReport) -> None:
    """Adds the model's dictionary (one unit, `<model>/dictionary`) to the report, when selected."""
    if not plan.has_dictionary:
        return
    record = dictionary_record(store, plan.name)  # read once: the state, the failure and the stale settings
    state = judge_dictionary(store, plan, record)
    report.counts.setdefault(plan.name, {k: Counter() for k in KINDS})["dictionary"][state] += 1
    if state == "failed":
        report.failures.append((f"{plan.name}/dictionary", str(record.error)))  # type: ignore[union-attr]
    elif state == "stale":
        diff = settings_diff(record.settings, plan.dictionary)  # type: ignore[union-attr]
        report.other_settings[f"dictionary {describe_settings(diff)}".strip()] += 1
    atoms = atom_units(store, plan)  # the atoms' visualizations, once the dictionary is done
    macos = atom_macos(store, plan.name) if any(state == "failed" for _, state in atoms) else None  # for the reasons
    for unit, state in atoms:
        report.counts[plan.name]["atom"][state] += 1
        if state == "failed":
            report.failures.append((unit.id, str(macos.atoms[str(unit.concept)].error)))  # type: ignore[union-attr]


def collect_status(resolved: Resolved) -> StatusReport:
    """Every selected unit's state, judged against the request's settings and the files on disk."""
    store = resolved.store
    report = StatusReport(store=resolved.request.out, config=resolved.zoo.path)
    for plan in resolved.plans:
        unit_states(store, plan, report)
        dictionary_states(store, plan, report)
    report.problems = list(store.problems)
    report.presets = _presets_with(resolved, report)
    return report


def _presets_with(resolved: Resolved, report: StatusReport) -> list[str]:
    """Presets of the config that hold the most common other settings of the stale units."""
    if not report.other_settings or not resolved.plans:
        return []
    part, wanted = report._diffs.get(report.other_settings.most_common(1)[0][0], ("", {}))  # the dictionary's: none
    if not wanted:
        return []
    zoo, entry = resolved.zoo, resolved.plans[0].entry
    merge = zoo.maco_settings if part == "maco" else zoo.craft_settings
    return [name for name, preset in zoo.data.presets.items()
            if all(merge(entry, getattr(preset, part)).model_dump(mode="json").get(k) == v for k, v in wanted.items())]


def render_status(resolved: Resolved, as_json: bool = False) -> tuple[str, int]:
    """The report as text (or JSON) and the exit code: 0 when everything selected is done, else 1."""
    report = collect_status(resolved)
    text = json.dumps(report.as_json(), indent=1) if as_json else report.text()
    return text, 0 if report.all_done else 1
