"""Workers at scale, on a tiny random model: resume, concurrency, shards, faults, interruption."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from generator import craft as craft_method
from generator import maco
from generator.cli import main
from generator.plan import in_shard
from generator.store import Store

from .conftest import REPO, write_tiny_zoo
from .rendering import CLASSES, assert_complete, done_events, metas, render, unit_count


def test_render_then_skip_then_rerender_on_changed_settings(tiny_config, tmp_path):
    out = tmp_path / "a"
    assert render(tiny_config, out) == 0
    assert_complete(out)
    first = metas(out)
    assert done_events(out) == unit_count(out)
    assert first[1]["craft"]["image_selection"] == "all"  # a random model predicts nothing right
    assert render(tiny_config, out) == 0  # nothing left to do
    assert done_events(out) == unit_count(out)
    assert render(tiny_config, out, "--steps", "4") == 0  # MACO settings changed: only visualizations redone
    again = metas(out)
    for c in (1, 2, 3):
        assert again[c]["craft"]["finished_at"] == first[c]["craft"]["finished_at"]
        assert again[c]["maco"]["settings"]["steps"] == 4
        assert again[c]["maco"]["settings_hash"] != first[c]["maco"]["settings_hash"]
        old = out / "tiny" / f"{c:04d}" / first[c]["maco"]["files"]["image"]
        assert not old.exists()  # the previous version's files are pruned
    assert_complete(out)


def test_meta_records_what_the_issue_asks(tiny_config, tmp_path):
    out = tmp_path / "m"
    render(tiny_config, out)
    meta = metas(out)[2]
    assert (meta["class_index"], meta["wnid"], meta["model"]) == (2, "n01484850", "tiny")
    rec = meta["maco"]
    for key in ("settings", "settings_hash", "seed", "spectrum", "steps", "wall_time_s", "objective", "versions",
                "self_prob", "self_rank", "files"):
        assert key in rec, key
    assert rec["spectrum"] == "powerlaw-1" and 1 <= rec["self_rank"] <= 1000
    craft = meta["craft"]
    for key in ("n_images", "image_selection", "nmf_error", "settings", "timings_s"):
        assert key in craft, key
    ranks = [c["rank"] for c in meta["concepts"]]
    assert ranks == sorted(ranks) == list(range(1, len(ranks) + 1))
    importances = [c["importance"] for c in meta["concepts"]]
    assert importances == sorted(importances, reverse=True)
    crop = meta["concepts"][0]["crops"][0]
    assert crop["source"].startswith("n01484850/") and len(crop["box"]) == 4


def test_what_selects_parts(tiny_config, tmp_path):
    out = tmp_path / "w"
    assert render(tiny_config, out, "--what", "maco") == 0
    assert all("craft" not in m and m["maco"]["status"] == "done" for m in metas(out).values())
    assert render(tiny_config, out, "--what", "craft") == 0
    assert_complete(out)


def test_shards_partition_the_work(tiny_config, tmp_path):
    pairs = [(m, c) for m in ("a", "b") for c in range(1000)]
    for n in (1, 3, 8):
        owners = [[k for k in range(n) if in_shard(m, c, (k, n))] for m, c in pairs]
        assert all(len(o) == 1 for o in owners)  # each pair in exactly one shard
    out = tmp_path / "s"
    assert render(tiny_config, out, "--shard", "0/2") == 0
    assert render(tiny_config, out, "--shard", "1/2") == 0
    assert_complete(out)
    assert done_events(out) == unit_count(out)  # no unit rendered twice


def test_bad_shard_and_parts(tiny_config, tmp_path):
    assert render(tiny_config, tmp_path, "--shard", "2/2") == 2
    with pytest.raises(SystemExit) as e:  # --what is checked while parsing: argparse's usage error, exit 2
        render(tiny_config, tmp_path, "--what", "everything")
    assert e.value.code == 2


def test_nan_objective_is_retried_then_recorded(tiny_config, tmp_path, monkeypatch):
    real = maco.objective_scores

    def nan_for_class_2(logits, pooled, targets, crops, power):
        scores = real(logits, pooled, targets, crops, power)
        return torch.where((targets.class_index == 2) & targets.is_class, torch.full_like(scores, float("nan")), scores)

    monkeypatch.setattr(maco.loop, "objective_scores", nan_for_class_2)  # where the render loop looks it up
    out = tmp_path / "n"
    assert render(tiny_config, out, "--what", "maco", "--retries", "2") == 1  # exit code says something failed
    m = metas(out)
    assert m[2]["maco"]["status"] == "failed" and "NaN" in m[2]["maco"]["error"] and m[2]["maco"]["attempts"] == 3
    assert m[1]["maco"]["status"] == "done" and m[3]["maco"]["status"] == "done"
    monkeypatch.setattr(maco.loop, "objective_scores", real)
    assert render(tiny_config, out, "--what", "maco") == 0  # a later run retries failed units
    assert metas(out)[2]["maco"]["status"] == "done"


def test_out_of_memory_halves_the_batch(tiny_config, tmp_path, monkeypatch):
    real = maco.render
    sizes = []

    def small_memory(model, objectives, *args, **kwargs):
        sizes.append(len(objectives))
        if len(objectives) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, objectives, *args, **kwargs)

    monkeypatch.setattr(maco, "render", small_memory)
    out = tmp_path / "o"
    assert render(tiny_config, out, "--what", "maco", "--batch-size", "8") == 0
    assert sizes[:3] == [3, 1, 2] or sizes[0] == 3 and max(sizes[1:]) <= 2
    events = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert any(e["event"] == "oom" and e["batch_size"] == 1 for e in events)
    assert all(m["maco"]["status"] == "done" for m in metas(out).values())


def test_out_of_memory_at_batch_one_is_recorded(tiny_config, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(maco, "render", no_memory)
    out = tmp_path / "o1"
    assert render(tiny_config, out, "--what", "maco", "--retries", "1") == 1
    assert all(m["maco"]["status"] == "failed" and "out of memory" in m["maco"]["error"] for m in metas(out).values())


def test_a_unit_that_always_fails_is_recorded_and_the_rest_go_on(tiny_config, tmp_path, monkeypatch, capsys):
    real = craft_method.run_craft

    def broken_for_class_3(model, images, class_index, settings):
        if class_index == 3:
            raise RuntimeError("model exploded")
        return real(model, images, class_index, settings)

    monkeypatch.setattr(craft_method, "run_craft", broken_for_class_3)
    out = tmp_path / "f"
    assert render(tiny_config, out, "--retries", "1") == 1
    m = metas(out)
    assert m[3]["craft"] == {**m[3]["craft"], "status": "failed", "error": "RuntimeError: model exploded", "attempts": 2}
    assert m[3]["maco"]["status"] == "done"
    assert all(c["maco"]["status"] == "done" for c in m[1]["concepts"])
    capsys.readouterr()
    assert main(["status", "--config", str(tiny_config), "--classes", CLASSES, "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "tiny/0003/craft: RuntimeError: model exploded" in text
    assert "1 failed units" in text


def test_configuration_errors_exit_2_with_a_message(tiny_config, tmp_path, capsys):
    assert main(["render", "--config", str(tiny_config), "--classes", "1001", "--out", str(tmp_path)]) == 2
    assert "class index 1001 is out of range" in capsys.readouterr().err
    assert main(["render", "--config", str(tiny_config), "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err


def test_several_worker_processes_share_one_queue(tiny_config, tmp_path):
    out = tmp_path / "mp"
    assert render(tiny_config, out, "--devices", "cpu,cpu", "--batch-size", "2") == 0
    assert_complete(out)
    assert done_events(out) == unit_count(out)
    events = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len({e["pid"] for e in events if e["event"] == "batch_end"}) == 1  # logged by the parent


def _store_files(out: Path) -> dict[str, bytes]:
    """Every rendered file of a store by path (meta.json, runs and claims aside: they hold times and devices)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix != ".json" and p.name != "runs.jsonl" and not p.name.endswith(".lock")}


def test_several_devices_fill_each_pass_and_match_one_device_bit_for_bit(tiny_config, tmp_path):
    # 64-px inputs and 2 crops: the CPU probe puts 25 objectives in a pass (maco.probe_batch_size)
    args = ["render", "--config", str(tiny_config), "--classes", "1-40", "--no-progress"]
    assert main([*args, "--store", str(tmp_path / "two"), "--devices", "cpu,cpu"]) == 0
    # Float reductions depend on the thread count, not on the scheduler: one device gets the threads each of two has
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        assert main([*args, "--store", str(tmp_path / "one"), "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    events = [json.loads(line) for line in (tmp_path / "two" / "runs.jsonl").read_text().splitlines()]
    passes = [e["batch_size"] for e in events if e["event"] == "batch_end" and e["kind"] != "craft"]
    assert max(passes) == 25 > 16, passes  # the old multi-process queue cut every pass at 16
    assert {e["device"] for e in events if e["event"] == "batch_end"} == {"cpu"}
    two, one = _store_files(tmp_path / "two"), _store_files(tmp_path / "one")
    assert len(one) > 40 and two.keys() == one.keys()
    assert [k for k in one if one[k] != two[k]] == []
    hashes = {m.class_index: [m.maco.settings_hash, m.craft.settings_hash, [c.maco.settings_hash for c in m.concepts]]
              for m in Store(tmp_path / "one").iter_meta_records("tiny")}
    assert hashes == {m.class_index: [m.maco.settings_hash, m.craft.settings_hash, [c.maco.settings_hash for c in m.concepts]]
                      for m in Store(tmp_path / "two").iter_meta_records("tiny")}


# ----------------------------------------------------------------------------- real processes


def _spawn(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "generator", "render", "--config", str(config), "--classes", CLASSES,
         "--out", str(out), "--no-progress", "--batch-size", "1", *extra],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_for_done_units(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if (out / "runs.jsonl").exists() and done_events(out) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"render ended early: {proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError("render made no progress")


@pytest.fixture
def slow_config(tmp_path, tiny_images) -> Path:
    """Enough steps that a render takes a few seconds, so it can be interrupted mid-way."""
    path = write_tiny_zoo(tmp_path / "zoo", images=tiny_images)
    path.write_text(path.read_text().replace("maco: {steps: 3,", "maco: {steps: 40,"))
    return path


def test_kill_9_then_resume_completes_without_redoing(slow_config, tmp_path):
    out = tmp_path / "k"
    proc = _spawn(slow_config, out)
    _wait_for_done_units(out, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {c: m for c, m in metas(out).items()}
    finished = {(c, part): m[part]["finished_at"] for c, m in before.items() for part in ("maco", "craft") if m.get(part)}
    assert finished, "nothing finished before the kill"
    resumed = _spawn(slow_config, out)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert_complete(out)
    after = metas(out)
    for (c, part), when in finished.items():
        assert after[c][part]["finished_at"] == when, f"{c}/{part} was redone"


def test_two_renders_at_once_share_the_store(slow_config, tmp_path):
    out = tmp_path / "c"
    a, b = _spawn(slow_config, out), _spawn(slow_config, out)
    assert a.wait(timeout=300) == 0, a.stdout.read()
    assert b.wait(timeout=300) == 0, b.stdout.read()
    assert_complete(out)
    assert done_events(out) == unit_count(out)  # each unit rendered once, by one of them


def test_ctrl_c_stops_after_the_current_batch(slow_config, tmp_path):
    out = tmp_path / "i"
    proc = _spawn(slow_config, out)
    _wait_for_done_units(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    output = proc.stdout.read()
    assert "stopping after the current batch" in output
    events = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "run_end" and events[-1]["stopped"] is True
    assert not [p for p in out.rglob("*") if ".tmp." in p.name or p.name.startswith(".claim.")]
    resumed = _spawn(slow_config, out)
    assert resumed.wait(timeout=300) == 0
    assert_complete(out)


# ----------------------------------------------------------------------------- faults stay in their unit

BROKEN = "  - {name: broken, arch: test_resnet, weights: {file: missing.safetensors}, input_size: 64}\n"
BAD_LAYER = "  - {name: badlayer, arch: test_resnet, weights: {file: tiny.safetensors}, input_size: 64, concept_layer: nope}\n"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_model_that_cannot_load_fails_its_units_once_and_the_others_go_on(tmp_path, tiny_images, capsys):
    config = write_tiny_zoo(tmp_path / "zoo", images=tiny_images, extra=BROKEN)
    out = tmp_path / "b"
    code, text = run_cli(capsys, "render", "--config", str(config), "--classes", "1,2", "--out", str(out), "--no-progress",
                         "--what", "maco")
    assert code == 1
    assert all(m["maco"]["status"] == "done" for m in metas(out).values())
    broken = {m["class_index"]: m for m in (r.to_json_obj() for r in Store(out).iter_meta_records("broken"))}
    assert sorted(broken) == [1, 2]
    for m in broken.values():
        assert m["maco"]["status"] == "failed" and m["maco"]["attempts"] == 1 and "missing.safetensors" in m["maco"]["error"]
    assert "failed broken/0001/maco and 1 more units of broken" in text and "Traceback" not in text


def test_what_maco_never_needs_the_concept_layer(tmp_path, tiny_images, capsys):
    config = write_tiny_zoo(tmp_path / "zoo", images=tiny_images, extra=BAD_LAYER)
    out = tmp_path / "l"
    common = ["--config", str(config), "--model", "badlayer", "--classes", "1", "--out", str(out), "--no-progress"]
    assert run_cli(capsys, "render", *common, "--what", "maco")[0] == 0
    code, text = run_cli(capsys, "render", *common)  # CRAFT needs the layer: only CRAFT fails, with the reason
    assert code == 1
    meta = next(r.to_json_obj() for r in Store(out).iter_meta_records("badlayer"))
    assert meta["maco"]["status"] == "done"
    assert meta["craft"]["status"] == "failed" and "concept_layer" in meta["craft"]["error"] and meta["craft"]["attempts"] == 1
    assert "Traceback" not in text


def test_corrupt_meta_is_moved_aside_and_rendered_again(tiny_config, tmp_path, capsys):
    out = tmp_path / "c"
    common = ["--config", str(tiny_config), "--classes", "1,2", "--out", str(out), "--no-progress", "--what", "maco"]
    assert run_cli(capsys, "render", *common)[0] == 0
    (out / "tiny" / "0001" / "meta.json").write_text("{ torn")
    (out / "tiny" / "0002" / "meta.json").write_text('{"schema": 2, "model": "tiny", "class_index": "two"}')
    code, text = run_cli(capsys, "status", *[a for a in common if a != "--no-progress"])  # status has no progress
    assert code == 1 and text.count("count as not done") == 2  # status reports; it moves nothing aside
    assert not list(out.rglob("meta.json.corrupt-*")) and (out / "tiny" / "0001" / "meta.json").read_text() == "{ torn"
    code, text = run_cli(capsys, "render", *common)
    assert code == 0 and "Traceback" not in text
    assert all(m["maco"]["status"] == "done" for m in metas(out).values()) and len(metas(out)) == 2
    assert len(list(out.rglob("meta.json.corrupt-*"))) == 2


def test_a_deleted_image_is_not_done_and_render_repairs_it(tiny_config, tmp_path, capsys):
    out = tmp_path / "d"
    common = ["--config", str(tiny_config), "--classes", "1", "--out", str(out), "--no-progress", "--what", "maco"]
    assert run_cli(capsys, "render", *common)[0] == 0
    image = out / "tiny" / "0001" / metas(out)[1]["maco"]["files"]["image"]
    image.unlink()
    status = [a for a in common if a != "--no-progress"]  # status has no progress options
    code, text = run_cli(capsys, "status", *status)
    assert code == 1 and "`lens render` repairs them" in text and image.name in text
    assert run_cli(capsys, "render", *common)[0] == 0
    assert image.is_file()
    assert run_cli(capsys, "status", *status)[0] == 0


def test_no_usable_image_is_its_own_state(tmp_path, capsys):
    from .conftest import write_class_folder

    images = write_class_folder(tmp_path / "imgs", classes=(1,))
    config = write_tiny_zoo(tmp_path / "zoo", images=images)
    out = tmp_path / "n"
    code, text = run_cli(capsys, "render", "--config", str(config), "--classes", "1,3", "--out", str(out), "--no-progress",
                         "--what", "craft")
    assert code == 0  # neither done nor failed
    m = metas(out)
    assert m[3]["craft"]["status"] == "no-images" and m[3]["craft"]["n_images"] == 0 and m[3]["concepts"] == []
    assert m[1]["craft"]["status"] == "done"
    assert "no usable image for 1 classes" in text and "images:" in text
    code, text = run_cli(capsys, "render", "--config", str(config), "--classes", "3", "--out", str(out), "--no-progress",
                         "--what", "craft")
    assert code == 0 and "0 done, 0 failed, 0 without images" in text  # final for these images: not retried
    assert done_events(out) == 1 + len(m[1]["concepts"])


def test_full_disk_is_one_line_exit_2_and_loses_nothing(tiny_config, tmp_path, capsys, monkeypatch):
    from generator import store as store_mod

    out = tmp_path / "f"
    common = ["--config", str(tiny_config), "--classes", "1-3", "--out", str(out), "--no-progress", "--what", "maco"]
    assert run_cli(capsys, "render", *common, "--classes", "1")[0] == 0
    before = (out / "tiny" / "0001" / "meta.json").read_bytes()
    real = store_mod._atomic_write_bytes

    def full(path, data, fsync):
        if path.suffix == ".png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, fsync)

    monkeypatch.setattr(store_mod, "_atomic_write_bytes", full)
    code, text = run_cli(capsys, "render", *common, "--steps", "4")
    assert code == 2
    errors = [line for line in text.splitlines() if "error" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in text
    assert (out / "tiny" / "0001" / "meta.json").read_bytes() == before
    assert not Store(out).leftovers()


def test_units_held_by_a_live_run_elsewhere_are_reported_undone(tiny_config, tmp_path, capsys, monkeypatch):
    from generator import store as store_mod
    from generator import workers
    from generator.records import Unit

    monkeypatch.setattr(workers.schedule, "WAIT_FOR_CLAIMS_S", 0.5)
    out = tmp_path / "u"
    path = Store(out)._claim_path(Unit("tiny", 2, "maco"))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "started": time.time()}))
    code, text = run_cli(capsys, "render", "--config", str(tiny_config), "--classes", "1,2", "--out", str(out),
                         "--no-progress", "--what", "maco")
    assert code == 1 and "1 selected units are not done (e.g. tiny/0002/maco)" in text
    old = time.time() - store_mod.CLAIM_TTL_S - 5  # the other node died: its claim expires, a re-run finishes
    os.utime(path, (old, old))
    assert run_cli(capsys, "render", "--config", str(tiny_config), "--classes", "1,2", "--out", str(out),
                   "--no-progress", "--what", "maco")[0] == 0


def test_second_ctrl_c_exits_130_without_traceback(slow_config, tmp_path):
    out = tmp_path / "cc"
    # MACO only, long renders: both Ctrl-Cs land inside one batch (with 40 steps the first stop could end the
    # run before the second arrived, which then hit the exiting interpreter)
    proc = _spawn(slow_config, out, "--what", "maco", "--steps", "400")
    _wait_for_done_units(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    output = proc.stdout.read()
    assert "Traceback" not in output and "interrupted" in output
    assert not Store(out).leftovers()


def test_a_render_loads_the_zoo_and_the_spectrum_once(tiny_config, tmp_path, monkeypatch):
    from generator import cli, spectrum

    calls = {"zoo": 0, "spectrum": 0}
    real_zoo, real_spectrum = cli.load_zoo, spectrum.resolve_spectrum

    def counted(key, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(cli, "load_zoo", counted("zoo", real_zoo))
    monkeypatch.setattr(spectrum, "resolve_spectrum", counted("spectrum", real_spectrum))
    assert render(tiny_config, tmp_path / "once", "--what", "maco") == 0
    assert calls == {"zoo": 1, "spectrum": 1}


def test_a_shard_says_how_much_of_the_selection_it_holds(tiny_config, tmp_path, capsys):
    empty = next(k for k in range(4) if not any(in_shard("tiny", c, (k, 4)) for c in (1, 2, 3)))
    full = next(k for k in range(4) if any(in_shard("tiny", c, (k, 4)) for c in (1, 2, 3)))
    code, text = run_cli(capsys, "render", "--config", str(tiny_config), "--classes", "1-3", "--store", str(tmp_path / "s"),
                         "--no-progress", "--what", "maco", "--shard", f"{empty}/4")
    assert code == 0 and f"shard {empty}/4: 0 of 3 (class, model) pairs, 0 units to do" in text
    held = sum(in_shard("tiny", c, (full, 4)) for c in (1, 2, 3))
    code, text = run_cli(capsys, "render", "--config", str(tiny_config), "--classes", "1-3", "--store", str(tmp_path / "s"),
                         "--no-progress", "--what", "maco", "--shard", f"{full}/4")
    assert code == 0 and f"shard {full}/4: {held} of 3 (class, model) pairs, {held} units to do" in text


def test_concept_directions_are_opened_through_the_stores_path_check(tiny_config, tmp_path, monkeypatch):
    """A directions file that is a link leading outside the store is never opened: its concept unit
    fails with one line naming the meta.json, and the other classes' concept objectives are built."""
    from generator import sidefiles
    from generator.records import Unit
    from generator.store import UnsafePath
    from generator.workers.worker import Worker

    out = tmp_path / "s"
    assert render(tiny_config, out, "--what", "craft") == 0
    store = Store(out)
    rel = store.meta("tiny", 1).craft.files["directions"]
    outside = tmp_path / "outside.npy"
    outside.write_bytes((out / "tiny" / "0001" / rel).read_bytes())  # readable: opening it would build an objective
    (out / "tiny" / "0001" / rel).unlink()
    (out / "tiny" / "0001" / rel).symlink_to(outside)
    opened = []
    real_load = sidefiles.np.load
    monkeypatch.setattr(sidefiles.np, "load", lambda path, **kw: opened.append(os.path.realpath(path)) or real_load(path, **kw))
    worker = Worker.__new__(Worker)  # _objective needs only the store
    worker.store = store
    with pytest.raises(UnsafePath, match=r"0001/meta\.json: .*link that leads outside the store"):
        worker._objective(Unit("tiny", 1, "concept", 0), None)
    objective = worker._objective(Unit("tiny", 2, "concept", 0), None)  # the rest goes on
    assert objective.direction is not None
    assert os.path.realpath(outside) not in opened and len(opened) == 1
