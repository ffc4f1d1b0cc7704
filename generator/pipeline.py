"""Output writing off the thread that drives the device.

A worker renders a batch, hands the encoding (PNG/WebP/JPEG) and the `meta.json` update of each
result to a `Writer`, and starts the next batch while they are written. Guarantees:

- jobs run one at a time, in the order they were submitted, on one background thread (so two
  updates of the same `meta.json` never race inside a worker; across processes the store's
  file locks apply as before);
- at most `max_pending` jobs wait: `submit` blocks beyond that, so memory stays bounded when
  encoding is slower than rendering;
- a job's exception stays with that job: `Pending.wait()` returns, per unit, None or the error,
  so one failed write fails its unit only;
- a unit is reported done only after its job has finished (`Pending.wait()` joins them).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, TypeVar

K = TypeVar("K")


class Writer:
    """One background thread with a bounded queue of write jobs."""

    def __init__(self, max_pending: int = 256, threaded: bool = True):
        self.threaded = threaded
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lens-writer") if threaded else None
        self._slots = threading.BoundedSemaphore(max_pending)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Run fn(*args, **kwargs) in the background (inline when not threaded); blocks while the queue is full."""
        if self._pool is None:
            f: Future = Future()
            try:
                f.set_result(fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - kept on the future, like the threaded path
                f.set_exception(e)
            return f
        self._slots.acquire()
        try:
            f = self._pool.submit(fn, *args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        f.add_done_callback(lambda _: self._slots.release())
        return f

    def close(self) -> None:
        """Finish every submitted job, then stop the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class Pending(Generic[K]):
    """The write jobs of one batch, by unit."""

    def __init__(self) -> None:
        self.jobs: list[tuple[K, Future]] = []

    def add(self, key: K, future: Future) -> None:
        self.jobs.append((key, future))

    def wait(self) -> list[tuple[K, BaseException | None]]:
        """Join every job; (key, None) when it succeeded, (key, error) when it raised."""
        out = []
        for key, f in self.jobs:
            try:
                f.result()
                out.append((key, None))
            except Exception as e:  # noqa: BLE001 - propagated to that unit by the caller
                out.append((key, e))
        return out
