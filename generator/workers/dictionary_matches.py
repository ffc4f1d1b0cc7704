"""The same concept in other models (issue 19 §5): `<store>/dictionary-matches/<A>--<B>.json` for each
pair of selected models whose dictionaries are done and whose codes share photo views.

Run by `lens render` after the dictionaries (`run_dictionaries`), in this process: each pair's
codes files (`sidefiles.read_codes`) go to `matching.match_codes` (code maps on the common grid,
Pearson correlation, the threshold from its shuffled-views null), and the result is written as a
`records.MatchRecord` (one writer, atomic). A pair is skipped while its file records the two
dictionaries' current settings hashes; a pair whose codes share fewer than two views is skipped
with a note; any other fault is that pair's alone (an outcome `failed`, retried by the next run).
"""

from __future__ import annotations

import itertools
import logging
import time

from ..errors import StoreError
from ..matching import match_codes
from ..plan import ModelPlan, RenderJob, dictionary_state
from ..records import MatchRecord
from ..sidefiles import read_codes
from ..store import Store, checked_rel, dictionary_matches, dictionary_record, write_dictionary_matches
from .outcomes import Outcome, RenderSummary, record_batch
from .worker import failure_reason

log = logging.getLogger("lens")


def run_matches(job: RenderJob, store: Store, summary: RenderSummary) -> None:
    """Match every pair of the request's models with done dictionaries whose match file is not current."""
    done = sorted((p for p in job.resolved.plans if p.has_dictionary and dictionary_state(store, p) == "done"),
                  key=lambda p: p.name)
    for a, b in itertools.combinations(done, 2):
        hashes = [a.dictionary_hash(), b.dictionary_hash()]
        old = dictionary_matches(store, a.name, b.name)
        if old is not None and old.dictionaries == hashes:
            continue
        t = time.perf_counter()
        outcome = _match(store, a, b, hashes)
        outcome.seconds = time.perf_counter() - t
        if outcome.status != "skipped":
            record_batch(store, summary, [outcome], "cpu", 1, outcome.seconds, f"{a.name}--{b.name}")


def _match(store: Store, a: ModelPlan, b: ModelPlan, hashes: list[str]) -> Outcome:
    unit_id = f"dictionary-matches/{a.name}--{b.name}"
    try:
        codes = []
        for plan in (a, b):
            record = dictionary_record(store, plan.name)
            if record is None or "codes" not in record.files:  # a layer without a token grid has no code maps
                return Outcome(unit_id, "matches", "skipped", f"{plan.name} has no codes file")
            codes.append(read_codes(store.root / plan.name / checked_rel(record.files["codes"], f"{plan.name}/dictionary.json")))
        shared = set(codes[0].sources) & set(codes[1].sources)
        if len(shared) < 2:
            log.info("%s: the two dictionaries share %d photo views; not matched", unit_id, len(shared))
            return Outcome(unit_id, "matches", "skipped", "fewer than two shared photo views")
        found, common, views = match_codes(vars(codes[0]), vars(codes[1]), a.dictionary.atoms, b.dictionary.atoms,
                                           seed=a.dictionary.seed)
        write_dictionary_matches(store, MatchRecord(
            models=[a.name, b.name], n_images=views, grid=list(common), threshold=round(found.threshold, 4),
            mutual_rate=round(found.mutual_rate, 4), a_to_b=found.entries("a_to_b"), b_to_a=found.entries("b_to_a"),
            dictionaries=hashes))
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - this pair's fault alone: the run goes on, the next run retries it
        reason = failure_reason(e)
        log.warning("%s failed: %s", unit_id, reason)
        store.log({"event": "unit_failed", "units": [unit_id], "n": 1, "error": reason, "attempts": 1, "device": "cpu"})
        return Outcome(unit_id, "matches", "failed", reason)
    return Outcome(unit_id, "matches", "done")
