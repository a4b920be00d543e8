"""The README's Quick start is what CI runs: its second command, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    _, heading, after = readme.partition("\n## Quick start\n")
    assert heading, "README.md has no '## Quick start' section."
    block = re.search(r"^```bash\n(.*?)^```$", after, flags=re.DOTALL | re.MULTILINE)
    assert block is not None, "README.md's Quick start has no ```bash block."
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_quick_start_has_two_commands_install_and_run_then_test() -> None:
    # Given the README's Quick start
    # When its first bash block is read
    commands = quick_start_commands()

    # Then it holds two one-line commands: run the demo, then run the tests
    assert len(commands) == 2, commands
    run_demo, run_tests = commands
    assert "manage.py runserver" in run_demo
    assert run_tests.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    # Given the README's test command and the CI script
    run_tests = quick_start_commands()[1]
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    # Then CI runs exactly that command
    assert f"TEST_COMMAND='{run_tests}'" in ci_script
    assert 'eval "$TEST_COMMAND"' in ci_script
