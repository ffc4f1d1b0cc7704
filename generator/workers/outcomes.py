"""What a run did: each unit's outcome, the run's summary and exit code, batches logged to runs.jsonl."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..records import Unit
from ..store import Store


@dataclass
class Outcome:
    unit: str
    kind: str
    status: str  # done, failed, skipped, no-images
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RenderSummary:
    """What a run did. Exit code: 130 if stopped, else 1 if a unit failed or remains undone, else 0."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    no_images: int = 0
    stopped: bool = False
    failures: list[Outcome] = field(default_factory=list)
    skipped_outcomes: list[Outcome] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)  # unit ids still not done when the run ended
    problems: list[str] = field(default_factory=list)  # unusable meta.json files moved aside, etc.
    images_source: str | None = None

    def add(self, o: Outcome) -> None:
        name = o.status.replace("-", "_")
        setattr(self, name, getattr(self, name) + 1)
        if o.status == "failed":
            self.failures.append(o)
        elif o.status == "skipped":
            self.skipped_outcomes.append(o)

    def merge(self, other: RenderSummary) -> None:
        for name in ("done", "failed", "skipped", "no_images"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures += other.failures
        self.skipped_outcomes += other.skipped_outcomes
        self.undone += other.undone
        self.problems += other.problems
        self.stopped = self.stopped or other.stopped
        self.images_source = self.images_source or other.images_source

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return 130
        return 1 if self.failed or self.undone else 0



def record_batch(store: Store, summary: RenderSummary, outcomes: list[Outcome], device: str, batch: int, seconds: float,
                 model: str) -> None:
    for o in outcomes:
        summary.add(o)
    kind = outcomes[0].kind if outcomes else "none"
    store.log({"event": "batch_end", "model": model, "kind": kind, "device": device, "batch_size": batch,
               "seconds": round(seconds, 3), "done": sum(o.status == "done" for o in outcomes),
               "failed": sum(o.status == "failed" for o in outcomes)})


def batches(units: list[Unit], size: int) -> list[list[Unit]]:
    return [units[i : i + size] for i in range(0, len(units), size)]
