"""The model-wide dictionary as a unit of work (`generator/workers/dictionary_unit.py`), on the tiny random zoo."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from generator.cli import main
from generator.workers import dictionary_unit
from tests.conftest import write_tiny_zoo
from tests.rendering import done_events, render

SMALL = "  dictionary: {atoms: 16, k: 2, epochs: 3, batch_size: 64, tokens_per_image: 8, max_images: 4}\n"


@pytest.fixture()
def config(tmp_path, tiny_images):
    path = write_tiny_zoo(tmp_path / "zoo", images=tiny_images)
    path.write_text(path.read_text().replace("defaults:\n", "defaults:\n" + SMALL))
    return path


def record(out):
    return json.loads((out / "tiny" / "dictionary.json").read_text())


def test_render_dictionary_records_it_and_a_second_run_skips_it(config, tmp_path, capsys):
    out = tmp_path / "store"
    assert render(config, out, "--what", "dictionary") == 0
    r = record(out)
    assert r["status"] == "done" and r["n_images"] == 6
    assert r["n_tokens"] + r["n_heldout"] == 6 * 4  # 2x2 tokens per photo, all of them (fewer than 8)
    assert 0 <= r["dead_fraction"] <= 1 and r["l0"] <= 2 and r["epochs"] == 3 and r["resumed_from"] == 0
    atoms = load_file(out / "tiny" / r["files"]["atoms"])
    assert atoms["D"].shape[0] == 16 and atoms["frequency"].shape == (16,)
    assert not list((out / "tiny" / "dictionary").glob("checkpoint.*"))  # removed once done
    assert not (out / "tiny" / "0001").exists()  # --what dictionary renders no class unit
    assert render(config, out, "--what", "dictionary") == 0
    assert done_events(out) == 1  # skipped: done with these settings
    assert render(config, out, "--what", "dictionary", "--force") == 0
    assert done_events(out) == 2 and record(out)["settings_hash"] == r["settings_hash"]  # trained again
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--classes", "1-3", "--store", str(out), "--what", "dictionary"]) == 0
    assert "dictionary" in capsys.readouterr().out


def test_changed_settings_make_it_stale(config, tmp_path, capsys):
    out = tmp_path / "store"
    assert render(config, out, "--what", "dictionary") == 0
    config.write_text(config.read_text().replace("epochs: 3", "epochs: 2"))
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--classes", "1-3", "--store", str(out), "--what", "dictionary", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["models"]["tiny"]["dictionary"]["stale"] == 1
    assert main(["render", "--config", str(config), "--classes", "1-3", "--store", str(out), "--what", "dictionary",
                 "--dry-run"]) == 0
    assert "tiny" in (text := capsys.readouterr().out) and "dictionary: ~" in text and "estimate from FLOPs" in text
    assert render(config, out, "--what", "dictionary") == 0
    assert record(out)["epochs"] == 2


class Killed(Exception):
    pass


def test_an_interrupted_training_resumes_from_its_checkpoint_and_equals_an_uninterrupted_run(config, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    assert render(config, plain, "--what", "dictionary") == 0
    train = dictionary_unit.train_sae

    def killed_after_one_epoch(*args, **kwargs):
        def on_epoch(epoch, loss):
            raise Killed(f"killed after epoch {epoch}")
        return train(*args, **{**kwargs, "on_epoch": on_epoch})

    out = tmp_path / "store"
    monkeypatch.setattr(dictionary_unit, "train_sae", killed_after_one_epoch)
    assert render(config, out, "--what", "dictionary") == 1
    assert record(out)["status"] == "failed" and "killed after epoch 1" in record(out)["error"]
    assert len(list((out / "tiny" / "dictionary").glob("checkpoint.*.pt"))) == 1
    monkeypatch.setattr(dictionary_unit, "train_sae", train)
    assert render(config, out, "--what", "dictionary") == 0
    assert record(out)["resumed_from"] == 1
    a, b = load_file(plain / "tiny" / record(plain)["files"]["atoms"]), load_file(out / "tiny" / record(out)["files"]["atoms"])
    assert all((a[k] == b[k]).all() for k in a)


def test_a_failing_dictionary_is_recorded_failed_and_the_maco_units_still_render(config, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("broken SAE")

    monkeypatch.setattr(dictionary_unit, "train_sae", broken)
    out = tmp_path / "store"
    assert render(config, out, "--what", "maco,craft,dictionary") == 1
    assert record(out)["status"] == "failed" and record(out)["error"] == "RuntimeError: broken SAE"
    for c in (1, 2, 3):
        assert json.loads((out / "tiny" / f"{c:04d}" / "meta.json").read_text())["maco"]["status"] == "done"


def test_a_stop_request_ends_training_after_the_epoch_and_records_nothing(config, tmp_path, tiny_images):
    from generator.plan import RenderJob, Request, dictionary_state, parse_parts, resolve
    from generator.store import Store

    out = tmp_path / "store"
    resolved = resolve(Request(config=config, out=out, models=["tiny"], classes=[1, 2, 3], parts=parse_parts("dictionary"),
                               images=tiny_images))
    worker = dictionary_unit.Worker(RenderJob(resolved, progress=False), "cpu")
    try:
        outcome = dictionary_unit.run_dictionary(worker, resolved.plans[0], stopped=lambda: True)
    finally:
        worker.writer.close()
    assert outcome.status == "skipped" and "resumes" in outcome.error
    assert dictionary_state(Store(out), resolved.plans[0]) == "pending"
    assert len(list((out / "tiny" / "dictionary").glob("checkpoint.*.pt"))) == 1
