"""scripts/lens-array.sbatch: every `lens` call it makes parses with the real CLI (the publish step
gets no render-only option), srun gets the task's CPUs, empty SELECT/RENDER_ARGS work under
`set -u` in a way bash 4.2 accepts too, and the script passes `bash -n` and shellcheck."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest

from generator.cli import build_parser

from .conftest import REPO

SCRIPT = REPO / "scripts" / "lens-array.sbatch"


def _fake_cluster(tmp_path):
    """LENS_DIR with a .venv whose `lens` and an `srun` on PATH only log their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "lens").write_text(f'#!/bin/bash\nprintf "lens" >> {log}; printf " %q" "$@" >> {log}; echo >> {log}\n')
    (bin_dir / "srun").write_text(f'#!/bin/bash\nprintf "srun" >> {log}; printf " %q" "$@" >> {log}; echo >> {log}\n'
                                  'while [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    venv = tmp_path / "lens" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    return tmp_path / "lens", log


def _run(tmp_path, **env):
    lens_dir, log = _fake_cluster(tmp_path)
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LENS_DIR": str(lens_dir), "STORE": "/shared/store",
            "SLURM_CPUS_PER_TASK": "8", **env}
    done = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in log.read_text().splitlines()]


def _parses(argv: list[str]) -> None:
    build_parser().parse_args(argv)  # SystemExit (a failed test) on any option the command does not take


ARRAY = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"}


def test_render_step_gets_its_options_the_shard_and_the_cpus(tmp_path):
    calls = _run(tmp_path, SELECT="--models efficientnet-lite0 --classes 0-9 --steps 64",
                 RENDER_ARGS="--what maco --batch-size 16", **ARRAY)
    [srun, lens] = calls
    assert srun[:2] == ["srun", "--cpus-per-task=8"]
    assert lens[:2] == ["lens", "render"] and lens[-3:] == ["--shard", "3/8", "--no-progress"]
    assert lens[2:6] == ["--config", f"{tmp_path}/lens/models.yaml", "--store", "/shared/store"]
    assert "--batch-size" in lens and "--steps" in lens
    _parses(lens[1:])


def test_publish_step_gives_each_command_only_options_it_takes(tmp_path):
    calls = _run(tmp_path, SELECT="--models efficientnet-lite0 --classes 0-9 --steps 64",
                 RENDER_ARGS="--what maco --batch-size 16 --retries 1", LENS_STEP="publish")
    assert [c[1] for c in calls] == ["status", "quality", "site"]
    for call in calls:
        assert not {"--batch-size", "--retries", "--what", "--shard"} & set(call)
        _parses(call[1:])
    assert calls[2][2:] == ["--config", f"{tmp_path}/lens/models.yaml", "--store", "/shared/store", "--site", "/shared/site",
                            "--no-progress"]


@pytest.mark.parametrize("step", ["render", "publish"])
def test_empty_selection_works_under_set_u(tmp_path, step):
    env = {"LENS_STEP": step, **ARRAY} if step == "publish" else ARRAY
    calls = _run(tmp_path, **env)
    for call in calls:
        if call[0] == "lens":
            _parses(call[1:])
    # bash < 4.4 treats "${a[@]}" of an empty array as unbound under set -u: only ${a[@]+"${a[@]}"} is safe there.
    text = SCRIPT.read_text()
    for name in ("SELECT_ARGS", "RENDER_EXTRA"):
        uses = re.findall(r'(.)"\$\{' + name + r'\[@\]\}"', text)
        assert uses and all(prefix == "+" for prefix in uses), name


def test_script_passes_bash_n_and_shellcheck():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck); bash -n passed")
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
