"""A build's inputs and outputs, signed: a rebuild that finds both as the last build left them has
nothing to do and stops (as make does), instead of reading 3000 meta.json files to learn so.

Why by hand: no library signs a file tree cheaply. A signature lists every file's path, size and
modification time (ns); no file is read. It costs ~1 s per 100 000 files on this CPU, against ~30 s
for a full no-change build at 1000 classes x 3 models (benchmarks/README.md, "Site").

Guarantees:
- inputs: every file under the selected models' folders of the store and its `dictionary-matches/`, the zoo (models.yaml as
  parsed), the build's options and selection, every template, and the versions of the generator,
  MkDocs and its theme; any change to any of them runs the full build;
- outputs: every file of the site folder; a file changed, added or removed there runs the full
  build, which repairs it;
- the manifest is written only after a build has finished; an unreadable one runs the full build.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..store import MATCHES, atomic_write_bytes

MANIFEST_VERSION = "1"


def tree_signature(root: Path, skip: frozenset[str] = frozenset()) -> tuple[str, int]:
    """(digest, files) of every file under `root`: relative path, size and mtime_ns, in sorted order.
    Names in `skip` (at any depth) are left out; a missing root signs as empty."""
    h = hashlib.blake2b(digest_size=16)
    files = 0
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if e.name in skip:
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append((Path(e.path), f"{prefix}{e.name}/"))
            else:
                st = e.stat(follow_symlinks=False)
                h.update(f"{prefix}{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                files += 1
    return h.hexdigest(), files


def inputs_digest(store_root: Path, models: list[str], parts: dict[str, Any]) -> tuple[str, int]:
    """(digest, files) of the build's inputs: the selected models' store folders and `parts` (JSON)."""
    h = hashlib.sha256(f"{MANIFEST_VERSION}|{json.dumps(parts, sort_keys=True, default=str)}".encode())
    files = 0
    for m in models:
        digest, n = tree_signature(store_root / m, skip=frozenset({".meta.lock"}))
        h.update(f"{m}\0{digest}\n".encode())
        files += n
    digest, n = tree_signature(store_root / MATCHES)  # cross-model dictionary matches (issue 19 §5)
    h.update(f"{MATCHES}\0{digest}\n".encode())
    return h.hexdigest(), files + n


def code_digest() -> str:
    """The generator's own source: a changed view or page function rebuilds, even at the same version."""
    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class Manifest:
    """The last finished build's {inputs, outputs} digests, in the build cache."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, inputs: str, outputs: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps({"inputs": inputs, "outputs": outputs}).encode())

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)
