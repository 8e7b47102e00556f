"""ConfigError and the value parsers every configuration key shares (config.py, the scene's zones,
lines and filters, snapshots): one wording for every bad value, and no import cycle between them."""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
CAMERA_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class ConfigError(ValueError):
    """A configuration value that cannot be used. Names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"config key {key!r}: invalid value {value!r}; allowed: {allowed}")


def _as_str(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(key, value, "a string")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Greengrass may hand "0" back as 0.0
    return str(value).strip()


def _non_empty(allowed: str) -> Callable[[str, Any], str]:
    """A parser of text that must not be empty; `allowed` says what it should be."""
    def parse(key: str, value: Any) -> str:
        text = _as_str(key, value)
        if not text:
            raise ConfigError(key, value, allowed)
        return text

    return parse


def _as_topic(key: str, value: Any) -> str:
    topic = _as_str(key, value)
    if not topic or "+" in topic or "#" in topic or len(topic.encode()) > 256:
        raise ConfigError(key, value, "a non-empty MQTT topic of at most 256 bytes without wildcards + or #")
    return topic


def _as_number(key: str, value: Any, cast: Callable[[Any], float | int]) -> float | int:
    if isinstance(value, bool):
        raise ConfigError(key, value, "a number")
    try:
        number = cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(key, value, "a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(key, value, "a finite number")
    if cast is int and float(value) != number:
        raise ConfigError(key, value, "a whole number")
    return number


def _ranged(cast: Callable[[Any], float | int], low: float, high: float) -> Callable[[str, Any], Any]:
    def parse(key: str, value: Any) -> float | int:
        number = _as_number(key, value, cast)
        if not low <= number <= high:
            raise ConfigError(key, value, f"a number from {low:g} to {high:g}")
        return number

    return parse


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(key, value, "true or false")


def decoded_json(key: str, value: Any, what: str) -> Any:
    """`value`, or the JSON it holds when it is text (as `--set` and recipes give objects); None for
    blank text. `what` says what the JSON should be, for the error."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(key, value, f"{what} ({exc.msg})") from None


def as_short_name(key: str, name: Any, what: str = "names") -> str:
    """A camera, zone or line name: 1 to 64 letters, digits, '-', '_' or '.'."""
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not set(name) <= CAMERA_NAME_CHARS:
        raise ConfigError(key, name, f"{what} of 1 to 64 letters, digits, '-', '_' or '.'")
    return name


def reject_unknown_keys(key: str, value: Mapping[Any, Any], known: tuple[str, ...]) -> None:
    """ConfigError naming the first (in sorted order) key of the object `value` that is not in `known`."""
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", value[unknown[0]], "one of " + ", ".join(known))
