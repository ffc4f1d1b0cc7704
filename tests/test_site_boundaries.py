"""The site's boundaries (generator/site/paths.py, images.py, pagecache.py, shell.py, build.py):
a build writes and deletes only inside the site and its cache (links met there are removed, never
followed), refuses a cache folder it did not make, repairs what was changed in the site or the
cache, holds a lock that dies with its owner, turns a full disk into one line, and caps the
concepts a page shows."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator import site
from generator.cli import main
from generator.config import load_zoo
from generator.records import Meta
from generator.site.paths import CACHE_MARKER
from generator.site.reading import MAX_CONCEPTS, cap_concepts

ROOT = Path(__file__).resolve().parent.parent
MODEL = DEFAULT_MODELS[0]


@pytest.fixture(scope="module")
def zoo():
    return load_zoo(ROOT / "models.yaml")


@pytest.fixture(scope="module")
def built_once(zoo, tmp_path_factory) -> Path:
    """A store of 2 classes with its site and cache, built once; tests work on copies."""
    root = tmp_path_factory.mktemp("boundaries")
    store = write_synthetic_store(root / "store", 2, DEFAULT_MODELS)
    site.build_site(zoo, store, root / "site", progress=False, cache_dir=root / "cache", workers=1)
    return root


@pytest.fixture()
def built(built_once, tmp_path) -> Path:
    shutil.copytree(built_once, tmp_path / "b", symlinks=True)
    return tmp_path / "b"


def rebuild(zoo, root: Path, **kw) -> site.SiteReport:
    return site.build_site(zoo, root / "store", root / "site", progress=False, cache_dir=root / "cache", workers=1, **kw)


def tree_hash(root: Path) -> str:
    """Every path, link target and file content under root."""
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(root)):
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, root).encode())
            if os.path.islink(p):
                h.update(b"->" + os.readlink(p).encode())
            elif os.path.isfile(p):
                h.update(Path(p).read_bytes())
    return h.hexdigest()


def outside_folder(tmp_path: Path) -> Path:
    """A folder of the user's, shaped like what the site holds there, so a build would recognise it."""
    out = tmp_path / "mine"
    for rel in ("precious.txt", f"{MODEL}/precious.webp", "javascripts/precious.js", "0001.html", "sub/deep.txt"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(f"user data {rel}\n")
    return out


# ----------------------------------------------------------------------------- 1. only the site and its cache


@pytest.mark.parametrize("where", ["classes/0001", "classes", "assets", f"classes/0000/{MODEL}", "classes/0000.html"])
def test_links_under_the_site_are_removed_never_followed(zoo, built, tmp_path, where):
    outside = outside_folder(tmp_path)
    before = tree_hash(outside)
    link = built / "site" / where
    shutil.rmtree(link) if link.is_dir() else link.unlink()
    os.symlink(outside, link)
    report = rebuild(zoo, built)
    assert tree_hash(outside) == before  # nothing written into or deleted from the linked folder
    assert report.links_removed == 1 and not link.is_symlink()
    assert (built / "site" / "classes" / "0001.html").is_file() and (built / "site" / "assets").is_dir()
    assert not [p for p in (built / "site").rglob("*") if p.is_symlink()]


@pytest.mark.parametrize("where", ["webp", "shell", "shell/site", "pages", "manifest", "hashes", ".lock"])
def test_links_under_the_cache_are_removed_never_followed(zoo, built, tmp_path, where):
    outside = outside_folder(tmp_path)
    before = tree_hash(outside)
    link = built / "cache" / where
    shutil.rmtree(link) if link.is_dir() else link.unlink()
    os.symlink(outside / "precious.txt" if where == ".lock" else outside, link)
    (built / "store" / MODEL / "0001" / "touched").write_text("x")  # a change: the full build runs
    rebuild(zoo, built)
    assert tree_hash(outside) == before
    assert not link.is_symlink()


def test_a_cache_folder_lens_did_not_make_is_refused(zoo, built, tmp_path):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(site.SiteError, match="not empty and was not made by `lens site`"):
        site.build_site(zoo, built / "store", built / "site", progress=False, cache_dir=mine)
    assert sorted(os.listdir(mine)) == ["thesis.tex"]
    args = ["site", "--store", str(built / "store"), "--site", str(built / "site"), "--cache", str(mine), "--no-progress"]
    assert main(args) == 2
    # a cache an older lens made (no marker, only names lens writes) is still accepted, and marked
    (built / "cache" / CACHE_MARKER).unlink()
    rebuild(zoo, built)
    assert (built / "cache" / CACHE_MARKER).is_file()


# ----------------------------------------------------------------------------- 4. the store's one path check


def link_out(class_dir: Path, rel: str, tmp_path: Path) -> str:
    """Make the store file `rel` a link to a readable copy of itself outside the store; its real path."""
    outside = tmp_path / "outside" / rel.replace("/", "_")
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes((class_dir / rel).read_bytes())  # readable: following it would change the outcome
    (class_dir / rel).unlink()
    (class_dir / rel).symlink_to(outside)
    return os.path.realpath(outside)


def test_images_named_by_meta_json_are_never_read_through_a_link_out_of_the_store(zoo, built, tmp_path, monkeypatch):
    class_dir = built / "store" / MODEL / "0000"
    outside = link_out(class_dir, json.loads((class_dir / "meta.json").read_text())["maco"]["files"]["image"], tmp_path)
    opened: list[str] = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **kw: opened.append(os.path.realpath(f)) or real_open(f, *a, **kw))
    report = rebuild(zoo, built, verify=True)  # verify: every source hashed again, none trusted by its memo
    assert outside not in opened
    assert [p for p in report.problems if p.startswith(f"{MODEL} 0000:") and "links outside the artifact store" in p]
    assert 'data-state="unavailable"' in (built / "site" / "classes" / "0000.html").read_text()
    assert (built / "site" / "classes" / "0001.html").is_file()  # the rest goes on


def test_craft_side_files_are_never_read_through_a_link_out_of_the_store(zoo, built, tmp_path, monkeypatch):
    from generator import sidefiles

    outside = []
    for c, side in ((0, "directions"), (1, "per_image")):
        class_dir = built / "store" / MODEL / f"{c:04d}"
        outside.append(link_out(class_dir, json.loads((class_dir / "meta.json").read_text())["craft"]["files"][side],
                                tmp_path))
    shutil.rmtree(built / "cache" / "relations")  # its entries are keyed by the CRAFT record, which did not change
    opened: list[str] = []
    real_load = sidefiles.np.load
    monkeypatch.setattr(sidefiles.np, "load", lambda f, **kw: opened.append(os.path.realpath(f)) or real_load(f, **kw))
    report = rebuild(zoo, built)
    assert opened and not set(outside) & set(opened)
    assert [p for p in report.problems if p.startswith(f"{MODEL} 0000: concept vectors unreadable")
            and "link that leads outside the store" in p]
    assert [p for p in report.problems if p.startswith(f"{MODEL} 0001: per-image records unreadable")
            and "link that leads outside the store" in p]
    assert "Decision strategies are not available" in (built / "site" / "classes" / "0001.html").read_text()
    assert all((built / "site" / "classes" / f"{c:04d}.html").is_file() for c in (0, 1))  # placeholders, the site goes on


# ----------------------------------------------------------------------------- 5. the site repairs what was changed


def images_of(root: Path) -> list[Path]:
    return sorted((root / "site" / "classes" / "0000" / MODEL).glob("*.webp"))


def test_site_images_are_copies_never_hard_links_to_the_cache(built):
    cached = {os.stat(p).st_ino for p in (built / "cache" / "webp").rglob("*.webp")}
    placed = images_of(built)
    assert placed and not {os.stat(p).st_ino for p in placed} & cached
    assert all(os.stat(p).st_nlink == 1 for p in placed)


def test_an_image_replaced_or_edited_in_the_site_is_repaired(zoo, built):
    first, second = images_of(built)[:2]
    good = first.read_bytes(), second.read_bytes()
    st = first.stat()
    with open(first, "r+b") as f:  # edited in place, keeping its size and modification time
        f.seek(40)
        f.write(b"\xff" * 8)
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    second.write_bytes(b"not the image")  # replaced
    report = rebuild(zoo, built)  # the site changed: the full build runs (size of `second`)
    assert second.read_bytes() == good[1]
    assert report.images_linked == 1  # `first` kept its size and mtime: only --verify reads it
    report = rebuild(zoo, built, verify=True)
    assert first.read_bytes() == good[0] and report.images_linked == 1 and not report.up_to_date
    assert rebuild(zoo, built).up_to_date  # --verify leaves the manifest as a plain build would


def test_hard_links_from_an_older_build_are_replaced_by_copies(zoo, built):
    placed = images_of(built)[0]
    cached = next(p for p in (built / "cache" / "webp").rglob("*.webp") if p.read_bytes() == placed.read_bytes())
    placed.unlink()
    os.link(cached, placed)
    report = rebuild(zoo, built)
    assert report.images_linked == 1 and not os.path.samefile(placed, cached)


def test_a_page_edited_in_place_or_a_lying_page_cache_entry_is_rewritten(zoo, built):
    page = built / "site" / "classes" / "0001.html"
    good = page.read_bytes()
    st = page.stat()
    page.write_bytes(good.replace(b"<body", b"<body data-x").replace(b"</body>", b"</bod>")[: len(good)])
    os.utime(page, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the digest tells
    (built / "store" / MODEL / "0000" / "touched").write_text("x")
    rebuild(zoo, built)
    assert page.read_bytes() == good


def test_a_tampered_cached_chrome_is_rebuilt(zoo, built):
    chrome = built / "cache" / "shell" / "site" / "classes" / "_chrome.html"
    chrome.write_text(chrome.read_text().replace("<!--LENSBODYMARK-->", "<script>alert(1)</script><!--LENSBODYMARK-->"))
    (built / "store" / MODEL / "0000" / "touched").write_text("x")
    report = rebuild(zoo, built)
    assert report.shell_built
    assert "alert(1)" not in (built / "site" / "classes" / "0000.html").read_text()


# ----------------------------------------------------------------------------- 6. locks and disks


def test_a_build_waiting_on_another_names_its_pid_at_once(built, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from generator.site.paths import cache_lock\n"
        f"with cache_lock(Path({str(built / 'cache' / '.lock')!r})):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = subprocess.Popen([sys.executable, "-m", "generator", "site", "--store", str(built / "store"), "--site",
                                   str(built / "site"), "--cache", str(built / "cache"), "--no-progress"],
                                  stderr=subprocess.PIPE, cwd=ROOT, text=True)
        t0, line = time.monotonic(), ""
        while "waiting" not in line and time.monotonic() - t0 < 30:
            line = waiter.stderr.readline()
        assert f"waiting for another build (pid {holder.pid})" in line and time.monotonic() - t0 < 30
        holder.kill()  # kill -9: the lock dies with its owner and the waiting build goes on
        assert waiter.wait(timeout=120) == 0
    finally:
        holder.kill()


def test_pool_workers_hold_no_lock_and_exit_with_their_parent(tmp_path):
    lock = tmp_path / "cache" / ".lock"
    script = (
        "import os, time; from pathlib import Path; from generator import webp; from generator.site.paths import cache_lock\n"
        "if __name__ == '__main__':\n"
        f"    with cache_lock(Path({str(lock)!r})):\n"
        "        pool = webp.encoding_pool(2)\n"
        "        pool.submit(os.getpid).result()\n"
        "        print(' '.join(str(p) for p in pool._processes), flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert workers
        for pid in workers:  # the lock file is open in the parent only
            assert str(lock) not in {os.path.realpath(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert str(lock) in {os.path.realpath(f"/proc/{parent.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{parent.pid}/fd")}
        parent.kill()
        parent.wait()
        t0 = time.monotonic()
        while any(_alive(p) for p in workers) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers)
        with site.paths.cache_lock(lock):  # free at once: no worker kept it
            pass
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not reaped yet) counts as gone
        return f.read().split(") ")[-1][0] != "Z"


@pytest.mark.parametrize("where", ["generator.webp.WebpCache.copy_into", "generator.store._atomic_write_bytes"])
def test_a_full_disk_during_a_build_is_one_line(zoo, built, monkeypatch, capsys, where):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(built / "site" / "x"))

    monkeypatch.setattr(where, full)
    images_of(built)[0].unlink()
    args = ["site", "--store", str(built / "store"), "--site", str(built / "site"), "--cache", str(built / "cache"),
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lens: error: cannot write {built / 'site' / 'x'}: No space left on device")
    assert "the site folder" in err[-1] and "the store must" not in err[-1] and "Traceback" not in "\n".join(err)


# ----------------------------------------------------------------------------- 9. caps


def test_a_page_shows_at_most_max_concepts_and_the_report_says_so(zoo, built):
    meta_path = built / "store" / MODEL / "0000" / "meta.json"
    meta = json.loads(meta_path.read_text())
    n = MAX_CONCEPTS + 10
    meta["concepts"] = [{**meta["concepts"][k % len(meta["concepts"])], "id": k, "rank": k + 1} for k in range(n)]
    meta_path.write_text(json.dumps(meta))
    report = rebuild(zoo, built)
    assert [w for w in report.warnings if f"{MODEL} 0000: meta.json holds {n} concepts" in w and str(MAX_CONCEPTS) in w]
    html = (built / "site" / "classes" / "0000.html").read_text()
    assert f"Concept {MAX_CONCEPTS}<" in html and f"Concept {MAX_CONCEPTS + 1}<" not in html
    assert f"{MAX_CONCEPTS} concepts from" in html
    metas = {(MODEL, 0): Meta.model_validate(meta)}
    cap_concepts(metas, site.SiteReport(built))
    assert [c.rank for c in metas[(MODEL, 0)].concepts] == list(range(1, MAX_CONCEPTS + 1))
