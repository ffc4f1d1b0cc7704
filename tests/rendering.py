"""Helpers of the render tests (test_workers, test_executors): a render of the tiny zoo and checks of its store."""

from __future__ import annotations

import json
from pathlib import Path

from generator.cli import main
from generator.store import Store

CLASSES = "1-3"


def render(config: Path, out: Path, *extra: str) -> int:
    return main(["render", "--config", str(config), "--classes", CLASSES, "--store", str(out), "--no-progress", *extra])


def metas(out: Path) -> dict[int, dict]:
    return {m["class_index"]: m for m in (r.to_json_obj() for r in Store(out).iter_meta_records("tiny"))}


def assert_complete(out: Path, classes=(1, 2, 3)) -> None:
    """Every class has its MACO, its CRAFT and every concept visualization, all files present."""
    found = metas(out)
    assert sorted(found) == sorted(classes)
    for c, meta in found.items():
        base = out / "tiny" / f"{c:04d}"
        assert meta["maco"]["status"] == "done", meta["maco"]
        assert meta["craft"]["status"] == "done", meta["craft"]
        assert meta["concepts"], f"class {c} has no concepts"
        files = list(meta["maco"]["files"].values()) + [meta["craft"]["files"]["directions"]]
        for concept in meta["concepts"]:
            assert concept["maco"]["status"] == "done", concept
            files += list(concept["maco"]["files"].values()) + [x["file"] for x in concept["crops"]]
        for f in files:
            assert (base / f).is_file() and (base / f).stat().st_size > 0, f
    leftovers = [p for p in out.rglob("*") if ".tmp." in p.name or p.name.startswith(".claim.")]
    assert not leftovers, leftovers


def done_events(out: Path) -> int:
    events = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return sum(e.get("done", 0) for e in events if e["event"] == "batch_end")


def unit_count(out: Path) -> int:
    m = metas(out)
    return sum(2 + len(meta["concepts"]) for meta in m.values())
