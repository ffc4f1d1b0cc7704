"""Pipeline: background writer (order, bound, errors) and the worker that renders while the previous batch is written."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from generator import maco, workers
from generator.cli import main
from generator.pipeline import Pending, Writer
from generator.store import Store


def render(config: Path, out: Path, *extra: str) -> int:
    return main(["render", "--config", str(config), "--classes", "1-3", "--out", str(out), "--no-progress", *extra])


def test_writer_runs_jobs_in_order_off_the_calling_thread():
    writer, seen = Writer(), []
    pending: Pending[int] = Pending()
    for i in range(20):
        pending.add(i, writer.submit(lambda i=i: seen.append((i, threading.current_thread().name))))
    assert [e for _, e in pending.wait()] == [None] * 20
    assert [i for i, _ in seen] == list(range(20))
    assert all(name.startswith("lens-writer") for _, name in seen)
    writer.close()


def test_writer_queue_is_bounded_and_errors_stay_with_their_job():
    writer, gate = Writer(max_pending=2), threading.Event()
    first = writer.submit(gate.wait, 10)
    second = writer.submit(lambda: 1 / 0)
    third_submitted = threading.Event()
    threading.Thread(target=lambda: (writer.submit(lambda: "ok"), third_submitted.set()), daemon=True).start()
    assert not third_submitted.wait(0.3), "a third job must wait while two are pending"
    gate.set()
    assert third_submitted.wait(10)
    pending: Pending[str] = Pending()
    pending.add("a", first)
    pending.add("b", second)
    (ka, ea), (kb, eb) = pending.wait()
    assert ea is None and isinstance(eb, ZeroDivisionError)
    writer.close()


def test_a_failed_write_fails_its_unit_only(tiny_config, tmp_path, monkeypatch):
    real, threads = workers.saving.encode_png, set()

    def broken_for_class_2(image):  # noqa: ANN001
        threads.add(threading.current_thread().name)
        if broken["on"] and image.ndim == 3 and image.shape[-1] == 3 and broken.setdefault("hit", 0) == 0:
            broken["hit"] = 1
            raise OSError("disk full (simulated)")
        return real(image)

    broken = {"on": True}
    monkeypatch.setattr(workers.saving, "encode_png", broken_for_class_2)
    out = tmp_path / "w"
    assert render(tiny_config, out, "--what", "maco", "--retries", "0", "--batch-size", "3") == 1
    metas = {m.class_index: m.to_json_obj() for m in Store(out).iter_meta_records("tiny")}
    failed = [c for c, m in metas.items() if m["maco"]["status"] == "failed"]
    assert len(failed) == 1 and "writing the result failed: OSError: disk full" in metas[failed[0]]["maco"]["error"]
    assert all(m["maco"]["status"] == "done" for c, m in metas.items() if c not in failed)
    assert threads == {n for n in threads if n.startswith("lens-writer")}, threads  # PNGs were encoded off the device thread


def test_the_next_batch_renders_while_the_previous_one_is_written(tiny_config, tmp_path, monkeypatch):
    real_render, real_save, events = maco.render, workers.save_maco, []
    rendered_two = threading.Event()

    def logged_render(model, objectives, *args, **kwargs):  # noqa: ANN001
        events.append(("render", objectives[0].key))
        if len([e for e in events if e[0] == "render"]) >= 2:
            rendered_two.set()
        return real_render(model, objectives, *args, **kwargs)

    def slow_save(store, plan, unit, *args, **kwargs):  # noqa: ANN001
        if unit.class_index == 1:
            waited = time.perf_counter()
            rendered_two.wait(30)  # without pipelining nothing renders meanwhile: the wait would time out
        events.append(("saved", unit.class_index, time.perf_counter() - waited if unit.class_index == 1 else 0))
        return real_save(store, plan, unit, *args, **kwargs)

    monkeypatch.setattr(maco, "render", logged_render)
    monkeypatch.setattr(workers.worker, "save_maco", slow_save)  # where the Worker looks it up
    assert render(tiny_config, tmp_path / "p", "--what", "maco", "--batch-size", "1") == 0
    kinds = [e[0] for e in events]
    assert kinds.index("saved") > 1 and kinds[:2] == ["render", "render"], events
    metas = {m.class_index: m.to_json_obj() for m in Store(tmp_path / "p").iter_meta_records("tiny")}
    assert all(m["maco"]["status"] == "done" and isinstance(m["maco"]["self_rank"], int) for m in metas.values())


@pytest.mark.parametrize("threaded", [True, False])
def test_writer_close_finishes_every_job(threaded):
    writer, done = Writer(threaded=threaded), []
    for i in range(5):
        writer.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
    writer.close()
    assert done == list(range(5))
