from __future__ import annotations

import json

import pytest

from yolo_edge.commands import MAX_COMMAND_BYTES, Command, CommandError, parse_command

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize(("payload", "action"), [
    (b'{"status": "start"}', "start"),
    (b'{"status": "PAUSE"}', "pause"),
    (b'{"status": " stop "}', "stop"),
    (b'{"status": "start", "extra": [1, 2], "note": "ok"}', "start"),
    ('{"status": "start"}', "start"),
])
def test_valid_commands(payload, action):
    assert parse_command(payload).action == action


def test_request_id_is_kept():
    assert parse_command(b'{"status": "start", "request_id": "r-1"}') == Command("start", "r-1")


@pytest.mark.parametrize(("payload", "code"), [
    (b"", "empty_payload"),
    (b"   ", "empty_payload"),
    (b"start", "invalid_json"),
    (b'{"status": "start"', "invalid_json"),
    (b"\xff\xfe\x00", "not_utf8"),
    (b"5", "not_an_object"),
    (b"null", "not_an_object"),
    (b'["start"]', "not_an_object"),
    (b'"start"', "not_an_object"),
    (b"{}", "missing_status"),
    (b'{"Status": "start"}', "missing_status"),
    (b'{"status": 1}', "invalid_status_type"),
    (b'{"status": null}', "invalid_status_type"),
    (b'{"status": ["start"]}', "invalid_status_type"),
    (b'{"status": "go"}', "unknown_status"),
    (b'{"status": ""}', "unknown_status"),
    (b'{"status": "start", "request_id": 5}', "invalid_request_id"),
    (b"[" * 100000 + b"]" * 100000, "payload_too_large"),
    (json.dumps({"status": "start", "pad": "x" * MAX_COMMAND_BYTES}).encode(), "payload_too_large"),
    (b"[" * 2000 + b"]" * 2000, "invalid_json"),
])
def test_malformed_commands_get_a_typed_error(payload, code):
    with pytest.raises(CommandError) as caught:
        parse_command(payload)
    assert caught.value.code == code
    assert caught.value.message


def test_unknown_status_message_lists_the_allowed_values():
    with pytest.raises(CommandError, match="start, pause, stop"):
        parse_command(b'{"status": "restart", "request_id": "abc"}')
