"""Files of the site and of its build cache: safe paths inside them, writes that skip unchanged
bytes, pruning what an earlier build left, and the cache's lock.

Guarantees:
- nothing is written or deleted outside the site folder and the cache: a build first removes
  every symbolic link it finds under both (`remove_links`; the links, never what they point at),
  and every write and prune below also refuses to follow a link it meets;
- a folder that `lens site` did not make (a site without MARKER_FILE, a cache without
  CACHE_MARKER and with entries lens never writes) is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from ..config import SLUG_PATTERN
from ..errors import SiteError
from ..resources import templates_dir
from ..store import UnsafePath, atomic_write_bytes, checked_rel

TEMPLATES = templates_dir()  # generator/resources.py: the packaged copy, else the checkout's templates/
INDEX_FILE = "classes.json"
INDEX_SCRIPT = "classes.js"  # the same index as a script: pages load it from file:// too, where fetch() is blocked
MARKER_FILE = ".lens-site"  # says "this folder is a site we built", so pruning it is safe
CACHE_MARKER = ".lens-cache"  # the same for a build cache
# What a cache held before it had a marker: such a folder is a cache an older `lens site` made.
CACHE_ENTRIES = frozenset({CACHE_MARKER, ".lock", "webp", "hashes", "manifest", "pages", "shell", "relations"})
_SLUG = re.compile(SLUG_PATTERN)


class SourceError(ValueError):
    """A store file that meta.json names is missing or its path is unsafe."""


def site_path(out_dir: Path, rel: str) -> Path:
    """`out_dir/rel`, refusing anything that would land outside the site."""
    parts = rel.split("/")
    if not rel or "\\" in rel or any(part in ("", ".", "..") for part in parts):
        raise SiteError(f"refusing to write outside the site: {rel!r}")
    return out_dir.joinpath(*parts)


def store_rel(rel: object) -> str:
    """A file meta.json names, checked to stay inside its class folder: the store's own rule
    (`store.checked_rel`), raised as the site's SourceError."""
    try:
        return checked_rel(rel)
    except UnsafePath as e:
        raise SourceError(str(e).removeprefix("meta.json: ")) from None


def is_model_slug(name: str) -> bool:
    return bool(_SLUG.match(name)) and name not in (".", "..")


def check_out_dir(out_dir: Path, store_root: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SiteError(f"--site {out_dir} is a file, not a folder; choose a new or empty folder for the site")
    if out_dir == store_root or out_dir in store_root.parents or store_root in out_dir.parents:
        raise SiteError(f"the site folder {out_dir} and the artifact store {store_root} must not contain each other")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        raise SiteError(f"{out_dir} is not empty and was not built by `lens site`; refusing to overwrite it "
                        f"(choose an empty or new folder)")


def default_cache_dir(out_dir: Path) -> Path:
    """Beside the site folder (`site/` -> `.site-cache/`), never in the store: the store may be
    read-only or shared, and a site build writes nothing there."""
    return out_dir.parent / f".{out_dir.name}-cache"


def check_cache_dir(cache_dir: Path, store_root: Path, out_dir: Path) -> None:
    """The cache may be anywhere but inside the store (read-only builds) or the site (it would be
    pruned or published), and, like the site, never a non-empty folder that lens did not make."""
    for what, root in (("artifact store", store_root), ("site folder", out_dir)):
        if cache_dir == root or root in cache_dir.parents or cache_dir in root.parents:
            raise SiteError(f"--cache {cache_dir} must be outside the {what} {root}; choose another folder")
    try:
        names = set(os.listdir(cache_dir))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise SiteError(f"--cache {cache_dir} is a file, not a folder; choose another folder") from None
    except OSError as e:
        raise SiteError(f"--cache {cache_dir} cannot be read: {e.strerror or e}") from None
    if names and CACHE_MARKER not in names and not names <= CACHE_ENTRIES:
        raise SiteError(f"--cache {cache_dir} is not empty and was not made by `lens site`; refusing to write into it "
                        f"(choose an empty or new folder)")


def remove_links(root: Path) -> int:
    """Delete every symbolic link under `root` (the link itself, never its target); returns how many.
    Run at the start of a build, under its lock, on the site and on the cache: from then on no
    path under them leads elsewhere, so plain writes, mkdir and rmtree stay inside."""
    removed = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.is_symlink():
                        os.unlink(e.path)
                        removed += 1
                    elif e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return removed


_HELD: set[int] = set()  # descriptors of the cache locks this process holds


def _close_held_locks() -> None:
    """In a forked child (a pool worker): drop the inherited lock descriptors, so the lock stays
    the parent's alone and goes when the parent dies (flock belongs to the open file, which a
    child's copy would keep alive)."""
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_locks)


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on the cache for a whole build, holding the owner's pid.

    A build that finds it held says so at once on stderr, naming the pid, then waits. No child
    holds it: forked children close it at once (`_close_held_locks`) and programs run by the build
    never get it (O_CLOEXEC), so it goes when its owner dies, even by kill -9. A link in its place
    is removed, never followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        os.unlink(path)
        fd = os.open(path, flags, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            print(f"site: waiting for another build (pid {owner}) that holds {path}; it goes on when that one ends",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the lock


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` unless `path` already holds exactly it; a link or folder in its place is removed,
    never followed. Returns whether it wrote."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        if stat.S_ISREG(st.st_mode):
            if st.st_size == len(data) and path.read_bytes() == data:
                return False
        else:
            _remove(path)
    atomic_write_bytes(path, data)
    return True


def prune(out_dir: Path, shell_files: set[str], pages: set[str], folders: dict[str, dict[str, str]],
          others: set[str] = frozenset()) -> int:  # type: ignore[assignment]
    """Delete what an earlier build left and this one did not make; only inside our own layout.

    `pages`: file names directly in classes/; `others`: other files we wrote (outside classes/)."""
    removed = 0
    keep_top = shell_files | others | {INDEX_FILE, INDEX_SCRIPT, MARKER_FILE}
    for root, dirs, files in os.walk(out_dir):  # never follows links; links to folders are in `dirs`
        rel_root = Path(root).relative_to(out_dir).as_posix()
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links and not (rel_root == "." and d == "classes")]
        for f in files + links:
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if rel not in keep_top:
                os.unlink(os.path.join(root, f))
                removed += 1
    classes_dir = out_dir / "classes"
    if classes_dir.is_symlink() or not classes_dir.is_dir():
        return removed
    wanted_dirs: dict[str, set[str]] = {}
    for folder in folders:
        if not folder.startswith("classes/"):  # other image folders (the dictionary's) are listed in `others`
            continue
        _, slug, model = folder.split("/")
        wanted_dirs.setdefault(slug, set()).add(model)
    for entry in os.scandir(classes_dir):
        if not entry.is_dir(follow_symlinks=False):
            if entry.name not in pages or entry.is_symlink():
                removed += _remove(entry)
        elif entry.name not in wanted_dirs:
            removed += _remove(entry)
        else:
            for sub in os.scandir(entry.path):
                if sub.is_dir(follow_symlinks=False) and sub.name in wanted_dirs[entry.name]:
                    names = folders[f"classes/{entry.name}/{sub.name}"]
                    removed += sum(_remove(f) for f in os.scandir(sub.path) if f.name not in names or f.is_symlink())
                else:
                    removed += _remove(sub)
    return removed


def _remove(entry: os.DirEntry[str] | Path) -> int:
    """Delete a file, a link (never what it points at) or a whole folder; returns how many files went."""
    path = Path(entry)
    if not path.is_symlink() and path.is_dir():
        n = sum(len(files) for _, _, files in os.walk(path))
        shutil.rmtree(path)
        return n
    path.unlink()
    return 1
