"""The README is the user's manual: it must stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_quick_start_commands_are_the_ones_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    for command in ("bash utils/setup_dev.sh", "yolo-edge demo", "python3 -m pytest"):
        assert command in README and command in ci


# In the runtime subset, as when it was one of the component's fault tests.
@pytest.mark.runtime
@pytest.mark.integration
def test_every_error_code_and_status_event_is_in_the_troubleshooting_guide():
    import re

    root = Path(__file__).resolve().parents[1]
    guide = (root / "README.md").read_text(encoding="utf-8").split("## Troubleshooting", 1)[1]
    package = root / "components" / "yolo_edge"
    source = "\n".join(p.read_text(encoding="utf-8") for p in package.rglob("*.py"))
    codes = set(re.findall(r'(?:CommandError|_error|error_message|status_message)\(\s*"([a-z0-9_]+)"', source))
    assert {"model_load_failed", "source_lost", "messages_dropped", "not_utf8"} <= codes
    missing = sorted(code for code in codes if f"`{code}`" not in guide)
    assert not missing, f"not documented in the README's Troubleshooting section: {missing}"
