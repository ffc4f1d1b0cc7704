"""Progress for batch logs: with `--no-progress`, a line every so often instead of a bar.

`LogBar` has the part of tqdm's interface that the render's bars use (`total`, `n`, `update`,
`refresh`, `close`), so the worker code treats both alike. A line is printed when at least
`every_s` seconds passed since the last one (default 60, or $LENS_PROGRESS_EVERY), and once
at close, so a Slurm log shows progress at a steady rate whatever the unit speed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

DEFAULT_EVERY_S = 60.0


def duration(seconds: float) -> str:
    """The one way lens prints a duration: `42s`, `3m07s`, `1h40m` (progress lines, the dry run's estimates)."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LogBar:
    """A progress 'bar' that prints `lens: progress MODEL: n/total units (p%), rate, ETA` lines."""

    def __init__(self, desc: str, total: float, every_s: float | None = None, file: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.desc, self.total, self.n = desc, total, 0.0
        self.every_s = float(os.environ.get("LENS_PROGRESS_EVERY", DEFAULT_EVERY_S)) if every_s is None else every_s
        self.file = file
        self.clock = clock
        self.started = self.last = clock()
        self.closed = False

    def line(self) -> str:
        elapsed = self.clock() - self.started
        rate = self.n / elapsed if elapsed > 0 else 0.0
        pct = 100 * self.n / self.total if self.total else 100.0
        eta = duration((self.total - self.n) / rate) if rate > 0 else "?"
        return (f"lens: progress {self.desc}: {self.n:.1f}/{self.total:.0f} units ({pct:.0f}%), "
                f"{rate:.3g} units/s, elapsed {duration(elapsed)}, ETA {eta}")

    def _print(self) -> None:
        print(self.line(), file=self.file or sys.stderr, flush=True)
        self.last = self.clock()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every_s:
            self._print()

    def refresh(self) -> None:
        """tqdm compatibility (the total changed); the next periodic line shows it."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._print()
