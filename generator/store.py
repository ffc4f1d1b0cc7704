"""The artifact store: `<root>/<model>/<class index, 4 digits>/` with `meta.json` and images.

Guarantees, because this is where data is lost in practice:
- every file appears whole or not at all (temporary file, then rename);
- `meta.json` is changed only by a locked read-modify-write, so concurrent workers never drop
  each other's parts;
- a unit of work is claimed by an exclusive create, and claims of dead workers are reclaimed;
- a part counts as done only when `meta.json` says so with the current settings hash.

meta.json (schema 1)::

    {"schema": 1, "model": str, "class_index": int, "wnid": str, "class_name": str,
     "maco":    {part record, "files": {"image": "maco.png", "alpha": "maco_alpha.png"},
                 "self_prob", "self_rank", "quality": {...}},
     "craft":   {part record, "n_images", "image_selection": "predicted"|"all"|"none",
                 "nmf_error", "reason"?},
     "concepts": [{"id", "rank", "importance", "logit_share", "files": {...}, "crops": [...],
                   "attributions": [...], "maco": {part record}}, ...]}   # ordered by importance

A part record always has "status" ("done" or "failed"), "settings_hash", and when done
"settings", "wall_time_s", "versions", "finished_at"; when failed "error" and "attempts".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

SCHEMA = 1
META = "meta.json"
CLAIM_TTL_S = 600.0  # a claim not refreshed for this long belongs to a dead worker
HOST = socket.gethostname()
_TMP_MARK = ".tmp."


def _tmp_name(path: Path) -> Path:
    """Temporary sibling whose name says who wrote it, so leftovers of dead writers can be swept."""
    return path.with_name(f".{path.name}{_TMP_MARK}{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
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


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for a short read-modify-write."""
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


@dataclass(frozen=True)
class Unit:
    """One piece of work: a part of a (model, class). part: `maco`, `craft` or `concept/<k>`."""

    model: str
    class_index: int
    part: str

    @property
    def id(self) -> str:
        return f"{self.model}/{self.class_index:04d}/{self.part}"

    @property
    def kind(self) -> str:
        return self.part.split("/")[0]


@dataclass
class Claim:
    unit: Unit
    path: Path


class Store:
    """Reads and writes renders under one root folder."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    # ---------------------------------------------------------------- paths and reading
    def class_dir(self, model: str, class_index: int) -> Path:
        return self.root / model / f"{class_index:04d}"

    def meta_path(self, model: str, class_index: int) -> Path:
        return self.class_dir(model, class_index) / META

    def read_meta(self, model: str, class_index: int) -> dict[str, Any] | None:
        path = self.meta_path(model, class_index)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as e:  # cannot happen through this module; say so if it does
            raise RuntimeError(f"{path}: corrupt meta.json ({e}); delete it to re-render the class") from None

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")) and p.name != "spectra")

    def iter_metas(self, model: str) -> Iterator[dict[str, Any]]:
        base = self.root / model
        if not base.is_dir():
            return
        for d in sorted(base.iterdir()):
            if d.name.isdigit() and (d / META).is_file():
                meta = self.read_meta(model, int(d.name))
                if meta is not None:
                    yield meta

    # ---------------------------------------------------------------- writing
    def write_file(self, model: str, class_index: int, rel: str, data: bytes) -> str:
        atomic_write_bytes(self.class_dir(model, class_index) / rel, data)
        return rel

    def update_meta(self, model: str, class_index: int, identity: dict[str, Any],
                    change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Locked read-modify-write of meta.json; `change` edits the dict in place."""
        d = self.class_dir(model, class_index)
        with file_lock(d / ".meta.lock"):
            meta = self.read_meta(model, class_index) or {"schema": SCHEMA, **identity}
            change(meta)
            atomic_write_json(d / META, meta)
        return meta

    def replace_dir(self, model: str, class_index: int, rel: str, fill: Callable[[Path], None]) -> None:
        """Build a whole folder aside with `fill(tmp)`, then swap it in for `rel`."""
        target = self.class_dir(model, class_index) / rel
        tmp = _tmp_name(target)
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
        return self.class_dir(unit.model, unit.class_index) / f".claim.{unit.part.replace('/', '-')}"

    def claim(self, unit: Unit) -> Claim | None:
        """Take the unit for this process, or None if a live worker holds it."""
        path = self._claim_path(unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
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
            try:
                info = json.loads(path.read_text() or "{}")
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                return True
            except json.JSONDecodeError:  # a claim caught mid-write; judge it by age alone
                info, age = {}, time.time() - path.stat().st_mtime
            dead = info.get("host") == HOST and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"])
            if not dead and age < CLAIM_TTL_S:
                return False
            path.unlink(missing_ok=True)
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
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.time(), "host": HOST, "pid": os.getpid(), **event}) + "\n"
        with file_lock(self.root / ".runs.lock"), open(self.root / "runs.jsonl", "a") as f:
            f.write(line)
