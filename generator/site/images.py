"""Images of the site: which WebP files a build needs (content-addressed by their sources' hashes),
encoding only what the cache lacks, and placing them into the site folder.

Guarantees of placing: every image of the site is a copy of the cache's file for its key, never a
hard link to it (editing the site cannot change the cache). A file already there is kept only when
it is not the cache's inode and has the cache file's size and modification time (copies carry the
cache's mtime); otherwise the two are hashed and a differing copy is replaced. `verify` hashes every
one, and encodes what the cache lacks to have something to compare with."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from .. import webp
from ..store import ClassPaths, Store, UnsafePath
from .paths import SourceError, site_path, store_rel
from .report import SiteReport


class ImagePlan:
    """The WebP files a build needs: per site folder the names to keys, per key how to encode it."""

    def __init__(self, cache: webp.WebpCache, memo_root: Path, full_res: bool = False, rehash: bool = False):
        self.cache = cache
        self.rehash = rehash  # hash every source again, trusting no memoized (size, mtime)
        self.full_res = full_res  # also publish each visualization's lossless PNG with alpha (for papers)
        self.memo_root = memo_root
        self.folders: dict[str, dict[str, str]] = {}
        self.recipes: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.sources_hashed = 0

    def for_class(self, store: Store, model: str, index: int) -> ClassImages:
        slug = f"{index:04d}"
        folder = f"classes/{slug}/{model}"
        names = self.folders.setdefault(folder, {})
        hashes = webp.SourceHashes(self.memo_root / model / f"{slug}.json", store.class_dir(model, index))
        if self.rehash:
            hashes.memo = {}
        return ClassImages(self, f"{slug}/{model}", names, hashes, store.class_paths(model, index).scan())

    def for_dictionary(self, store: Store, model: str, paths: ClassPaths) -> ClassImages:
        """The images of a model's dictionary pages (atom MACOs, region strips), in `dictionary/<model>/`;
        URLs relative to the site root. `paths` checks the model folder's files (`reading.ModelPaths`)."""
        folder = f"dictionary/{model}"
        names = self.folders.setdefault(folder, {})
        hashes = webp.SourceHashes(self.memo_root / model / "dictionary.json", store.root / model)
        if self.rehash:
            hashes.memo = {}
        return ClassImages(self, folder, names, hashes, paths)


class ClassImages:
    """Adds the images of one (model, class) to the plan; gives URLs relative to the class page.
    Every source goes through the store's path check (`store.ClassPaths`, one scan of the class
    folder): a link leading out of the store is never followed."""

    def __init__(self, plan: ImagePlan, url_base: str, names: dict[str, str], hashes: webp.SourceHashes,
                 paths: ClassPaths):
        self.plan, self.url_base, self.names, self.hashes = plan, url_base, names, hashes
        self.paths = paths

    def add(self, role: str, variant: str, files: Sequence[object]) -> str:
        rels = [store_rel(f) for f in files]
        digests = []
        for rel in rels:
            try:
                self.paths.path(rel)
            except UnsafePath:
                raise SourceError(f"{rel} links outside the artifact store") from None
            try:
                digests.append(self.hashes.digest(rel))
            except (FileNotFoundError, NotADirectoryError):
                raise SourceError(f"file missing: {rel}") from None
            except OSError as e:
                raise SourceError(f"file unreadable: {rel} ({e.strerror or e})") from None
        key = webp.variant_key(variant, digests)
        name = webp.output_name(role, key, variant)
        self.names[name] = key
        if key not in self.plan.recipes:
            self.plan.recipes[key] = (variant, tuple(self.hashes.path(r) for r in rels))
        return f"{self.url_base}/{name}"

    def size(self, variant: str, files: Sequence[object]) -> tuple[int, int] | None:
        """Pixel size of a variant `add` planned (from its first source's header); None if unreadable."""
        try:
            return webp.output_size(variant, self.hashes.size(store_rel(files[0])), len(files))
        except Exception:  # noqa: BLE001 - an undecodable source is encoded as a placeholder, sized by CSS
            return None

    def done(self) -> None:
        self.plan.sources_hashed += self.hashes.hashed
        self.hashes.save()


def place_images(out_dir: Path, plan: ImagePlan, workers: int, progress: bool, report: SiteReport,
                 verify: bool = False) -> None:
    """Encode what the cache lacks, then copy into the site every image missing there or not the cache's."""
    wanted: list[tuple[Path, str, os.stat_result | None]] = []
    for folder, names in plan.folders.items():
        target = site_path(out_dir, folder)
        try:
            present = {e.name: e for e in os.scandir(target)}
        except FileNotFoundError:
            present = {}
            target.mkdir(parents=True, exist_ok=True)
        for name, key in names.items():
            e = present.get(name)
            wanted.append((target / name, key, e.stat(follow_symlinks=False) if e and e.is_file(follow_symlinks=False) else None))
    # An image in the site whose key the cache lacks is only checked (encoded, then compared) by `verify`.
    jobs = {key: plan.recipes[key] for _, key, st in wanted if (st is None or verify) and not plan.cache.has(key)}
    report.images_encoded = len(jobs)
    report.warnings += [f"unreadable image, shown as a placeholder: {e}" for e in
                        webp.encode_missing(plan.cache, jobs, workers, progress)]
    for dest, key, st in wanted:
        if st is not None and _is_copy_of(dest, st, plan.cache.path(key), verify):
            report.images_unchanged += 1
        else:
            plan.cache.copy_into(key, dest)
            report.images_linked += 1


def _is_copy_of(dest: Path, st: os.stat_result, cached: Path, verify: bool) -> bool:
    """Whether the site's file `dest` (stat `st`) may stay: a copy of `cached` with the same bytes."""
    try:
        cst = os.stat(cached)
    except FileNotFoundError:
        return not verify  # nothing to compare with (a new cache): trusted by name, as `verify` does not
    if (st.st_ino, st.st_dev) == (cst.st_ino, cst.st_dev):  # a hard link an older build made
        return False
    if st.st_size != cst.st_size:
        return False
    if st.st_mtime_ns == cst.st_mtime_ns and not verify:
        return True
    if _digest(dest) != _digest(cached):
        return False
    os.utime(dest, ns=(cst.st_atime_ns, cst.st_mtime_ns))  # the same bytes: trusted by its stat next time
    return True


def _digest(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()
