"""The stable names in messages: error codes (`"type": "error"`) and status events (`"type": "status"`).

Operators match on these strings, and the README's Troubleshooting tables document each one (a test
checks both ways), so a member's value never changes once published.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    # bad command payloads (commands.py)
    PAYLOAD_TOO_LARGE = "payload_too_large"
    EMPTY_PAYLOAD = "empty_payload"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_REQUEST_ID = "invalid_request_id"
    MISSING_STATUS = "missing_status"
    INVALID_STATUS_TYPE = "invalid_status_type"
    UNKNOWN_STATUS = "unknown_status"
    INVALID_CAMERA = "invalid_camera"
    # a valid command for a camera the configuration does not have
    UNKNOWN_CAMERA = "unknown_camera"
    # a valid command that the current state does not allow
    INVALID_TRANSITION = "invalid_transition"
    # model
    MODEL_LOAD_FAILED = "model_load_failed"
    INFERENCE_FAILED = "inference_failed"
    # source
    SOURCE_OPEN_FAILED = "source_open_failed"
    SOURCE_FAILED = "source_failed"
    # configuration and internal
    INVALID_CONFIG = "invalid_config"
    INTERNAL_ERROR = "internal_error"


class StatusEvent(str, Enum):
    MODEL_LOADED = "model_loaded"
    CONFIG_APPLIED = "config_applied"
    MODEL_KEPT = "model_kept"
    SOURCE_LOST = "source_lost"
    SOURCE_RESTORED = "source_restored"
    MESSAGES_DROPPED = "messages_dropped"
