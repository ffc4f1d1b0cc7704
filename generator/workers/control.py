"""A run's controls: Ctrl-C (finish the batch, then stop; twice: abort) and one progress bar per model."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from ..progress import LogBar


class StopFlag:
    """First Ctrl-C: finish the current batch, save it, stop. Second Ctrl-C: abort now."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):  # noqa: ANN001, ARG001
            if self.event.is_set():
                raise KeyboardInterrupt
            self.event.set()
            print("\nlens: stopping after the current batch is saved (Ctrl-C again to abort)", file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


class Bars:
    """One tqdm bar per model: visualizations and CRAFT classes per second, with an ETA."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars: dict[str, Any] = {}

    def open(self, model: str, total: float) -> None:
        if not self.enabled:  # --no-progress: a log line every minute instead (generator/progress.py)
            self.bars[model] = LogBar(model, total)
            return
        from tqdm import tqdm

        if model in self.bars:  # a later pass of the same run (units other runs left)
            self.bars.pop(model).close()

        self.bars[model] = tqdm(total=total, desc=model, unit="unit", position=len(self.bars), dynamic_ncols=True,
                                mininterval=0.5, bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]")

    def grow(self, model: str, extra: float) -> None:
        if model in self.bars:
            self.bars[model].total += extra
            self.bars[model].refresh()

    def advance(self, model: str, n: float) -> None:
        if model in self.bars:
            bar = self.bars[model]
            bar.update(min(n, bar.total - bar.n))  # per-step fractions must not overshoot

    def finish(self, model: str) -> None:
        """Stop the model's clock: its bar's elapsed time and rate are its own."""
        if model in self.bars:
            self.bars[model].close()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()
