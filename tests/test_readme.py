"""The README opens with the two set-up commands, CI runs the second one verbatim, and the first
python block of its "Python API" section runs as is, offline, on a CPU, in under a minute."""

import os
import re
import resource
import subprocess
import sys

from .conftest import REPO

# Any attempt to open a network connection fails the example (the hub, a download...).
NO_NETWORK = """
import socket
def _refuse(*args, **kwargs):
    raise OSError("network access is disabled in the README example test")
socket.socket.connect = _refuse
socket.create_connection = _refuse
"""


def test_readme_starts_with_two_commands_and_ci_runs_the_test_one():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)
    main_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert text.index(blocks[0]) < text.index("\n## ")  # both come before any section
    assert "lens build" in main_cmd and "pip install -e ." in main_cmd
    assert "pytest" in test_cmd and "'.[test]'" in test_cmd
    assert test_cmd in (REPO / ".ci" / "run").read_text()


def python_api_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Python API\n"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)\n```", section, flags=re.S)[0]


def test_readme_commands_use_the_current_option_names():
    from generator.cli import build_parser

    text = (REPO / "README.md").read_text()
    commands = re.search(r"## Commands\n\n```sh\n(.*?)\n```", text, flags=re.S).group(1)
    for line in commands.splitlines():
        argv = line.split("#")[0].split()[1:]  # drop `lens` and the comment
        args = build_parser().parse_args(argv)  # exits (fails the test) on an unknown option
        assert args.command == argv[0]


def test_readme_python_api_example_runs_offline_on_cpu_in_under_a_minute(tmp_path):
    code = python_api_example()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", NO_NETWORK + code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # CPU time, one thread: what the example costs on an idle machine, whatever else shares this one.
    assert cpu_s < 60, f"the README example took {cpu_s:.0f} s of CPU"
    lines = done.stdout.splitlines()
    assert lines[0].startswith("espresso p=") and lines[1].startswith("top concept: importance")
    from PIL import Image

    assert Image.open(tmp_path / "espresso.png").size == (128, 128)
    assert Image.open(tmp_path / "espresso-concept.png").size == (128, 128)


# ----------------------------------------------------------------------------- the code layout


def documented_layers() -> list[list[str]]:
    """The README's "Code layout" table: per row, the modules it names (`x.py`, `pkg/`), top row first."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Code layout\n"):]
    section = section[: section.index("\n## ", 1)]
    rows = re.findall(r"^\| (`.+?) \| .* \|$", section, flags=re.M)
    return [[m.removesuffix(".py").removesuffix("/") for m in re.findall(r"`([a-z_]+(?:\.py|/))`", cell)] for cell in rows]


def code_modules() -> set[str]:
    """generator's modules as the table names them: top-level files, and packages as one name."""
    root = REPO / "generator"
    names = {p.stem for p in root.glob("*.py")} | {p.parent.name for p in root.glob("*/__init__.py")}
    return names - {"__init__", "__main__"}


def imports_of(path, package: str) -> set[str]:
    """generator modules (first component below `generator`) that a file imports, anywhere in it."""
    import ast

    parts = package.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module else [target + [a.name] for a in node.names]
            else:
                names = [node.module.split(".")] if node.module and node.module.startswith("generator") else []
            found |= {n[1] for n in names if len(n) > 1 and n[0] == "generator"}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("generator.")}
    return found


def test_the_code_layout_names_every_module_once():
    listed = [m for row in documented_layers() for m in row]
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert set(listed) == code_modules(), (set(listed) ^ code_modules())


def test_no_import_runs_up_the_documented_layers():
    """A module imports only modules of its own row or rows above it (packages: any of their files)."""
    rank = {m: i for i, row in enumerate(documented_layers()) for m in row}
    root = REPO / "generator"
    upward = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.name in ("__init__.py", "__main__.py") and len(rel.parts) == 1:
            continue  # the package root exports the API lazily; `python -m generator` is the CLI
        owner = rel.parts[0].removesuffix(".py")
        package = ".".join(("generator", *rel.parts[:-1]))  # what relative imports are relative to
        for target in imports_of(path, package):
            if target != owner and target in rank and rank[target] > rank[owner]:
                upward.append(f"{rel} imports {target}")
    assert not upward, upward
