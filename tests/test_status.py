"""`lens status`: states per model and part (stale, missing, no-images...), the store and config it reads, --json."""

from __future__ import annotations

import json

from generator.cli import main

from .conftest import write_tiny_zoo


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    """`lens status --json`: the report is stdout alone (stderr names the config)."""
    capsys.readouterr()
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_status_names_store_and_config_and_counts_work_under_other_settings(tiny_config, tmp_path, capsys):
    out = tmp_path / "s"
    common = ["--config", str(tiny_config), "--classes", "1,2", "--store", str(out), "--what", "maco"]
    code, text = run_cli(capsys, "status", *common)
    assert code == 1 and f"store {out}, config {tiny_config}" in text  # nothing rendered yet
    assert run_cli(capsys, "render", "--no-progress", *common, "--classes", "1")[0] == 0
    code, text = run_cli(capsys, "status", *common, "--steps", "5")
    assert code == 1
    assert "stale: done with other settings (1 units)" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("tiny "))
    assert row == ["tiny", "maco", "0", "1", "1", "0", "0", "0"]  # done pending stale missing failed no-images
    code, report = run_json(capsys, "status", *common)
    assert report["store"] == str(out) and report["config"] == str(tiny_config)
    assert report["models"]["tiny"]["maco"]["done"] == 1 and report["models"]["tiny"]["maco"]["pending"] == 1
    assert report["totals"]["stale"] == 0 and report["all_done"] is False and code == 1
    assert run_cli(capsys, "status", *common, "--classes", "1")[0] == 0  # everything selected is done


def test_status_json_lists_failures_problems_and_no_images(tmp_path, capsys):
    from .conftest import write_class_folder

    images = write_class_folder(tmp_path / "imgs", classes=(1,))
    config = write_tiny_zoo(tmp_path / "zoo", images=images,
                            extra="  - {name: broken, arch: test_resnet, weights: {file: gone.safetensors}}\n")
    out = tmp_path / "j"
    common = ["--config", str(config), "--classes", "3", "--store", str(out), "--what", "craft"]
    assert run_cli(capsys, "render", "--no-progress", *common)[0] == 1
    (out / "broken" / "0004").mkdir(parents=True)
    (out / "broken" / "0004" / "meta.json").write_text("[]")
    code, report = run_json(capsys, "status", *common, "--classes", "3,4")
    assert code == 1
    assert report["models"]["tiny"]["craft"]["no-images"] == 1
    assert report["models"]["broken"]["craft"]["failed"] == 1 and "gone.safetensors" in report["failures"][0]["error"]
    assert report["failures"][0]["unit"] == "broken/0003/craft"
    assert len(report["problems"]) == 1 and "count as not done" in report["problems"][0]
    assert (out / "broken" / "0004" / "meta.json").read_text() == "[]"  # a report moves nothing aside


def test_status_names_the_other_settings_and_settings_last_reuses_them(tmp_path, capsys):
    config = write_tiny_zoo(tmp_path / "zoo")
    small = "  small:\n    classes: 1,2\n    maco: {steps: 2, image_size: 48}\n"
    config.write_text(config.read_text().replace("  quick:\n    classes: 1,2,3\n", "  quick:\n    classes: 1,2,3\n" + small))
    out = tmp_path / "s"
    common = ["--config", str(config), "--classes", "1,2", "--store", str(out), "--what", "maco"]
    assert run_cli(capsys, "render", "--no-progress", *common, "--steps", "2", "--image-size", "48")[0] == 0
    code, text = run_cli(capsys, "status", *common)
    assert code == 1 and "2 units done with steps=2, image_size=48" in text
    assert "only under other settings: `--settings last`" in text and "--preset small, which has them" in text
    code, report = run_json(capsys, "status", *common)
    assert report["other_settings"] == [{"settings": "steps=2, image_size=48", "units": 2}]
    code, text = run_cli(capsys, "status", *common, "--settings", "last")
    assert code == 0 and "--settings last: steps=2, image_size=48" in text and "stale: done" not in text
    assert run_cli(capsys, "status", *common, "--settings", "last", "--steps", "3")[0] == 1  # a flag still wins
    code, text = run_cli(capsys, "render", "--no-progress", *common, "--settings", "last")
    assert code == 0 and "0 done" in text  # nothing to re-render


def test_settings_last_on_an_empty_store_is_one_line(tiny_config, tmp_path, capsys):
    code, text = run_cli(capsys, "status", "--config", str(tiny_config), "--store", str(tmp_path / "none"),
                         "--settings", "last")
    assert code == 2 and "--settings last: the store" in text and "holds no finished render of tiny" in text
