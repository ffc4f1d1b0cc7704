"""The artifact store: atomic files, locked meta updates, claims, sweeping of leftovers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from generator import store as store_mod
from generator.records import SCHEMA, Unit
from generator.store import Store, atomic_write_bytes, encode_png


def test_atomic_write_leaves_no_temporary(tmp_path):
    p = tmp_path / "a" / "f.bin"
    atomic_write_bytes(p, b"x" * 10)
    assert p.read_bytes() == b"x" * 10
    assert [f.name for f in p.parent.iterdir()] == ["f.bin"]


def test_failed_write_keeps_old_content(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.bin"]


def _bump(root: str, key: str, n: int) -> None:
    s = Store(root)

    def change(meta):
        setattr(meta, key, getattr(meta, key, 0) + 1)  # extra keys are kept, like fields of newer writers

    for _ in range(n):
        s.update_meta("m", 1, change)


def test_concurrent_meta_updates_lose_nothing(tmp_path):
    """Processes updating different parts of one meta.json never drop each other's changes."""
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_bump, args=(str(tmp_path), f"k{i}", 25)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    meta = Store(tmp_path).read_meta("m", 1)
    assert meta == {"schema": SCHEMA, "model": "m", "class_index": 1, "wnid": "n01443537", "class_name": meta["class_name"],
                    "concepts": [], "k0": 25, "k1": 25, "k2": 25, "k3": 25}


def test_claims_are_exclusive_and_released(tmp_path):
    s = Store(tmp_path)
    u = Unit("m", 3, "concept", 2)
    c = s.claim(u)
    assert c is not None and s.claim(u) is None
    s.release(c)
    assert s.claim(u) is not None


def test_claim_of_a_dead_worker_is_reclaimed(tmp_path):
    s = Store(tmp_path)
    u = Unit("m", 3, "maco")
    path = s._claim_path(u)
    path.parent.mkdir(parents=True)
    dead = mp.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()
    path.write_text(json.dumps({"host": store_mod.HOST, "pid": dead.pid, "started": time.time()}))
    assert s.claim(u) is not None  # same host, pid gone


def test_claim_of_other_host_is_reclaimed_only_when_stale(tmp_path):
    s = Store(tmp_path)
    u = Unit("m", 3, "maco")
    path = s._claim_path(u)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": time.time()}))
    assert s.claim(u) is None  # alive as far as we can tell
    old = time.time() - store_mod.CLAIM_TTL_S - 5
    os.utime(path, (old, old))
    assert s.claim(u) is not None


def test_sweep_removes_dead_writers_temporaries(tmp_path):
    s = Store(tmp_path)
    d = tmp_path / "m" / "0001"
    d.mkdir(parents=True)
    dead = d / f".maco.png.tmp.{store_mod.HOST}.999999999.abcd"
    live = d / f".meta.json.tmp.{store_mod.HOST}.{os.getpid()}.abcd"
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    assert s.sweep_temporaries() == 1
    assert not dead.exists() and live.exists()


def test_run_log_lines_are_json(tmp_path):
    s = Store(tmp_path)
    s.log({"event": "a"})
    s.log({"event": "b", "n": 2})
    lines = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [line["event"] for line in lines] == ["a", "b"] and all("time" in line for line in lines)


def test_png_roundtrip():
    from io import BytesIO

    from PIL import Image

    arr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(np.asarray(Image.open(BytesIO(encode_png(arr)))), arr)
