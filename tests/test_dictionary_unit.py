"""The model-wide dictionary as a unit of work (`generator/workers/dictionary_unit.py`), on the tiny random zoo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from generator.cli import main
from generator.workers import dictionary_unit
from tests.conftest import write_dictionary_zoo
from tests.rendering import done_events, render

SMALL = "{atoms: 16, k: 2, epochs: 3, batch_size: 64, tokens_per_image: 8, max_images: 4}"


@pytest.fixture()
def config(tmp_path, tiny_images):
    return write_dictionary_zoo(tmp_path / "zoo", tiny_images, SMALL)


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
    shown = len(json.loads((out / "tiny" / r["files"]["atlas"]).read_text())["atoms"] and
                [a for a in json.loads((out / "tiny" / r["files"]["atlas"]).read_text())["atoms"] if a["shown"]])
    assert shown and done_events(out) == 1 + shown  # the dictionary, then its shown atoms' visualizations
    assert render(config, out, "--what", "dictionary") == 0
    assert done_events(out) == 1 + shown  # skipped: done with these settings
    assert render(config, out, "--what", "dictionary", "--force") == 0
    assert done_events(out) == 2 * (1 + shown) and record(out)["settings_hash"] == r["settings_hash"]  # all again
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


def atoms_of(out):
    from generator.store import Store, atlas_record, atom_macos

    return atlas_record(Store(out), "tiny").shown, atom_macos(Store(out), "tiny")


def test_atom_visualizations_follow_the_dictionary_and_count_in_status(config, tmp_path, capsys):
    out = tmp_path / "store"
    capsys.readouterr()
    assert main(["render", "--config", str(config), "--classes", "1-3", "--store", str(out), "--what", "dictionary",
                 "--dry-run"]) == 0
    assert "atom visualizations: at most 15" in capsys.readouterr().out  # 5 per class, 16 atoms
    assert render(config, out, "--what", "dictionary") == 0
    shown, macos = atoms_of(out)
    assert sorted(int(k) for k in macos.atoms) == shown and {m.status for m in macos.atoms.values()} == {"done"}
    from PIL import Image

    for entry in macos.atoms.values():
        with Image.open(out / "tiny" / entry.image) as im, Image.open(out / "tiny" / entry.alpha) as alpha:
            assert im.size == alpha.size == (64, 64) and im.mode == "RGB"  # WebP has no grey mode: alpha is grey RGB
            grey = np.asarray(alpha)
            assert (grey[..., 0] == grey[..., 2]).all() and grey.max() > 0
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--classes", "1-3", "--store", str(out), "--what", "dictionary", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["models"]["tiny"]
    assert counts["atom"]["done"] == len(shown) and counts["dictionary"]["done"] == 1
    assert not [p for p in out.rglob(".claim.*")]


def test_dictionary_visualize_limits_the_atom_visualizations_and_is_recorded(tmp_path, tiny_images):
    """`visualize: 1`: only the atoms first in some class get a MACO, and macos.json records the limit
    (the site then says "not visualized" for the other shown atoms, not "not rendered yet")."""
    config = write_dictionary_zoo(tmp_path / "zoo", tiny_images, SMALL.replace("}", ", visualize: 1}"))
    out = tmp_path / "store"
    assert render(config, out, "--what", "dictionary") == 0
    from generator.store import Store, atlas_record

    firsts = {c.top[0].atom for c in atlas_record(Store(out), "tiny").classes.values()}
    shown, macos = atoms_of(out)
    assert macos.visualize == 1 and {int(k) for k in macos.atoms} == firsts and len(firsts) < len(shown)


def test_a_failing_atom_visualization_is_recorded_and_the_others_finish(config, tmp_path, monkeypatch, capsys):
    from generator import maco

    real = maco.atom_objective
    broken: list[int] = []

    def objective(atom, row):
        if not broken:
            broken.append(atom)
        if atom == broken[0]:
            raise RuntimeError("broken atom")
        return real(atom, row)

    monkeypatch.setattr(maco, "atom_objective", objective)
    out = tmp_path / "store"
    assert render(config, out, "--what", "dictionary") == 1
    shown, macos = atoms_of(out)
    assert macos.atoms[str(broken[0])].status == "failed" and "broken atom" in macos.atoms[str(broken[0])].error
    assert all(m.status == "done" for k, m in macos.atoms.items() if k != str(broken[0])) and len(macos.atoms) == len(shown)
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--classes", "1-3", "--store", str(out), "--what", "dictionary"]) == 1
    assert f"tiny/dictionary/atom-{broken[0]:04d}: RuntimeError: broken atom" in capsys.readouterr().out
    monkeypatch.setattr(maco, "atom_objective", real)
    assert render(config, out, "--what", "dictionary") == 0  # retried by the next run
    assert atoms_of(out)[1].atoms[str(broken[0])].status == "done"


def test_atom_visualizations_do_not_depend_on_the_batch(config, tmp_path):
    one, many = tmp_path / "one", tmp_path / "many"
    assert render(config, one, "--what", "dictionary", "--batch-size", "1") == 0
    assert render(config, many, "--what", "dictionary", "--batch-size", "8") == 0
    (shown, a), (_, b) = atoms_of(one), atoms_of(many)
    assert len(shown) > 1 and a.atoms.keys() == b.atoms.keys()
    for k, entry in a.atoms.items():
        assert (one / "tiny" / entry.image).read_bytes() == (many / "tiny" / b.atoms[k].image).read_bytes()
        assert (one / "tiny" / entry.alpha).read_bytes() == (many / "tiny" / b.atoms[k].alpha).read_bytes()
