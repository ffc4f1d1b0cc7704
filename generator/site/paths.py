"""Files of the site: safe paths inside it, writes that skip unchanged bytes, and pruning what an
earlier build left. Guarantees: nothing is written or deleted outside the site folder, and a folder
that `lens site` did not build is never overwritten."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..config import SLUG_PATTERN
from ..errors import SiteError
from ..resources import templates_dir
from ..store import UnsafePath, atomic_write_bytes, checked_rel, resolves_inside

TEMPLATES = templates_dir()  # generator/resources.py: the packaged copy, else the checkout's templates/
INDEX_FILE = "classes.json"
INDEX_SCRIPT = "classes.js"  # the same index as a script: pages load it from file:// too, where fetch() is blocked
MARKER_FILE = ".lens-site"  # says "this folder is a site we built", so pruning it is safe
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
    """The cache may be anywhere but inside the store (read-only builds) or the site (it would be pruned or published)."""
    if cache_dir.exists() and not cache_dir.is_dir():
        raise SiteError(f"--cache {cache_dir} is a file, not a folder; choose a folder for the site's build cache")
    for what, root in (("artifact store", store_root), ("site folder", out_dir)):
        if cache_dir == root or root in cache_dir.parents or cache_dir in root.parents:
            raise SiteError(f"--cache {cache_dir} must be outside the {what} {root}; choose another folder")


inside = resolves_inside  # the store's check (generator/store.py): images.py scans a class's links with it once


def write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return True


def prune(out_dir: Path, shell_files: set[str], pages: set[str], folders: dict[str, dict[str, str]],
          others: set[str] = frozenset()) -> int:  # type: ignore[assignment]
    """Delete what an earlier build left and this one did not make; only inside our own layout.

    `pages`: file names directly in classes/; `others`: other files we wrote (outside classes/)."""
    removed = 0
    keep_top = shell_files | others | {INDEX_FILE, INDEX_SCRIPT, MARKER_FILE}
    for root, dirs, files in os.walk(out_dir):
        rel_root = Path(root).relative_to(out_dir).as_posix()
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d != "classes"]
        for f in files:
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if rel not in keep_top:
                os.unlink(os.path.join(root, f))
                removed += 1
    classes_dir = out_dir / "classes"
    if not classes_dir.is_dir():
        return removed
    wanted_dirs: dict[str, set[str]] = {}
    for folder in folders:
        _, slug, model = folder.split("/")
        wanted_dirs.setdefault(slug, set()).add(model)
    for entry in os.scandir(classes_dir):
        if entry.is_file() and entry.name not in pages:
            os.unlink(entry.path)
            removed += 1
        elif entry.is_dir() and entry.name not in wanted_dirs:
            removed += _remove(entry)
        elif entry.is_dir():
            for sub in os.scandir(entry.path):
                if sub.is_dir() and sub.name in wanted_dirs[entry.name]:
                    names = folders[f"classes/{entry.name}/{sub.name}"]
                    removed += sum(_remove(f) for f in os.scandir(sub.path) if f.name not in names)
                else:
                    removed += _remove(sub)
    return removed


def _remove(entry: os.DirEntry[str] | Path) -> int:
    """Delete a file or a whole folder; returns how many files went."""
    path = Path(entry)
    if path.is_dir() and not path.is_symlink():
        n = sum(len(files) for _, _, files in os.walk(path))
        shutil.rmtree(path)
        return n
    path.unlink()
    return 1
