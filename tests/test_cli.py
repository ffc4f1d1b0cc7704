"""The `lens` command line (generator/cli.py): one meaning per option, help texts, config discovery,
`lens init`, class names, --what, --dry-run, --force, deprecated spellings and periodic progress lines."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from generator.cli import build_parser, main
from generator.progress import LogBar

from .conftest import REPO

# What each shared option names, in every command that has it.
MEANING = {"--config": "config", "--store": "store", "--site": "site", "--models": "models", "--classes": "classes",
           "--output": "output", "--what": "what", "--images": "images", "--device": "device", "--no-progress": "no_progress"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_has_help_and_one_meaning():
    seen: dict[str, set[str]] = {}
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            hidden = action.help == argparse.SUPPRESS
            assert hidden or (action.help and action.help.strip()), f"lens {name} {action.option_strings}: no help text"
            if not hidden:
                for opt in action.option_strings:
                    seen.setdefault(opt, set()).add(action.dest)
    for opt, dests in seen.items():
        assert len(dests) == 1, f"{opt} means {dests} in different commands"
    for opt, dest in MEANING.items():
        assert seen[opt] == {dest}, opt
    # the store and the site folder are named alike wherever they appear
    subs = _subparsers()
    for name in ("render", "build", "quality", "status", "site", "figure", "spectrum"):
        assert "--store" in subs[name]._option_string_actions, name
    for name in ("build", "site", "serve"):
        assert "--site" in subs[name]._option_string_actions, name


def test_what_choices_are_honest(tiny_config, tmp_path, capsys):
    subs = _subparsers()
    help_text = subs["render"].format_help()
    assert "maco,craft" in help_text and "both" in help_text
    base = ["--config", str(tiny_config), "--store", str(tmp_path / "s"), "--classes", "1", "--dry-run"]
    for what in ("maco", "craft", "maco,craft", "craft, maco", "both"):
        assert main(["render", *base, "--what", what]) == 0, what
    with pytest.raises(SystemExit) as e:
        main(["render", *base, "--what", "all"])
    assert e.value.code == 2
    assert "choose maco, craft or maco,craft" in capsys.readouterr().err


def test_classes_by_name_and_a_clear_error_for_ambiguous_ones(tiny_config, tmp_path, capsys):
    base = ["render", "--config", str(tiny_config), "--store", str(tmp_path / "s"), "--dry-run", "--what", "maco"]
    assert main([*base, "--classes", "espresso,tabby"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == ["tiny", "0", "2", "0"]  # two class visualizations
    assert main([*base, "--classes", "crane"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "lens: error: class name 'crane' is ambiguous: 134 (crane), 517 (crane); give the index instead"


def test_dry_run_lists_units_and_a_time_estimate_and_writes_nothing(tiny_config, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["render", "--config", str(tiny_config), "--store", str(store), "--classes", "1-3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    header, row, total = out.splitlines()[:3]
    assert header.split()[:4] == ["model", "craft", "maco", "concept"]
    assert row.split()[:5] == ["tiny", "3", "3", "9", "2"]  # 3 CRAFT classes, 3 class MACOs, rank 3 concepts, 2 photos each
    assert "~" in row and "estimate from the model's FLOPs" in row
    assert total.startswith("total: ~") and "nothing was rendered" in total and "the store grows by about" in total
    assert not store.exists()


def test_dry_run_scales_with_photos_and_labels_a_gpu_figure_an_estimate(tiny_config, tmp_path, capsys):
    from .conftest import write_class_folder

    def craft_row(images, *extra):  # noqa: ANN001, ANN002, ANN202
        capsys.readouterr()
        assert main(["render", "--config", str(tiny_config), "--store", str(tmp_path / "s"), "--classes", "1-3",
                     "--what", "craft", "--images", str(images), "--dry-run", *extra]) == 0
        return capsys.readouterr().out.splitlines()

    few = craft_row(write_class_folder(tmp_path / "few", per_class=2))
    many = craft_row(write_class_folder(tmp_path / "many", per_class=20))
    assert few[1].split()[4] == "2" and many[1].split()[4] == "20"
    from generator.plan import Request, resolve
    from generator.runopts import CRAFT_FIXED_S, _rough

    [plan] = resolve(Request(config=tiny_config, out=tmp_path / "s", models=["tiny"], classes=[1, 2, 3],
                             parts=frozenset({"craft"}), spectrum="powerlaw"), cache_spectrum=False).plans
    few_s, many_s = (_rough(plan, n, gpu=False)[1] - CRAFT_FIXED_S for n in (2, 20))
    assert many_s == pytest.approx(10 * few_s) and few_s > 0  # CRAFT's forward passes follow the photos
    gpu = craft_row(tmp_path / "few", "--device", "cuda")
    assert "time on one GPU" in gpu[0] and "assumed 30 TFLOP/s" in gpu[-1] and "render 8 classes first" in gpu[-1]


def test_force_re_renders_and_estimates_from_measured_units(tiny_config, tmp_path, capsys):
    store = tmp_path / "store"
    args = ["render", "--config", str(tiny_config), "--store", str(store), "--classes", "1", "--what", "maco", "--no-progress"]
    assert main(args) == 0
    first = json.loads((store / "tiny" / "0001" / "meta.json").read_text())["maco"]
    capsys.readouterr()
    assert main(args) == 0
    assert "0 done" in capsys.readouterr().err  # already there: skipped
    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:4] == ["tiny", "0", "0", "0"]
    assert main([*args, "--force", "--dry-run"]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.split()[:3] == ["tiny", "0", "1"] and "measured: 1 units in the store" in row
    assert main([*args, "--force"]) == 0
    err = capsys.readouterr().err
    assert "--force: 1 parts marked" in err and "1 done" in err
    second = json.loads((store / "tiny" / "0001" / "meta.json").read_text())["maco"]
    assert second["settings_hash"] == first["settings_hash"] and second["finished_at"] >= first["finished_at"]
    assert main(args) == 0  # a plain run after a forced one has nothing to do
    assert "0 done" in capsys.readouterr().err


def test_no_progress_prints_periodic_progress_lines(tiny_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LENS_PROGRESS_EVERY", "0")
    store = tmp_path / "store"
    assert main(["render", "--config", str(tiny_config), "--store", str(store), "--classes", "1,2", "--what", "maco",
                 "--no-progress"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("lens: progress tiny: ")]
    assert lines and lines[-1].startswith("lens: progress tiny: 2.0/2 units (100%)")
    assert "units/s" in lines[-1] and "ETA" in lines[-1]


def test_log_bar_prints_at_its_interval_and_once_at_close():
    now = [0.0]
    out = io.StringIO()
    bar = LogBar("m", 10, every_s=60, file=out, clock=lambda: now[0])
    for _ in range(5):
        now[0] += 20
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lens: progress m: 3.0/10 units (30%), 0.05 units/s, elapsed 1m00s, ETA 2m20s")
    bar.close()
    bar.close()
    assert len(out.getvalue().splitlines()) == 2 and "5.0/10 units (50%)" in out.getvalue().splitlines()[-1]


def test_config_discovery_init_and_which_config_is_used(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert "lens: config: the embedded default zoo" in err and f"relative to {tmp_path}" in err
    assert main(["init"]) == 0
    written = (tmp_path / "models.yaml").read_text()
    assert written == (REPO / "models.yaml").read_text()  # the embedded zoo, with its comments
    assert written.lstrip().startswith("#")
    capsys.readouterr()
    assert main(["init"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["init", "--force"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert f"lens: config: {tmp_path / 'models.yaml'}\n" in capsys.readouterr().err
    assert main(["init", "sub/project"]) == 0 and (tmp_path / "sub" / "project" / "models.yaml").is_file()
    capsys.readouterr()
    assert main(["models", "--config", "sub/project"]) == 0  # a folder holding a models.yaml
    assert "sub/project/models.yaml" in capsys.readouterr().err


def test_embedded_zoo_writes_in_the_current_folder_not_the_checkout(tmp_path, monkeypatch, capsys, tiny_images):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in REPO.iterdir())
    assert main(["render", "--classes", "967", "--dry-run", "--models", "efficientnet-lite0"]) == 0
    assert "config: the embedded default zoo" in capsys.readouterr().err
    assert main(["spectrum", "--images", str(tiny_images)]) == 0
    saved = list((tmp_path / "artifacts" / "spectra").glob("*.npy"))  # the store of the current folder
    assert len(saved) == 1 and str(saved[0].relative_to(tmp_path)) in capsys.readouterr().out
    assert sorted(p.name for p in REPO.iterdir()) == before


def test_deprecated_spellings_still_work_and_the_ambiguous_one_is_refused(tiny_config, tmp_path, capsys):
    assert main(["render", "--config", str(tiny_config), "--out", str(tmp_path / "s"), "--model", "tiny", "--classes", "1",
                 "--dry-run"]) == 0
    assert "lens: --out is deprecated; use --store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["site", "--config", str(tiny_config), "--out", str(tmp_path / "site")])
    assert e.value.code == 2
    assert "--out was removed here: use --site DIR for the site folder" in capsys.readouterr().err
    args = build_parser().parse_args(["build", "--site-out", "x", "--artifacts", "y"])
    assert (str(args.site), str(args.store)) == ("x", "y")
    assert str(build_parser().parse_args(["serve", "--dir", "z"]).site) == "z"
