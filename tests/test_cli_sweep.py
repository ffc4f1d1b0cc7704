"""Every command x every numeric and path flag x hostile values: exit 0, 1 or 2, never a traceback.

The commands and flags come from the argparse parser itself (`generator.cli.build_parser`), so the
sweep grows with the CLI: a new command or flag is swept without editing this file. Each command
runs in-process on a tiny synthetic store and the tiny random zoo: renders are `--dry-run`, the site
shares one build cache (MkDocs runs once), and `lens serve` binds its port but does not serve.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import io
import itertools
import json
import shutil
import signal
import traceback
from pathlib import Path

import pytest
import yaml

from benchmarks.synthetic_store import write_synthetic_store
from generator.cli import build_parser, main, path_arg
from generator.site import shell

from .conftest import write_tiny_zoo

NUMBERS = {int: ("0", "-1", "nan", "99999999999999999999"), float: ("0", "-1", "nan", "1e308")}
PATH_VALUES = ("", "file", "folder", "missing", "read-only")


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def swept_flags(parser: argparse.ArgumentParser) -> list[tuple[str | None, str, type]]:
    """(option or None for a positional, dest, type) of every numeric and path argument a user sees."""
    out = []
    for a in parser._actions:
        kind = Path if a.type in (Path, path_arg) else a.type
        if a.help == argparse.SUPPRESS or kind not in (int, float, Path):
            continue  # old spellings share the dest of the option they stand for
        out.append((a.option_strings[0] if a.option_strings else None, a.dest, kind))
    return out


class World:
    """The shared inputs: a tiny zoo, its images, a synthetic store, a built site and its cache."""

    def __init__(self, root: Path):
        self.root = root
        self.images = root / "imagenet"
        from .conftest import write_class_folder

        write_class_folder(self.images)
        self.photos = root / "photos"  # one photo: `lens spectrum` reads every image it is given
        write_class_folder(self.photos, classes=(1,), per_class=1)
        self.config = write_tiny_zoo(root / "zoo", images=self.images)
        self.store = root / "zoo" / "artifacts"
        write_synthetic_store(self.store, [1], ["tiny"], concepts=2, crops=2, attributions=1, link=False)
        self.cache = root / "cache"
        self.site = root / "site"
        assert main(["site", "--config", str(self.config), "--site", str(self.site), "--cache", str(self.cache),
                     "--no-progress"]) == 0
        self.runs = itertools.count()

    def base(self, command: str, run: Path) -> list[str]:
        """A valid invocation of the command: (option, value) pairs, positionals as (None, value)."""
        cfg, store = ("--config", str(self.config)), ("--store", str(self.store))
        site = [("--site", str(run / "site")), ("--cache", str(self.cache)), ("--no-progress", None)]
        common = [cfg, store, ("--classes", "1")]
        return {
            "init": [(None, str(run / "init"))],
            "render": [*common, ("--dry-run", None), ("--no-progress", None)],
            "build": [*common, ("--dry-run", None), ("--no-progress", None), *site],
            "quality": [*common, ("--no-progress", None)],
            "status": common,
            "figure": [*common, ("--output", str(run / "fig"))],
            "models": [cfg],
            "layers": [(None, "tiny"), cfg, ("--samples", "2")],
            "spectrum": [("--images", str(self.photos)), cfg, ("--output", str(run / "spectrum.npy"))],
            "site": [cfg, store, *site],
            "publish": [cfg, store, *site, ("--site-url", "https://example.org/gallery/")],
            "serve": [cfg, ("--site", str(self.site)), ("--port", "0")],
        }[command]

    def path_value(self, kind: str, run: Path) -> str:
        if kind == "":
            return ""
        target = run / f"value-{kind}"
        if kind == "file":
            target.write_text("not what the flag expects\n")
        elif kind == "folder":
            target.mkdir()
            (target / "keep.txt").write_text("the user's file\n")
        elif kind == "read-only":
            target.mkdir(mode=0o555)
        else:
            target = target / "sub"
        return str(target)


def argv_with(base: list[tuple[str | None, str | None]], option: str | None, dest: str, value: str) -> list[str]:
    """The base invocation with `option` (or the positional) set to `value`."""
    pairs, placed = [], False
    for opt, v in base:
        if (opt is None and option is None and not placed and dest != "name") or (opt is not None and opt == option):
            pairs.append((opt, value))
            placed = True
        else:
            pairs.append((opt, v))
    if not placed:
        pairs.append((option, value))
    argv = []
    for opt, v in pairs:
        argv += ([opt] if opt else []) + ([v] if v is not None else [])
    return argv


RUN_LIMIT_S = 60  # no combination takes a second; a run past this is a hang (e.g. a loop over a huge count)


class Hang(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001, ARG001
    raise Hang(f"still running after {RUN_LIMIT_S} s")


def run_cli(argv: list[str]) -> tuple[int | None, str]:
    """(exit code, stdout + stderr); the code is None and the text the traceback when main raised or hung."""
    out = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(RUN_LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(argv)
    except SystemExit as e:  # argparse: a usage line and exit 2
        code = e.code if isinstance(e.code, int) else 2
    except BaseException:  # noqa: BLE001 - what the sweep is looking for
        return None, out.getvalue() + traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        memo = tmp_path_factory.mktemp("mkdocs-memo")
        real = shell._run_mkdocs

        def run_mkdocs_once(config_path: Path, report) -> None:  # noqa: ANN001
            """MkDocs runs once per distinct input; a fresh cache with the same input gets a copy of its output."""
            config = yaml.safe_load(config_path.read_text())
            docs, site = Path(config.pop("docs_dir")), Path(config.pop("site_dir"))
            key = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
            for f in sorted(docs.rglob("*")):
                key.update(f.relative_to(docs).as_posix().encode() + (f.read_bytes() if f.is_file() else b"/"))
            copy = memo / key.hexdigest()
            if not copy.is_dir():
                real(config_path, report)
                shutil.copytree(site, copy)
            shutil.copytree(copy, site, dirs_exist_ok=True)

        mp.setattr(shell, "_run_mkdocs", run_mkdocs_once)
        yield World(tmp_path_factory.mktemp("sweep"))


def sweep(world: World, command: str) -> tuple[int, list[str]]:
    """Runs every swept flag of `command` at every value; (combinations run, failures)."""
    parser = _commands()[command]
    failures, n = [], 0
    for option, dest, kind in swept_flags(parser):
        values = PATH_VALUES if kind is Path else NUMBERS[kind]
        for value in values:
            run = world.root / f"run-{next(world.runs)}"
            run.mkdir()
            shown = world.path_value(value, run) if kind is Path else value
            argv = [command, *argv_with(world.base(command, run), option, dest, shown)]
            code, text = run_cli(argv)
            n += 1
            label = f"{' '.join(argv[:1])} {option or dest}={value!r}"
            if code not in (0, 1, 2) or "Traceback" in text:
                failures.append(f"{label}: exit {code}\n{text[-1500:]}")
            elif code == 2 and not any(": error:" in line for line in text.splitlines()):
                failures.append(f"{label}: exit 2 without an error line\n{text[-500:]}")
            elif kind is Path and value == "folder" and not (Path(shown) / "keep.txt").is_file():
                failures.append(f"{label}: the user's file in the folder was lost")
    return n, failures


@pytest.fixture(autouse=True)
def _serve_returns(monkeypatch):
    """`lens serve` binds its port (every check runs), then returns instead of serving forever."""
    monkeypatch.setattr(http.server.ThreadingHTTPServer, "serve_forever", lambda self, *a, **k: None)


COMMANDS = sorted(_commands())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_numeric_and_path_flag_answers_in_one_line(world, command):
    n, failures = sweep(world, command)
    assert n > 0 or not swept_flags(_commands()[command])
    assert not failures, f"{len(failures)} of {n} combinations failed:\n\n" + "\n\n".join(failures)


def test_the_sweep_covers_every_command_and_flag():
    """The parser is the list: every command is swept, with its store, site, config and number flags."""
    flags = {c: {o for o, _, _ in swept_flags(p)} for c, p in _commands().items()}
    assert set(COMMANDS) >= {"init", "render", "build", "quality", "status", "figure", "layers", "spectrum", "site",
                             "publish", "serve", "models"}
    assert {"--store", "--config", "--images", "--steps", "--seed"} <= flags["render"]
    assert {"--output", "--dpi", "--cell", "--concepts"} <= flags["figure"]
    assert {"--site", "--cache", "--store"} <= flags["site"]
    assert None in flags["init"] and "--samples" in flags["layers"] and "--port" in flags["serve"]
