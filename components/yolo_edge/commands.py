"""Parse command payloads from the input topic into typed commands or typed errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from .codes import ErrorCode


class Action(str, Enum):
    START = "start"
    PAUSE = "pause"
    STOP = "stop"


ACTIONS = tuple(action.value for action in Action)
MAX_COMMAND_BYTES = 4096
MAX_REQUEST_ID_CHARS = 128


@dataclass(frozen=True)
class Command:
    action: Action
    request_id: str | None = None
    camera: str | None = None  # one camera's name; None: every camera


class CommandError(ValueError):
    """A payload that is not a valid command. `code` is stable; `message` says what was wrong."""

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(message)


def _preview(payload: bytes, limit: int = 80) -> str:
    text = payload[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(payload) > limit else "")


def parse_command(payload: bytes | str) -> Command:
    """`{"status": "start" | "pause" | "stop"}` (case-insensitive, extra fields allowed).

    An optional string `request_id` is echoed in the state or error message that answers it; an optional
    `camera` names the one camera the command is for (without it, the command is for every camera).
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8", errors="replace")
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(ErrorCode.PAYLOAD_TOO_LARGE, f"command payload is {len(payload)} bytes; "
                           f"the limit is {MAX_COMMAND_BYTES} bytes")
    if not payload.strip():
        raise CommandError(ErrorCode.EMPTY_PAYLOAD, 'command payload is empty; expected {"status": "start"}')
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(ErrorCode.NOT_UTF8, f"command payload is not UTF-8 text: {_preview(payload)!r}") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise CommandError(ErrorCode.INVALID_JSON, f"command payload is not valid JSON ({message}): "
                           f"{_preview(payload)!r}") from None
    if not isinstance(data, dict):
        raise CommandError(ErrorCode.NOT_AN_OBJECT, f"command must be a JSON object like {{\"status\": \"start\"}}, "
                           f"got a JSON {type(data).__name__ if data is not None else 'null'}")
    request_id = data.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_CHARS):
        raise CommandError(ErrorCode.INVALID_REQUEST_ID, f"field 'request_id' must be a string of at most "
                           f"{MAX_REQUEST_ID_CHARS} characters, got {_preview(json.dumps(request_id).encode())}")
    if "status" not in data:
        raise CommandError(ErrorCode.MISSING_STATUS, "command has no 'status' field; expected one of "
                           + ", ".join(ACTIONS), request_id)
    status = data["status"]
    if not isinstance(status, str):
        raise CommandError(ErrorCode.INVALID_STATUS_TYPE, f"field 'status' must be a string, got "
                           f"{json.dumps(status)[:80]}", request_id)
    action = status.strip().lower()
    if action not in ACTIONS:
        raise CommandError(ErrorCode.UNKNOWN_STATUS, f"field 'status' is {status[:80]!r}; expected one of "
                           + ", ".join(ACTIONS), request_id)
    camera = data.get("camera")
    if camera is not None and (not isinstance(camera, str) or not camera.strip()):
        raise CommandError(ErrorCode.INVALID_CAMERA, f"field 'camera' must be a camera's name (a non-empty string), "
                           f"got {_preview(json.dumps(camera).encode())}", request_id)
    return Command(Action(action), request_id, camera.strip() if camera is not None else None)
