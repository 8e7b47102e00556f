"""Error codes and status events: one enum each, every member documented in the README's Troubleshooting
tables and every code there a member, and no code or event written as a bare string in the runtime."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from yolo_edge import messages
from yolo_edge.codes import ErrorCode, StatusEvent

pytestmark = pytest.mark.runtime

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "README.md").read_text(encoding="utf-8").split("## Troubleshooting", 1)[1]


def table_keys(column: str) -> set[str]:
    """The first-column values of every README table whose first header is `column`."""
    keys: set[str] = set()
    for table in re.findall(rf"^\| `{column}` \|.*?\n((?:\|.*\n)+)", GUIDE, flags=re.MULTILINE):
        keys.update(re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.MULTILINE))
    return keys


def test_every_error_code_is_in_the_guide_and_every_documented_code_exists():
    documented = table_keys("code")
    assert {code.value for code in ErrorCode} == documented


def test_every_status_event_is_in_the_guide_and_every_documented_event_exists():
    documented = table_keys("event")
    assert {event.value for event in StatusEvent} == documented


def test_messages_take_the_enums_and_refuse_unknown_names():
    assert messages.error_message(ErrorCode.NOT_UTF8, "m")["code"] == "not_utf8"
    assert messages.status_message(StatusEvent.SOURCE_LOST, "m")["event"] == "source_lost"
    with pytest.raises(ValueError):
        messages.error_message("no_such_code", "m")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        messages.status_message("no_such_event", "m")  # type: ignore[arg-type]


def test_the_runtime_names_codes_and_events_only_through_the_enums():
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "components" / "yolo_edge").rglob("*.py")
                       if p.name != "codes.py")
    literal = re.findall(r'(?:CommandError|_error|error_message|status_message)\(\s*"([a-z0-9_]+)"', source)
    assert not literal, f"codes or events written as strings instead of ErrorCode/StatusEvent members: {literal}"
    used = set(re.findall(r"\b(?:ErrorCode|StatusEvent)\.([A-Z0-9_]+)\b", source))
    assert {m.name for m in ErrorCode} | {m.name for m in StatusEvent} == used, "a member nothing publishes"
