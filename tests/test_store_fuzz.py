"""A fuzzed store (generator/store.py and its readers): random bytes, wrong JSON types, extreme numbers
and paths that leave the store, in meta.json, model.json, claims and side files.

`render`, `status`, `site`, `figure` and `quality` all go on: exit 0, 1 or 2, no traceback, one line
per problem; the reports (`status`, `site`, `figure`) change nothing in the store, and `render`
alone moves unusable meta.json files aside.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic_store import write_synthetic_store
from generator.api import open_store
from generator.cli import main
from generator.config import MacoSettings
from generator.records import Unit
from generator.store import HOST, MAX_FLOAT, Store, UnsafePath, checked_rel, read_record

from .conftest import write_tiny_zoo

CLASSES = list(range(1, 13))
RNG_SEED = 18


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256 or link target} of everything under root (links are not followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _edit(path: Path, change) -> None:  # noqa: ANN001
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def fuzz_store(root: Path, outside: Path) -> dict[int, str]:
    """Damages classes of the store, one way each; returns {class: how} for the classes whose meta.json is unusable."""
    rng = np.random.default_rng(RNG_SEED)
    d = {c: root / "tiny" / f"{c:04d}" for c in CLASSES}
    unusable = {}
    d[1].joinpath("meta.json").write_bytes(rng.bytes(300))
    unusable[1] = "random bytes"
    _edit(d[2] / "meta.json", lambda m: m.update(maco="done", concepts={"0": 1}))
    unusable[2] = "wrong JSON types"
    _edit(d[3] / "meta.json", lambda m: m["maco"].update(self_prob=1e308))
    unusable[3] = "a huge finite number"
    meta4 = d[4].joinpath("meta.json")
    meta4.write_text(meta4.read_text().replace(f'"steps": {MacoSettings().steps}', '"steps": 1e999'))
    unusable[4] = "an infinite number"
    _edit(d[5] / "meta.json", lambda m: m.update(schema=[2]))
    unusable[5] = "a schema of the wrong type"
    # Paths that leave the store: the record is usable, the file is never read.
    (outside / "secret.png").write_bytes((d[6] / json.loads((d[6] / "meta.json").read_text())["maco"]["files"]["image"]).read_bytes())
    _edit(d[6] / "meta.json", lambda m: m["maco"]["files"].update(image="../../../outside/secret.png"))
    image7 = d[7] / json.loads((d[7] / "meta.json").read_text())["maco"]["files"]["image"]
    image7.unlink()
    image7.symlink_to(outside / "secret.png")
    # Side files and claims of unexpected content.
    (root / "tiny" / "head.npz").write_bytes(rng.bytes(200))
    (root / "tiny" / "model.json").write_text(json.dumps({"name": "tiny", "accuracy": {"top1": 1e308}}))
    craft8 = json.loads((d[8] / "meta.json").read_text())["craft"]
    (d[8] / craft8["files"]["directions"]).write_bytes(rng.bytes(64))
    (d[8] / craft8["files"]["per_image"]).write_bytes(b"")
    maco9 = json.loads((d[9] / "meta.json").read_text())["maco"]
    (d[9] / maco9["files"]["image"]).write_bytes(rng.bytes(500))
    (d[10] / ".claim.maco").write_bytes(rng.bytes(40))
    (d[10] / ".claim.craft").write_text("[1, 2]")
    (d[11] / ".claim.maco").write_text(json.dumps({"host": HOST, "pid": 10**30}))
    (d[11] / ".claim.craft").mkdir()
    (d[12] / ".claim.maco").write_text(json.dumps({"host": HOST, "pid": -1}))
    return unusable


@pytest.fixture()
def fuzzed(tmp_path):
    config = write_tiny_zoo(tmp_path / "zoo")
    store = tmp_path / "zoo" / "artifacts"
    write_synthetic_store(store, CLASSES, ["tiny"], concepts=2, crops=2, attributions=1, failures=False, link=False)
    outside = tmp_path / "zoo" / "outside"  # beside the store: `..` from a class folder reaches it
    outside.mkdir()
    return config, store, fuzz_store(store, outside), outside


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout + stderr, stdout) of a command that must answer without a traceback."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text, text
    assert code in (0, 1, 2), (code, text)
    return code, text, captured.out


def test_reports_go_on_with_one_line_per_problem_and_change_nothing(fuzzed, tmp_path, capsys):
    config, store, unusable, outside = fuzzed
    before = tree_digest(store)
    common = ["--config", str(config), "--store", str(store), "--classes", "1-12"]
    code, _, out = run(capsys, "status", *common, "--json", "--spectrum", "photos")
    report = json.loads(out)
    assert code == 1
    for c in unusable:  # one line per unusable meta.json, naming it
        assert sum(f"{c:04d}/meta.json" in p for p in report["problems"]) == 1, (c, report["problems"])
    assert tree_digest(store) == before, "lens status changed the store"

    code, text, _ = run(capsys, "site", "--config", str(config), "--store", str(store), "--site", str(tmp_path / "site"),
                     "--no-progress")
    assert code == 0
    for c in unusable:
        assert f"{c:04d}" in text, f"the site report does not name class {c}"
    assert "links outside the artifact store" in text or "unsafe path" in text
    for c in (6, 7):  # never read from outside the store: a placeholder instead
        assert 'data-state="unavailable"' in (tmp_path / "site" / "classes" / f"{c:04d}.html").read_text(encoding="utf-8")
    assert tree_digest(store) == before, "lens site changed the store"

    code, text, _ = run(capsys, "figure", *common, "--concepts", "1", "--output", str(tmp_path / "fig"))
    assert code == 0 and (tmp_path / "fig.png").is_file()
    assert tree_digest(store) == before, "lens figure changed the store"


def test_quality_and_render_go_on_and_render_alone_quarantines(fuzzed, capsys):
    config, store, unusable, _ = fuzzed
    common = ["--config", str(config), "--store", str(store), "--no-progress"]
    code, text, _ = run(capsys, "quality", *common, "--classes", "1-12", "--judges", "tiny")
    assert code == 0
    assert "0009/meta.json: class visualization unreadable" in text  # random bytes for an image: one line
    assert not list(store.rglob("meta.json.corrupt-*")), "quality moved files aside"
    scored = {m.class_index: m.maco.quality.key for m in Store(store).iter_meta_records("tiny", repair=False)}
    assert scored[6] is None and scored[7] is None and scored[9] is None  # never read from outside, nor unreadable
    assert scored[10] is not None and scored[12] is not None
    assert f"lens: quality: scored {sum(k is not None for k in scored.values())} class visualizations" in text  # only scored ones

    code, text, _ = run(capsys, "render", *common, "--classes", "1-3", "--what", "maco")
    assert code == 0, text
    aside = sorted(p.parent.name for p in store.rglob("meta.json.corrupt-*"))
    assert aside == ["0001", "0002", "0003"]
    assert all(Store(store).meta("tiny", c).maco.done for c in (1, 2, 3))


def test_claims_of_any_content_never_stop_a_run(fuzzed):
    _, store, _, _ = fuzzed
    s = Store(store)
    for c, part in ((10, "maco"), (10, "craft"), (11, "maco"), (11, "craft"), (12, "maco")):
        unit = Unit.of("tiny", c, part)
        s.claimed_by_live_worker(unit)  # answers, whatever the file holds
        claim = s.claim(unit)
        if (c, part) == (11, "craft"):  # a folder where the claim goes: the unit stays undone, never an error
            assert claim is None
        elif claim is not None:
            s.release(claim)


def test_the_path_check_is_the_stores(tmp_path, fuzzed):
    _, store, _, outside = fuzzed
    for bad in ("/etc/passwd", "../x.png", "a/../../x", "a\\b", "a\0b", "", None, 3):
        with pytest.raises(UnsafePath):
            checked_rel(bad)
    s = Store(store)
    with pytest.raises(UnsafePath, match="0006/meta.json.*unsafe path"):
        s.file_path("tiny", 6, "../../../outside/secret.png")
    meta7 = s.meta("tiny", 7, repair=False)
    with pytest.raises(UnsafePath, match="link that leads outside"):
        s.file_path("tiny", 7, meta7.maco.files["image"])
    assert s.missing_files(meta7, Unit("tiny", 7, "maco")) == [meta7.maco.files["image"]]
    inside = store / "tiny" / "0008" / "maco-copy.png"  # a link that stays inside the store is followed
    inside.symlink_to(next((store / "tiny" / "0008").glob("maco.*.png")))
    assert s.class_paths("tiny", 8).is_file("maco-copy.png")
    for c in (6, 7, 8, 10):  # one listing of the class folder (`scan`, the site's) answers as an lstat per path does
        names = [str(p.relative_to(s.class_dir("tiny", c))) for p in s.class_dir("tiny", c).rglob("*")]
        names += ["absent.png", "concepts/absent.npy", "maco-copy.png/x"]
        plain, scanned = s.class_paths("tiny", c), s.class_paths("tiny", c).scan()
        assert [(plain.path_or_none(n), plain.is_file(n)) for n in names] == \
            [(scanned.path_or_none(n), scanned.is_file(n)) for n in names], c
    assert s.class_paths("tiny", 7).scan().path_or_none(meta7.maco.files["image"]) is None
    # The Python API gets the same check: the picture is "missing", never a path outside.
    api = open_store(store)
    for c in (6, 7):
        pic = api.record("tiny", c).maco
        assert pic.status == "missing" and pic.image_path is None and "outside" in pic.error
    linked_class = store / "tiny" / "0012"  # a whole class folder that is a link out of the store
    moved = outside / "0012"
    linked_class.rename(moved)
    linked_class.symlink_to(moved)
    with pytest.raises(UnsafePath, match="class folder"):
        s.file_path("tiny", 12, "maco.png")


@pytest.mark.parametrize("text, ok", [
    ('{"a": 0.5, "b": [1, -2e14], "c": NaN}', True),
    ('{"a": 1e308}', False), ('{"a": -1e16}', False), ('{"a": 1e999}', False), ('{"a": Infinity}', False),
    ('{"a": 123456789012345678901234567890}', False),
])
def test_record_numbers_are_checked_as_they_are_read(text, ok):
    if ok:
        assert read_record(text.encode())["b"][1] == -2e14
    else:
        with pytest.raises(ValueError, match="range|not a number"):
            read_record(text.encode())
    assert MAX_FLOAT >= 1e12  # room for every legitimate value: seconds, probabilities, coordinates
