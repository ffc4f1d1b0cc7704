"""Pages keyed by their inputs: a page whose inputs are unchanged and whose file in the site is the
one this cache recorded is neither rendered nor compared again.

Why by hand: rendering 1000 class pages and 3000 concept pages with Jinja, then comparing their
bytes with the site's, is most of a no-change rebuild (benchmarks/README.md, "Site"); hashing the
view objects that the templates read is several times cheaper than rendering them.

Guarantees:
- a key covers everything a page is made from: its view objects (pickled, never unpickled), the
  chrome it is placed in, every file of templates/, and the generator's version;
- a page is kept only when its file in the site has the recorded size and modification time and
  its bytes still hash to the recorded digest: a page edited in place (even keeping its size and
  mtime) or an entry that does not match the file is rendered and written again;
- `trust=False` (`lens site --verify`) ignores every entry: every page is rendered and compared;
- an unreadable or foreign cache file only costs a full render, never a wrong page.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any

from ..store import atomic_write_bytes
from ..version import __version__
from .paths import TEMPLATES

CACHE_VERSION = "2"  # 2: entries hold the page's digest


def templates_digest(templates: Path = TEMPLATES) -> bytes:
    """Every template and asset, by path and content: editing any of them re-renders every page."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{__version__}".encode())
    for path in sorted(p for p in templates.rglob("*") if p.is_file()):
        h.update(path.relative_to(templates).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.digest()


class PageCache:
    """{site-relative path: [input key, file size, file mtime_ns, blake2b of the file]} of the pages of the last build."""

    def __init__(self, path: Path, out_dir: Path, *salt: str | bytes, trust: bool = True):
        self.path, self.out_dir = path, out_dir
        h = hashlib.sha256(templates_digest())
        for s in salt:
            h.update(s.encode() if isinstance(s, str) else s)
            h.update(b"\0")
        self.salt = h.digest()
        try:
            old = json.loads(path.read_text()) if trust else {}
            self.old: dict[str, list[Any]] = old if isinstance(old, dict) else {}
        except (OSError, ValueError):
            self.old = {}
        self.new: dict[str, list[Any]] = {}

    def key(self, *inputs: Any) -> str:
        return hashlib.blake2b(self.salt + pickle.dumps(inputs, protocol=5), digest_size=16).hexdigest()

    def fresh(self, rel: str, key: str) -> bool:
        """True when `rel` in the site is the page this key made last time (then it is kept as is)."""
        entry = self.old.get(rel)
        if not isinstance(entry, list) or len(entry) != 4 or entry[0] != key:
            return False
        try:
            st = os.stat(self.out_dir / rel, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or [st.st_size, st.st_mtime_ns] != entry[1:3] or _digest(self.out_dir / rel) != entry[3]:
                return False
        except OSError:
            return False
        self.new[rel] = entry
        return True

    def wrote(self, rel: str, key: str) -> None:
        """Record the page just written (or found identical) under `rel`."""
        st = os.stat(self.out_dir / rel)
        self.new[rel] = [key, st.st_size, st.st_mtime_ns, _digest(self.out_dir / rel)]

    def size(self, rel: str) -> int:
        """Bytes of a page `fresh` kept."""
        return int(self.new[rel][1])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(self.new, separators=(",", ":")).encode())


def _digest(path: Path) -> str:
    """Of a page's bytes (~1 GB/s: reading a page costs far less than rendering it)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()
