"""The artifact store: atomic files, locked meta updates, claims, sweeping of leftovers."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from generator import store as store_mod
from generator.errors import StoreError
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
    meta = Store(tmp_path).meta("m", 1).to_json_obj()
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


def _write_valid(s: Store, model: str = "m", c: int = 1) -> None:
    s.update_meta(model, c, lambda meta: None)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe garbage", b'{"schema": 2, "model": "m"}', b"[1, 2]",
                                     b'{"schema": 2, "model": "other", "class_index": 1, "wnid": "n", "class_name": "x"}'])
def test_unusable_meta_is_moved_aside_and_reported(tmp_path, content):
    s = Store(tmp_path)
    path = s.meta_path("m", 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert s.meta("m", 1) is None
    aside = [p for p in path.parent.iterdir() if p.name.startswith("meta.json.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content and not path.exists()
    assert len(s.problems) == 1 and "moved aside" in s.problems[0] and str(path) in s.problems[0]
    events = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "meta_quarantined"
    s.update_meta("m", 1, lambda meta: None)  # the class starts afresh
    assert s.meta("m", 1) is not None


def test_unusable_meta_in_a_read_only_store_is_left_in_place(tmp_path, monkeypatch):
    s = Store(tmp_path)
    path = s.meta_path("m", 1)
    path.parent.mkdir(parents=True)
    path.write_text("{")

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(store_mod.os, "open", read_only)  # the lock file cannot be created
    assert s.meta("m", 1) is None
    assert path.exists() and "could not move it aside" in s.problems[0]


def test_full_disk_is_one_store_error_and_keeps_what_was_there(tmp_path, monkeypatch):
    s = Store(tmp_path)
    _write_valid(s)
    before = s.meta_path("m", 1).read_bytes()
    real_open = open

    def full(path, mode="r", *a, **k):
        if "w" in mode and ".tmp." in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(StoreError, match="No space left on device") as e:
        s.update_meta("m", 1, lambda meta: setattr(meta, "x", 1))
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert s.meta_path("m", 1).read_bytes() == before
    assert not s.leftovers()


def test_model_card_changes_under_the_lock(tmp_path):
    s = Store(tmp_path)
    s.update_model_card("m", lambda card: setattr(card, "arch", "resnet"))
    s.update_model_card("m", lambda card: setattr(card, "accuracy", {"top1": 0.5}))
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["arch"] == "resnet" and card["accuracy"]["top1"] == 0.5 and card["schema"] == SCHEMA  # typed: Accuracy


def test_missing_files_of_a_done_part(tmp_path):
    from generator.records import MacoRecord

    s = Store(tmp_path)
    u = Unit("m", 1, "maco")
    s.write_file("m", 1, "maco.a.png", b"x")
    s.update_meta("m", 1, lambda meta: meta.set_record(u, MacoRecord(status="done", settings_hash="a",
                                                                    files={"image": "maco.a.png", "alpha": "maco_alpha.a.png"})))
    assert s.missing_files(s.meta("m", 1), u) == ["maco_alpha.a.png"]


def test_store_models_skip_its_own_files(tmp_path):
    for name in ("m", "spectra", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "runs.jsonl").write_text("")
    assert Store(tmp_path).models() == ["m"]


def test_the_synthetic_dictionary_reads_back_through_the_store_readers(tmp_path):
    from benchmarks.synthetic_store import DICT_ATOMS, dictionary_hash, write_synthetic_store
    from generator import sidefiles
    from generator.records import TOP_SHARED

    models = ["m-a", "m-b"]
    root = write_synthetic_store(tmp_path, [1, 2, 5], models, concepts=3, crops=2, attributions=1, dictionary=True)
    store = Store(root)
    assert store.models() == models  # dictionary-matches/ is the store's own
    for model in models:
        h = dictionary_hash(model)
        record = store_mod.dictionary_record(store, model)
        assert record.done and record.files["atlas"] == f"dictionary/atlas.{h}.json" and record.augmented is not None
        atlas = store_mod.atlas_record(store, model)
        assert atlas is not None and len(atlas.atoms) == DICT_ATOMS and atlas.settings_hash == h
        assert set(atlas.classes) == {"1", "2", "5"}
        for c in atlas.classes.values():
            assert len(c.top) == TOP_SHARED and [t.share for t in c.top] == sorted((t.share for t in c.top), reverse=True)
        shown = atlas.shown
        assert shown and all(atlas.atom(k).alive and atlas.atom(k).regions for k in shown)
        assert all(a.xy is None for a in atlas.atoms if not a.alive)
        assert sidefiles.region_strips(root / model, shown[0], h) is not None
        macos = store_mod.atom_macos(store, model)
        assert set(macos.atoms) == {str(k) for k in shown}
        assert {m.status for m in macos.atoms.values()} == {"done", "failed"}
        assert all((root / model / m.image).is_file() for m in macos.atoms.values() if m.status == "done")
        codes = sidefiles.read_codes(root / model / record.files["codes"])
        assert codes.indices.shape[0] == len(codes.sources)
    match = store_mod.dictionary_matches(store, "m-b", "m-a")
    assert match is not None and match.models == models and match == store_mod.dictionary_matches(store, "m-a", "m-b")
    assert all(m.score >= match.threshold for m in match.a_to_b.values())


def test_dictionary_readers_return_none_for_absent_stale_or_broken_files(tmp_path):
    from benchmarks.synthetic_store import write_synthetic_store
    from generator.records import MatchRecord

    root = write_synthetic_store(tmp_path, [3], ["m-a", "m-b"], concepts=2, crops=1, attributions=1, dictionary=True)
    store = Store(root)
    assert store_mod.atlas_record(store, "m-c") is None and store_mod.atom_macos(store, "m-c") is None
    assert store_mod.dictionary_matches(store, "m-a", "m-c") is None
    record = store_mod.dictionary_record(store, "m-a")
    (root / "m-a" / record.files["atlas"]).write_text('{"settings_hash": 3}')
    assert store_mod.atlas_record(store, "m-a") is None
    record.settings_hash = "other"  # an atlas of other settings than the dictionary's is not its atlas
    store_mod.write_dictionary_record(store, "m-b", record.model_copy(update={"files": store_mod.dictionary_record(store, "m-b").files}))
    assert store_mod.atlas_record(store, "m-b") is None
    (root / "m-a" / store_mod.ATOM_MACOS).write_text("[")
    assert store_mod.atom_macos(store, "m-a") is None
    with pytest.raises(ValueError):
        store_mod.write_dictionary_matches(store, MatchRecord(models=["z", "a"], n_images=1, grid=[1, 1], threshold=0.1, mutual_rate=0))


def test_atom_macos_updates_keep_other_atoms_and_drop_other_settings(tmp_path):
    from generator.records import AtomMaco

    store = Store(tmp_path)
    store_mod.update_atom_macos(store, "m", "s1", lambda r: r.atoms.update({"1": AtomMaco(status="failed", error="x")}))
    store_mod.update_atom_macos(store, "m", "s1", lambda r: r.atoms.update({"2": AtomMaco(status="done", image="i", alpha="a")}))
    assert set(store_mod.atom_macos(store, "m").atoms) == {"1", "2"}
    store_mod.update_atom_macos(store, "m", "s2", lambda r: r.atoms.update({"3": AtomMaco(status="failed", error="y")}))
    record = store_mod.atom_macos(store, "m")
    assert record.settings_hash == "s2" and set(record.atoms) == {"3"}
