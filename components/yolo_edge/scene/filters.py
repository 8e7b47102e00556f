"""Detection filters: which classes, how sure and how large a detection must be to be tracked, zoned or counted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

import numpy as np

from yolo_edge.config_values import ConfigError, reject_unknown_keys
from yolo_edge.scene.parsing import as_number

FILTER_KEYS = ("classes", "min_score", "min_area", "max_area")
MAX_AREA_PX = 1e9
ClassRef = Union[str, int]


@dataclass(frozen=True)
class ResolvedFilter:
    """A filter bound to one model's classes and one frame size: class ids and areas in pixels."""

    allowed: frozenset[int] | None  # class ids; None = every class
    min_score: float
    min_area_px: float  # 0 = no limit
    max_area_px: float  # 0 = no limit

    @property
    def keeps_all(self) -> bool:
        return self.allowed is None and self.min_score <= 0.0 and self.min_area_px <= 0.0 and self.max_area_px <= 0.0

    def keep(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """(N,) bool: the detections that pass."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        mask = np.ones(len(boxes), dtype=bool)
        if self.allowed is not None:
            allowed = np.fromiter(self.allowed, dtype=np.int64, count=len(self.allowed))
            mask &= (np.asarray(class_ids).reshape(-1, 1) == allowed).any(axis=1)
        if self.min_score > 0.0:
            mask &= np.asarray(scores, dtype=np.float64).reshape(-1) >= self.min_score
        if self.min_area_px > 0.0 or self.max_area_px > 0.0:
            areas = (boxes[:, 2] - boxes[:, 0]).clip(min=0.0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0.0)
            if self.min_area_px > 0.0:
                mask &= areas >= self.min_area_px
            if self.max_area_px > 0.0:
                mask &= areas <= self.max_area_px
        return mask


@dataclass(frozen=True)
class DetectionFilter:
    """`classes`, `min_score`, `min_area`, `max_area` of a camera, zone or line; the default filters nothing."""

    key: str = "filters"  # config key path, for messages
    classes: tuple[str | int, ...] = ()  # names or ids; () = every class
    min_score: float = 0.0
    min_area: float = 0.0  # 0 = no limit; <= 1.0 is a fraction of the frame area, > 1 pixels
    max_area: float = 0.0

    @classmethod
    def from_mapping(cls, key: str, value: object) -> DetectionFilter:
        """`{classes, min_score, min_area, max_area}` (all optional) at config path `key`; None = no filter."""
        if value is None:
            return cls(key)
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "an object with optional " + ", ".join(FILTER_KEYS))
        reject_unknown_keys(key, value, FILTER_KEYS)
        min_area = _as_area(f"{key}.min_area", value.get("min_area", 0.0))
        max_area = _as_area(f"{key}.max_area", value.get("max_area", 0.0))
        if min_area and max_area and (min_area <= 1.0) == (max_area <= 1.0) and max_area < min_area:
            raise ConfigError(f"{key}.max_area", value["max_area"], f"0 (no limit) or at least min_area ({min_area:g})")
        return cls(key, _as_classes(f"{key}.classes", value.get("classes", ())),
                   as_number(f"{key}.min_score", value.get("min_score", 0.0), 0.0, 1.0), min_area, max_area)

    @classmethod
    def among(cls, key: str, value: Mapping[str, object]) -> DetectionFilter:
        """The filter that FILTER_KEYS among a zone's or line's own keys at config path `key` give."""
        return cls.from_mapping(key, {k: v for k, v in value.items() if k in FILTER_KEYS})

    @property
    def is_empty(self) -> bool:
        """True when the filter lets every detection through."""
        return not self.classes and self.min_score == 0.0 and self.min_area == 0.0 and self.max_area == 0.0

    def class_ids(self, names: Mapping[int, str]) -> frozenset[int] | None:
        """The model's class ids this filter keeps (None = all); an unknown name or id is a `ConfigError`."""
        if not self.classes:
            return None
        ids_by_name = {name: class_id for class_id, name in names.items()}
        ids_by_folded_name = {name.casefold(): class_id for class_id, name in names.items()}
        ids = set()
        for ref in self.classes:
            if isinstance(ref, int) and ref in names:
                ids.add(ref)
            elif isinstance(ref, str) and ref in ids_by_name:
                ids.add(ids_by_name[ref])
            elif isinstance(ref, str) and ref.casefold() in ids_by_folded_name:
                ids.add(ids_by_folded_name[ref.casefold()])
            else:
                known = ", ".join(f"{class_id} {name}" for class_id, name in sorted(names.items())) or "(none)"
                raise ConfigError(f"{self.key}.classes", ref, f"one of the model's classes: {known}")
        return frozenset(ids)

    def resolve(self, frame_shape: tuple[int, int], names: Mapping[int, str]) -> ResolvedFilter:
        """Bind to a model's classes and a frame of (height, width) pixels, for many `keep` calls."""
        frame_area = float(frame_shape[0]) * float(frame_shape[1])
        return ResolvedFilter(self.class_ids(names), self.min_score,
                              _area_px(self.min_area, frame_area), _area_px(self.max_area, frame_area))

    def keep(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, frame_shape: tuple[int, int],
             names: Mapping[int, str]) -> np.ndarray:
        """(N,) bool mask of the xyxy `boxes` that pass, in a frame of `frame_shape` (height, width)."""
        return self.resolve(frame_shape, names).keep(boxes, scores, class_ids)


def _area_px(limit: float, frame_area: float) -> float:
    return limit * frame_area if limit <= 1.0 else limit


def _as_area(key: str, value: Any) -> float:
    return as_number(key, value, 0.0, MAX_AREA_PX)


def _as_classes(key: str, value: Any) -> tuple[ClassRef, ...]:
    """A list of names or ids, or those comma-separated in one string ("person, 2"); digits are ids."""
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, (bytes, Mapping)) or not isinstance(items, (list, tuple)):
        raise ConfigError(key, value, "a list of class names or ids, or a comma-separated string of them")
    classes = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ConfigError(key, item, "a class name or a non-negative class id")
        ref: ClassRef = item.strip() if isinstance(item, str) else item
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        if isinstance(ref, int) and ref < 0:
            raise ConfigError(key, item, "a class name or a non-negative class id")
        if ref != "" and ref not in classes:
            classes.append(ref)
    return tuple(classes)
