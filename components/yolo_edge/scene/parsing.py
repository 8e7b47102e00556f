"""Config values shared by filters, zones and lines: numbers, names, named mappings and point lists.

Every bad value raises `ConfigError` with the full key path, e.g. `cameras.dock-1.zones.press.inertia`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Tuple, TypeVar

from yolo_edge.config_values import ConfigError, _ranged, as_short_name, decoded_json

Point = Tuple[float, float]
SpecT = TypeVar("SpecT")

MAX_NAMED_SPECS = 64  # zones or lines per camera


def as_number(key: str, value: Any, low: float, high: float) -> float:
    """A finite number from `low` to `high`; numbers given as text (from --set or Greengrass) are accepted."""
    return float(_ranged(float, low, high)(key, value))


def as_whole_number(key: str, value: Any, low: int, high: int) -> int:
    number = as_number(key, value, low, high)
    if not number.is_integer():
        raise ConfigError(key, value, f"a whole number from {low} to {high}")
    return int(number)


def parse_named(key: str, value: Any, parse_one: Callable[[str, str, Any], SpecT], example: str) -> tuple[SpecT, ...]:
    """`{name: spec, ...}` (or that as JSON text; None or "" = none) -> specs in config order."""
    value = decoded_json(key, value, "a JSON object of name -> spec")
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, f"an object of name -> spec, e.g. {example}")
    if len(value) > MAX_NAMED_SPECS:
        raise ConfigError(key, f"{len(value)} entries", f"at most {MAX_NAMED_SPECS}")
    return tuple(parse_one(key, as_short_name(key, name), spec) for name, spec in value.items())


def parse_points(key: str, value: Any, low: int, high: int) -> tuple[Point, ...]:
    """`[[x, y], ...]` of `low` to `high` points with non-negative coordinates, as floats."""
    rule = (f"a list of {low} to {high} [x, y] points, in pixels or all coordinates from 0 to 1 "
            "(fractions of the frame's width and height)")
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") or not low <= len(value) <= high:
        raise ConfigError(key, value, rule)
    points = []
    for index, point in enumerate(value):
        if isinstance(point, (str, bytes, Mapping)) or not hasattr(point, "__len__") or len(point) != 2:
            raise ConfigError(f"{key}[{index}]", point, "an [x, y] point")
        x, y = (as_number(f"{key}[{index}]", coordinate, 0.0, 1e6) for coordinate in point)
        points.append((x, y))
    return tuple(points)
