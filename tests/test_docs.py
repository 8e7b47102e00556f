"""The README is the user's manual: it must stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from yolo_edge.cli import build_parser
from yolo_edge.config import Config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_config_key_is_in_the_configuration_table_with_its_default():
    rows = dict(re.findall(r"^\| `([A-Za-z_]+)` \| `([^`]*)` \|", README, flags=re.MULTILINE))
    for key, default in Config().to_mapping().items():
        assert key in rows, f"config key {key} missing from the README table"
        shown = rows[key].strip('"')
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        assert shown in (expected, expected.removesuffix(".0")), f"{key}: README says {rows[key]}, code {default!r}"


def test_every_command_is_documented():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name in commands:
        assert f"yolo-edge {name}" in README, f"command {name} not in README"


def quick_start_commands() -> list[str]:
    """The commands of the README's Quick start code block, comments left out."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block, "the Quick start has no bash code block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def script_commands(path: Path) -> list[str]:
    """A shell script's lines that are neither blank nor comments, stripped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_quick_start_commands_are_the_ones_ci_runs():
    repo = Path(__file__).resolve().parents[1]
    # Two commands, each complete on a fresh machine: set-up + demo, set-up + tests.
    commands = quick_start_commands()
    assert commands == ["bash utils/demo.sh", "bash utils/test.sh"]
    # CI runs exactly these, in this order (with options only), and nothing else but its own set-up.
    ci = [line for line in script_commands(repo / ".ci" / "run")
          if line != "set -euo pipefail" and not line.startswith(("cd ", "export "))]
    assert len(ci) == len(commands)
    for ci_line, command in zip(ci, commands):
        assert ci_line == command or ci_line.startswith(command + " "), f".ci/run runs {ci_line!r}, README {command!r}"
    # Each script sets up first, then runs its job.
    for script, job in (("demo.sh", "yolo-edge demo "), ("test.sh", "python3 -m pytest ")):
        lines = script_commands(repo / "utils" / script)
        setup = next(i for i, line in enumerate(lines) if line.startswith("bash ") and "utils/setup_dev.sh" in line)
        assert any(line.startswith(job) for line in lines[setup + 1:]), f"utils/{script} does not run {job}after set-up"
    test_lines = script_commands(repo / "utils" / "test.sh")
    for check in ("python3 -m ruff check .", "python3 -m mypy", "shellcheck utils/*.sh benchmarks/*.sh",
                  "bash .ci/device-pythons.sh 3.8 3.10"):
        assert any(line.startswith(check) for line in test_lines), f"utils/test.sh does not run {check}"
