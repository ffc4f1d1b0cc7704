"""The README opens with the two set-up commands, and CI runs the second one verbatim."""

import re

from .conftest import REPO


def test_readme_starts_with_two_commands_and_ci_runs_the_test_one():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)
    main_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert text.index(blocks[0]) < text.index("\n## ")  # both come before any section
    assert "lens build" in main_cmd and "pip install -e ." in main_cmd
    assert "pytest" in test_cmd and "'.[test]'" in test_cmd
    assert test_cmd in (REPO / ".ci" / "run").read_text()
