"""The artifact store: `<root>/<model>/<class index, 4 digits>/` with `meta.json` and images.

Guarantees, because this is where data is lost in practice:
- every file appears whole or not at all (temporary file, then rename);
- `meta.json` and `model.json` are changed only by a locked read-modify-write, so concurrent
  workers never drop each other's parts;
- a unit of work is claimed by an exclusive create, and claims of dead workers are reclaimed;
- a part counts as done only when `meta.json` says so with the current settings hash and every
  file it lists exists;
- a `meta.json` that does not parse, does not fit `records.Meta` or holds a huge or infinite
  number (`read_record`) is reported in `Store.problems` and its units count as not done; only a
  render (`repair=True`) moves it aside (`meta.json.corrupt-<UTC time>`, in the run log too) and
  renders it again: status, quality, figure, the API and the site leave it where it is;
- a full disk or a read-only store raises `StoreError` (one line); the write in flight is dropped
  whole, and nothing finished before it is touched;
- a file a record names is read only through `ClassPaths` (`Store.file_path`, `Store.missing_files`):
  a plain relative path that stays inside the store with every link resolved, else `UnsafePath`.
  Every reader gets that one check from here: status, plan, quality, `lens figure`, the Python
  API and the site (`site/paths.py` delegates to `checked_rel` and `resolves_inside`).

The records themselves (schema, fields, the unit of work) are defined in `generator/records.py`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import json
import os
import shutil
import socket
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from .classes import imagenet_class
from .config import RESERVED_NAMES
from .errors import StoreError
from .records import SCHEMA, AtlasRecord, AtomMacos, DictionaryRecord, MatchRecord, Meta, ModelCard, Unit

__all__ = ["SCHEMA", "META", "Store", "Unit", "Claim", "StoreError", "UnsafePath", "ClassPaths", "atomic_write_bytes",
           "atomic_write_json", "checked_rel", "encode_png", "encode_jpeg", "encode_webp", "file_lock", "resolves_inside"]

META = "meta.json"
MODEL_CARD = "model.json"
RESERVED = RESERVED_NAMES  # the store's own entries beside the model folders
CLAIM_TTL_S = 600.0  # a claim not refreshed for this long belongs to a dead worker
HOST = socket.gethostname()
_TMP_MARK = ".tmp."


def _tmp_name(path: Path) -> Path:
    """Temporary sibling whose name says who wrote it, so leftovers of dead writers can be swept."""
    return path.with_name(f".{path.name}{_TMP_MARK}{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


# A store that is full, over quota or not writable: no retry or other unit can help.
_STORE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@contextlib.contextmanager
def store_errors(path: Path) -> Iterator[None]:
    """OSErrors that mean "this store cannot be written" become one StoreError line naming the path."""
    try:
        yield
    except StoreError:
        raise
    except OSError as e:
        if e.errno in _STORE_ERRNOS:
            raise StoreError(f"cannot write {path}: {e.strerror or e} (the store must be writable and have free space; "
                             "everything finished before this is kept)") from None
        raise


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    with store_errors(path):
        _atomic_write_bytes(path, data, fsync)


def write_whole(path: Path, data: bytes) -> None:
    """A file outside the store (models.yaml), written whole or not at all; OSErrors are the caller's."""
    _atomic_write_bytes(path, data, fsync=True)


def _atomic_write_bytes(path: Path, data: bytes, fsync: bool) -> None:
    """Whole or not at all; OSErrors are left to the caller (files outside the store use this too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode(), fsync=True)


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_webp(image: Image.Image, lossless: bool = True, quality: int = 90) -> bytes:
    """WebP for the store: lossless (alpha kept), else at `quality`. Low effort (method 1-2): the site
    re-encodes store images anyway, and method 4 took 5x the time for 6 % fewer bytes on a heat strip."""
    buf = io.BytesIO()
    if lossless:
        image.save(buf, format="WEBP", lossless=True, quality=50, method=1)
    else:
        image.save(buf, format="WEBP", quality=quality, method=2)
    return buf.getvalue()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for a short read-modify-write."""
    with store_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


MAX_FLOAT = 1e15  # no record field comes near (seconds, probabilities, importances, coordinates)
MAX_INT = 2**63  # seeds and counts fit in 64 bits


def _float(text: str) -> float:
    value = float(text)
    if abs(value) > MAX_FLOAT:  # NaN passes, as writers have always been able to write it; inf does not
        raise ValueError(f"the number {text} is out of range (beyond +-{MAX_FLOAT:g})")
    return value


def _int(text: str) -> int:
    value = int(text)
    if abs(value) >= MAX_INT:
        raise ValueError(f"the integer {text[:24]}{'...' if len(text) > 24 else ''} is out of range")
    return value


def _constant(text: str) -> float:
    if text == "NaN":
        return float("nan")
    raise ValueError(f"{text} is not a number a record can hold")


def read_record(data: bytes) -> Any:
    """The JSON of a record file (meta.json, model.json), numbers checked as they are parsed: a huge
    or infinite number makes the record unusable (ValueError, one line), so one such file never
    overflows a reader's arithmetic; the other records go on."""
    return json.loads(data.decode("utf-8"), parse_float=_float, parse_int=_int, parse_constant=_constant)


class UnsafePath(StoreError):
    """A file named in a store record that would be read from outside the store."""


def checked_rel(rel: object, where: object = "meta.json") -> str:
    """A file a record names, checked to be a plain path below its class folder: a non-empty string,
    not absolute, with no `..` part, backslash or NUL. Raises UnsafePath naming `where`."""
    if not isinstance(rel, str) or not rel:
        raise UnsafePath(f"{where}: no file recorded (found {rel!r})")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or ".." in rel.split("/"):
        raise UnsafePath(f"{where}: unsafe path {rel!r} (store files are named relative to their class folder)")
    return rel


def resolves_inside(path: str | os.PathLike[str], root_real: str) -> bool:
    """Whether `path`, with every link resolved, is inside the folder `root_real` (already resolved)."""
    return os.path.realpath(path).startswith(root_real.rstrip(os.sep) + os.sep)


class ClassPaths:
    """The files one class's records name, each checked to stay inside the store.

    A path is safe when `checked_rel` accepts it and no component of it below the class folder is a
    link that resolves outside the store's root (nor the class folder itself). Components are
    lstat-ed once per instance (memoised), so checking every file of a class costs about one stat
    per file, as `is_file` did (`scan` makes it one listing per class folder); a path through a
    link is resolved whole, since links may chain."""

    def __init__(self, store: Store, model: str, class_index: int):
        self.base = store.class_dir(model, class_index)
        self.where = store.meta_path(model, class_index)
        self.root_real = store.real_root
        self._base_ok: bool | None = None
        self._modes: dict[str, int | None] = {}
        self._scanned = False  # every entry below the class folder (not beyond its links) is in _modes

    def scan(self) -> ClassPaths:
        """Learn the type of every entry below the class folder in one walk (their type comes with
        the directory listing: no stat per file), for callers that check many paths of one class:
        an lstat per path component of every source cost the site ~4 s on 1000 classes x 3 models.
        Entries beyond a link are not listed; `path` resolves those whole, as before."""
        stack, complete = [""], True
        while stack:
            sub = stack.pop()
            try:
                with os.scandir(self.base / sub) as it:
                    for e in it:
                        rel = sub + e.name
                        if e.is_symlink():
                            self._modes[rel] = stat.S_IFLNK
                        elif e.is_dir(follow_symlinks=False):
                            self._modes[rel] = stat.S_IFDIR
                            stack.append(rel + "/")
                        else:
                            self._modes[rel] = stat.S_IFREG if e.is_file(follow_symlinks=False) else 0
            except OSError:  # absent or unlistable: what it holds is lstat-ed path by path, as without a scan
                complete = False
        self._scanned = complete
        return self

    def _mode(self, rel: str) -> int | None:
        if rel not in self._modes:
            if self._scanned:
                return None
            try:
                self._modes[rel] = os.lstat(self.base / rel).st_mode
            except (OSError, ValueError):
                self._modes[rel] = None
        return self._modes[rel]

    def path(self, rel: object) -> Path:
        """`class folder / rel`, or UnsafePath (one line naming the meta.json) when it leaves the store."""
        rel = checked_rel(rel, self.where)
        if self._base_ok is None:
            self._base_ok = resolves_inside(self.base, self.root_real)
        if not self._base_ok:
            raise UnsafePath(f"{self.where}: the class folder is a link that leads outside the store")
        path = self.base / rel
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            mode = self._mode("/".join(parts[:i]))
            if mode is None:  # absent: nothing below it can lead anywhere
                return path
            if stat.S_ISLNK(mode):
                if resolves_inside(path, self.root_real):
                    return path
                raise UnsafePath(f"{self.where}: {rel!r} is a link that leads outside the store")
        return path

    def path_or_none(self, rel: object) -> Path | None:
        """`path(rel)`, or None when it would leave the store."""
        try:
            return self.path(rel)
        except UnsafePath:
            return None

    def is_file(self, rel: object) -> bool:
        """Safe and a regular file (a link followed only where it stays inside the store)."""
        path = self.path_or_none(rel)
        if path is None:
            return False
        mode = self._mode(str(rel))
        if mode is not None and stat.S_ISLNK(mode):
            return path.is_file()
        return mode is not None and stat.S_ISREG(mode)


_PID_MAX = 2**22  # Linux's largest pid_max: a bigger or non-positive "pid" is not a process of ours


def _read_claim(path: Path) -> tuple[bool | None, float] | None:
    """(whether its holder is alive, age in seconds) of a claim file, None when there is none.

    The one parser of claim files. "Alive" is known only for a pid of this host (else None: judge by
    age). Content that is not a claim object (caught mid-write, random bytes, another JSON type, a
    folder in its place, a pid that cannot be one) leaves it unknown: never an error."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return None, 0.0  # cannot even be looked at: treat it as fresh, its holder's to remove
    try:
        info = json.loads(path.read_bytes().decode("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    pid = info.get("pid")
    if info.get("host") == HOST and isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < _PID_MAX:
        return _pid_alive(pid), age
    return None, age


@dataclass
class Claim:
    unit: Unit
    path: Path


class Store:
    """Reads and writes renders under one root folder."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.problems: list[str] = []  # unusable records met while reading, one line each

    @functools.cached_property
    def real_root(self) -> str:
        """The root with every link resolved: where files that records name must stay."""
        return os.path.realpath(self.root)

    # ---------------------------------------------------------------- paths and reading
    def class_dir(self, model: str, class_index: int) -> Path:
        return self.root / model / f"{class_index:04d}"

    def meta_path(self, model: str, class_index: int) -> Path:
        return self.class_dir(model, class_index) / META

    def meta(self, model: str, class_index: int, repair: bool = True) -> Meta | None:
        """The validated meta.json, or None if absent or unusable (then moved aside when `repair`)."""
        return self._load_meta(model, class_index, locked=False, repair=repair)

    def _parse_meta(self, model: str, class_index: int) -> tuple[Meta | None, str | None]:
        """(record, None), (None, None) when absent, or (None, why it is unusable). No side effects."""
        path = self.meta_path(model, class_index)
        try:
            meta = Meta.from_json_obj(read_record(path.read_bytes()))
        except FileNotFoundError:
            return None, None
        except (ValueError, OSError) as e:  # JSON, UTF-8 and schema errors are ValueErrors; a folder is an OSError
            return None, (str(e).splitlines()[0] if str(e) else type(e).__name__)
        if (meta.model, meta.class_index) != (model, class_index):
            return None, f"it belongs to {meta.model}/{meta.class_index:04d}"
        return meta, None

    def _load_meta(self, model: str, class_index: int, locked: bool, repair: bool = True) -> Meta | None:
        meta, reason = self._parse_meta(model, class_index)
        if reason is None:
            return meta
        path = self.meta_path(model, class_index)
        if not repair:
            self._problem(f"{path}: unusable meta.json ({reason}); its parts count as not done")
            return None
        try:
            with contextlib.ExitStack() as stack:
                if not locked:  # re-check under the lock: another process may have moved or replaced it
                    stack.enter_context(file_lock(path.parent / ".meta.lock"))
                    meta, reason = self._parse_meta(model, class_index)
                    if reason is None:
                        return meta
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                aside = path.with_name(f"{META}.corrupt-{stamp}-{uuid.uuid4().hex[:4]}")
                path.rename(aside)
        except FileNotFoundError:
            return None
        except OSError as e:  # StoreError included: a read-only store keeps the file, the parts still count as not done
            self._problem(f"{path}: unusable meta.json ({reason}); could not move it aside ({e}); its parts count as not done")
            return None
        self._problem(f"{path}: unusable meta.json ({reason}); moved aside to {aside.name}, its parts will be rendered again")
        with contextlib.suppress(OSError):
            self.log({"event": "meta_quarantined", "path": str(path), "aside": aside.name, "reason": reason})
        return None

    def _problem(self, text: str) -> None:
        self.problems.append(text)

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith((".", "_")) and p.name not in RESERVED)

    def class_indices(self, model: str) -> list[int]:
        """Classes of a model that have a meta.json (valid or not)."""
        base = self.root / model
        if not base.is_dir():
            return []
        return sorted(int(d.name) for d in base.iterdir() if d.name.isdigit() and len(d.name) == 4 and (d / META).exists())

    def iter_meta_records(self, model: str, classes: Iterable[int] | None = None, repair: bool = True) -> Iterator[Meta]:
        """Valid meta.json records of a model (of `classes` when given); unusable ones are skipped,
        reported in `problems`, and moved aside when `repair`."""
        wanted = set(classes) if classes is not None else None
        for c in self.class_indices(model):
            if wanted is None or c in wanted:
                meta = self.meta(model, c, repair=repair)
                if meta is not None:
                    yield meta

    def class_paths(self, model: str, class_index: int) -> ClassPaths:
        """The checker of the paths this class's records name (see ClassPaths)."""
        return ClassPaths(self, model, class_index)

    def file_path(self, model: str, class_index: int, rel: object) -> Path:
        """The store file a record names; UnsafePath when it would be read from outside the store."""
        return self.class_paths(model, class_index).path(rel)

    def missing_files(self, meta: Meta, unit: Unit) -> list[str]:
        """Files the unit's record lists that are not in the store (a done part with these is not done).
        A file whose path leaves the store counts as missing: it is never read, and a render replaces it."""
        paths = self.class_paths(meta.model, meta.class_index)
        return [f for f in meta.files_of(unit) if not paths.is_file(f)]

    # ---------------------------------------------------------------- writing
    def write_file(self, model: str, class_index: int, rel: str, data: bytes) -> str:
        atomic_write_bytes(self.class_dir(model, class_index) / rel, data)
        return rel

    def update_meta(self, model: str, class_index: int, change: Callable[[Meta], Any]) -> Meta:
        """Locked read-modify-write of meta.json; `change` edits the typed record in place."""
        d = self.class_dir(model, class_index)
        with file_lock(d / ".meta.lock"):
            meta = self._load_meta(model, class_index, locked=True)
            if meta is None:
                c = imagenet_class(class_index)
                meta = Meta(model=model, class_index=class_index, wnid=c.wnid, class_name=c.name)
            change(meta)
            atomic_write_json(d / META, meta.to_json_obj())
        return meta

    def model_card(self, model: str) -> ModelCard | None:
        """The validated model.json, or None if absent or unusable (reported in `problems`)."""
        path = self.root / model / MODEL_CARD
        try:
            return ModelCard.from_json_obj(read_record(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as e:
            self._problem(f"{path}: unusable model.json ({e}); it will be rewritten")
            return None

    def update_model_card(self, model: str, change: Callable[[ModelCard], Any]) -> ModelCard:
        """Locked read-modify-write of model.json (the model folder's lock, as meta.json's is the class's)."""
        with file_lock(self.root / model / ".meta.lock"):
            card = self.model_card(model) or ModelCard(name=model)
            change(card)
            atomic_write_json(self.root / model / MODEL_CARD, card.to_json_obj())
        return card

    def replace_dir(self, model: str, class_index: int, rel: str, fill: Callable[[Path], None]) -> None:
        """Build a whole folder aside with `fill(tmp)`, then swap it in for `rel`."""
        target = self.class_dir(model, class_index) / rel
        tmp = _tmp_name(target)
        with store_errors(tmp):
            tmp.mkdir(parents=True)
        try:
            fill(tmp)
            old = target.with_name(f".{target.name}.old.{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(FileNotFoundError):
                target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # ---------------------------------------------------------------- claims
    def _claim_path(self, unit: Unit) -> Path:
        if unit.kind == "atom":  # a model-wide unit: beside the dictionary's files
            return self.root / unit.model / "dictionary" / f".claim.{unit.part}"
        return self.class_dir(unit.model, unit.class_index) / f".claim.{unit.part.replace('/', '-')}"

    def claim(self, unit: Unit) -> Claim | None:
        """Take the unit for this process, or None if a live worker holds it."""
        path = self._claim_path(unit)
        with store_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                with store_errors(path):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._reclaim_if_stale(path):
                    return None
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": HOST, "pid": os.getpid(), "started": time.time()}, f)
            return Claim(unit, path)
        return None

    def _reclaim_if_stale(self, path: Path) -> bool:
        """Remove a dead worker's claim (under a lock, re-checked there). True if removed."""
        with file_lock(path.parent / ".meta.lock"):
            claim = _read_claim(path)
            if claim is None:
                return True
            alive, age = claim
            if alive is not False and age < CLAIM_TTL_S:
                return False
            try:
                path.unlink(missing_ok=True)
            except OSError:  # not a file (a folder in its place): the unit stays undone, and says so
                return False
            return True

    def refresh(self, claims: list[Claim]) -> None:
        """Heartbeat: keeps live claims from looking stale to workers on other hosts."""
        for c in claims:
            with contextlib.suppress(FileNotFoundError):
                os.utime(c.path)

    def release(self, claim: Claim) -> None:
        claim.path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- housekeeping
    def sweep_temporaries(self) -> int:
        """Delete temporary files and folders left by dead writers on this host, or by anyone long ago."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.rglob(f"*{_TMP_MARK}*"):
            try:
                _, _, owner = path.name.partition(_TMP_MARK)
                host, pid = owner.split(".")[:2]
                dead = (host == HOST and not _pid_alive(int(pid))) or time.time() - path.stat().st_mtime > CLAIM_TTL_S
            except (ValueError, FileNotFoundError):
                continue
            if dead:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed += 1
        for old in self.root.rglob(".*.old.*"):
            shutil.rmtree(old, ignore_errors=True)
        return removed

    def log(self, event: dict[str, Any]) -> None:
        """Append one line to the JSONL run log (locked, so lines from concurrent workers never interleave)."""
        line = json.dumps({"time": time.time(), "host": HOST, "pid": os.getpid(), **event}) + "\n"
        with store_errors(self.root / "runs.jsonl"):
            self.root.mkdir(parents=True, exist_ok=True)
            with file_lock(self.root / ".runs.lock"), open(self.root / "runs.jsonl", "a") as f:
                f.write(line)

    def claimed_by_live_worker(self, unit: Unit) -> bool:
        """A claim exists and does not look stale (its holder may still finish the unit)."""
        claim = _read_claim(self._claim_path(unit))
        if claim is None:
            return False
        alive, age = claim
        return alive if alive is not None else age < CLAIM_TTL_S

    def leftovers(self) -> list[Path]:
        """Temporary and claim files in the store (none should remain once every run has ended)."""
        if not self.root.is_dir():
            return []
        return [p for p in self.root.rglob("*") if _TMP_MARK in p.name or p.name.startswith(".claim.")]


# ----------------------------------------------------------------------------- the model's dictionary record

DICTIONARY_RECORD = "dictionary.json"


def dictionary_record(store: Store, model: str) -> DictionaryRecord | None:
    """`<store>/<model>/dictionary.json`, or None if absent or unreadable (then it is planned again)."""
    try:
        return DictionaryRecord.from_json_obj(read_record((store.root / model / DICTIONARY_RECORD).read_bytes()))
    except (OSError, ValueError):
        return None


def write_dictionary_record(store: Store, model: str, record: DictionaryRecord) -> None:
    """Replace `<store>/<model>/dictionary.json` atomically (the one writer of that file)."""
    atomic_write_json(store.root / model / DICTIONARY_RECORD, record.model_dump(mode="json", exclude_none=True))


# ----------------------------------------------------------------------------- the dictionary's atlas, atom MACOs, matches
#
# Readers return None for a file that is absent, unreadable or not of its record's shape (the page
# then shows its placeholder, and the next render writes it again); writers replace whole files.

ATOM_MACOS = "dictionary/macos.json"
MATCHES = "dictionary-matches"  # <store>/dictionary-matches/<A>--<B>.json (a reserved store name)


def atlas_name(h: str) -> str:
    """dictionary.json `files["atlas"]`, relative to `<store>/<model>/`."""
    return f"dictionary/atlas.{h}.json"


def _typed(path: Path, kind: Any) -> Any:
    try:
        return kind.model_validate(read_record(path.read_bytes()))
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def atlas_record(store: Store, model: str) -> AtlasRecord | None:
    """The atlas of the model's done dictionary (the file its dictionary.json names, computed with its
    settings), or None."""
    record = dictionary_record(store, model)
    if record is None or not record.done or "atlas" not in record.files:
        return None
    try:
        rel = checked_rel(record.files["atlas"], f"{model}/{DICTIONARY_RECORD}")
    except UnsafePath:
        return None
    atlas = _typed(store.root / model / rel, AtlasRecord)
    return atlas if atlas is not None and atlas.settings_hash == record.settings_hash else None


def write_atlas_record(store: Store, model: str, atlas: AtlasRecord) -> str:
    """`<model>/dictionary/atlas.<h>.json` atomically (the one writer); returns its dictionary.json entry."""
    rel = atlas_name(atlas.settings_hash)
    atomic_write_json(store.root / model / rel, atlas.model_dump(mode="json", exclude_none=True))
    return rel


def atom_macos(store: Store, model: str) -> AtomMacos | None:
    """`<model>/dictionary/macos.json`, or None."""
    return _typed(store.root / model / ATOM_MACOS, AtomMacos)


def update_atom_macos(store: Store, model: str, settings_hash: str, change: Callable[[AtomMacos], None]) -> AtomMacos:
    """Read-modify-write of `<model>/dictionary/macos.json` under its lock (the one writer). A record of
    other settings is replaced by an empty one for `settings_hash` before `change` sees it."""
    path = store.root / model / ATOM_MACOS
    with store_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.with_name(".macos.lock")):
            record = atom_macos(store, model)
            if record is None or record.settings_hash != settings_hash:
                record = AtomMacos(settings_hash=settings_hash)
            change(record)
            atomic_write_json(path, record.model_dump(mode="json", exclude_none=True))
    return record


def force_atom_macos(store: Store, model: str) -> bool:
    """Mark `macos.json` forced (its hash prefixed `forced:`, as `--force` marks records), so every atom
    visualization counts as stale and is redone; False when there is none, or it is marked already."""
    path = store.root / model / ATOM_MACOS
    if not path.is_file():
        return False
    with store_errors(path), file_lock(path.with_name(".macos.lock")):
        record = atom_macos(store, model)
        if record is None or record.settings_hash.startswith("forced:"):
            return False
        record.settings_hash = f"forced:{record.settings_hash}"
        atomic_write_json(path, record.model_dump(mode="json", exclude_none=True))
    return True


def match_path(store: Store, a: str, b: str) -> Path:
    first, second = sorted((a, b))
    return store.root / MATCHES / f"{first}--{second}.json"


def dictionary_matches(store: Store, a: str, b: str) -> MatchRecord | None:
    """The atoms of models a and b matched (either order), or None."""
    return _typed(match_path(store, a, b), MatchRecord)


def write_dictionary_matches(store: Store, record: MatchRecord) -> Path:
    """`<store>/dictionary-matches/<A>--<B>.json` atomically (the one writer); `record.models` must be sorted."""
    if list(record.models) != sorted(record.models):
        raise ValueError(f"a match record's models must be sorted by name, not {record.models}")
    path = match_path(store, *record.models)
    atomic_write_json(path, record.model_dump(mode="json", exclude_none=True))
    return path
