"""Multi-object tracking by detection: ByteTrack's two-stage score association over constant-velocity Kalman filters.

Every track has a Kalman filter over (centre x, centre y, width, height) and their velocities. All filters
live in one set of arrays, so predicting and correcting them is a handful of batched NumPy operations per
frame whatever the number of tracks. A frame's detections are associated with the predicted boxes by IoU,
within one class, in two stages (ByteTrack's idea): confident detections first, against every track (also
the lost ones), then the weak ones against the tracks that were seen in the previous frame and are still
unmatched. Weak detections thus keep a partly occluded object's id but never start a track of their own.

Assignment is optimal (the matching with the largest total IoU among pairs at or above the threshold).
Pairs that compete with nothing are matched directly; only the tangled rest (objects close together) goes
through a small Hungarian solver, so the usual frame costs no solver at all.

A track is tentative until it has been matched in ``min_hits`` frames; a tentative track that misses a frame
is dropped. Only confirmed tracks get an id (1, 2, 3 ... in confirmation order, never reused) and are
reported. A confirmed track that misses frames is *lost*: its filter keeps predicting and it can be found
again, with its id, until it has been missed for more than ``track_buffer`` frames; then it ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable, Tuple

import numpy as np

from yolo_edge.config_values import ConfigError

Box = Tuple[float, float, float, float]

# Kalman noise as fractions of the box's size: a track's uncertainty scales with how big it appears.
_POSITION_NOISE = 1.0 / 20.0  # process noise on centre and size, per frame
_VELOCITY_NOISE = 1.0 / 160.0  # process noise on the velocities, per frame
_MEASUREMENT_NOISE = 1.0 / 20.0  # a detector's box error
_INITIAL_VELOCITY_SPREAD = 10.0  # times _VELOCITY_NOISE: a new track's velocity is unknown
_MIN_SIZE = 1e-3  # predicted widths and heights never shrink below this (pixels)

# Constant velocity: position += velocity each frame.
_TRANSITION = np.eye(8)
_TRANSITION[:4, 4:] = np.eye(4)


@dataclass(frozen=True)
class TrackerSettings:
    """How the tracker associates detections and how long it keeps tracks (config object ``tracker``)."""

    track_buffer: int = 30  # frames a lost track is kept (predicted by its Kalman filter) before it ends
    high_threshold: float = 0.5  # detections scoring at or above take part in the first association
    low_threshold: float = 0.1  # detections in [low, high) only in the second association
    new_track_threshold: float = 0.6  # an unmatched detection at or above this starts a new (tentative) track
    match_iou: float = 0.2  # least IoU for a first-stage match
    low_match_iou: float = 0.5  # least IoU for a second-stage (weak detection) match
    min_hits: int = 2  # frames matched before a track is confirmed (reported)

    @classmethod
    def from_mapping(cls, key: str, value: object) -> TrackerSettings:
        """Settings from a config object; ConfigError naming ``key.field`` for unknown keys and bad values."""
        known = {field.name for field in fields(cls)}
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, f"an object with the keys {', '.join(sorted(known))}")
        for name in value:
            if name not in known:
                raise ConfigError(f"{key}.{name}", value[name], f"one of the keys {', '.join(sorted(known))}")
        parsed: dict[str, Any] = {}
        for name, field_value in value.items():
            parse = _PARSERS[name]
            parsed[name] = parse(f"{key}.{name}", field_value)
        settings = cls(**parsed)
        check_settings(settings, key)
        return settings


def _as_int(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(key, value, f"a whole number from {low} to {high}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(key, value, f"a whole number from {low} to {high}") from None
    if not math.isfinite(number) or not number.is_integer() or not low <= number <= high:
        raise ConfigError(key, value, f"a whole number from {low} to {high}")
    return int(number)


def _as_fraction(key: str, value: object, above_zero: bool = False) -> float:
    allowed = "a number above 0 and at most 1" if above_zero else "a number from 0 to 1"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(key, value, allowed)
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(key, value, allowed) from None
    if not (0.0 < number <= 1.0 if above_zero else 0.0 <= number <= 1.0):
        raise ConfigError(key, value, allowed)
    return number


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "track_buffer": lambda key, value: _as_int(key, value, 0, 100_000),
    "high_threshold": _as_fraction,
    "low_threshold": _as_fraction,
    "new_track_threshold": _as_fraction,
    "match_iou": lambda key, value: _as_fraction(key, value, above_zero=True),
    "low_match_iou": lambda key, value: _as_fraction(key, value, above_zero=True),
    "min_hits": lambda key, value: _as_int(key, value, 1, 1000),
}


def check_settings(settings: TrackerSettings, key: str = "tracker") -> None:
    """ConfigError unless every field is in range and the thresholds are ordered low <= high <= new track."""
    for field in fields(settings):
        _PARSERS[field.name](f"{key}.{field.name}", getattr(settings, field.name))
    if settings.low_threshold > settings.high_threshold:
        raise ConfigError(f"{key}.low_threshold", settings.low_threshold,
                          f"a number from 0 to high_threshold ({settings.high_threshold:g})")
    if settings.new_track_threshold < settings.high_threshold:
        raise ConfigError(f"{key}.new_track_threshold", settings.new_track_threshold,
                          f"a number from high_threshold ({settings.high_threshold:g}) to 1")


@dataclass(frozen=True)
class TrackState:
    """A confirmed track matched in this frame."""

    track_id: int  # 1, 2, 3 ... per tracker, never reused
    box: Box  # xyxy of the detection matched this frame (not the Kalman estimate)
    score: float  # that detection's score
    class_id: int
    detection_index: int  # index of that detection in this frame's arrays
    hits: int  # frames matched so far


@dataclass(frozen=True)
class TrackerUpdate:
    """One frame's result."""

    tracked: tuple[TrackState, ...]  # confirmed tracks matched in this frame, in detection order
    ended: tuple[int, ...]  # ids of confirmed tracks that ended this frame (lost longer than track_buffer)


# ---- pure math ---------------------------------------------------------------------------------------------


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) corner boxes to (centre x, centre y, width, height)."""
    size = boxes[:, 2:4] - boxes[:, 0:2]
    return np.concatenate([boxes[:, 0:2] + size / 2.0, size], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) centre boxes to corners; widths and heights below _MIN_SIZE count as _MIN_SIZE."""
    half = np.maximum(boxes[:, 2:4], _MIN_SIZE) / 2.0
    return np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)


def iou_matrix(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of (N, 4) and (M, 4) xyxy boxes."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None)
    intersection = overlap[..., 0] * overlap[..., 1]
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    union = area_first[:, None] + area_second[None, :] - intersection
    return np.where(union > 0.0, intersection / np.maximum(union, 1e-12), 0.0)


def hungarian_max(weights: np.ndarray) -> list[tuple[int, int]]:
    """Row-column pairs of a (N, M) non-negative weight matrix with the largest total weight.

    Shortest augmenting paths with potentials (Kuhn-Munkres), rows added one at a time, the column scan
    vectorised. Every row is assigned when N <= M; pairs of weight 0 are left out, so padding with zeros
    means "no edge"."""
    transposed = weights.shape[0] > weights.shape[1]
    cost = -(weights.T if transposed else weights)
    rows, columns = cost.shape
    row_potential = np.zeros(rows + 1)
    column_potential = np.zeros(columns + 1)
    row_of_column = np.zeros(columns + 1, dtype=np.int64)  # 1-based row; column 0 is the path's root
    previous_column = np.zeros(columns + 1, dtype=np.int64)
    for row in range(1, rows + 1):
        row_of_column[0] = row
        column = 0
        slack = np.full(columns + 1, np.inf)
        visited = np.zeros(columns + 1, dtype=bool)
        while True:
            visited[column] = True
            current_row = row_of_column[column]
            reduced = cost[current_row - 1] - row_potential[current_row] - column_potential[1:]
            open_columns = ~visited[1:]
            better = open_columns & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            previous_column[1:][better] = column
            candidates = np.where(open_columns, slack[1:], np.inf)
            next_column = int(np.argmin(candidates)) + 1
            delta = candidates[next_column - 1]
            row_potential[row_of_column[visited]] += delta
            column_potential[visited] -= delta
            slack[~visited] -= delta
            column = next_column
            if row_of_column[column] == 0:
                break
        while column:
            before = previous_column[column]
            row_of_column[column] = row_of_column[before]
            column = before
    pairs = []
    for column in range(1, columns + 1):
        row = int(row_of_column[column])
        if row and cost[row - 1, column - 1] < 0.0:
            pairs.append((column - 1, row - 1) if transposed else (row - 1, column - 1))
    return pairs


def match_by_iou(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Track and detection indices of the matching with the largest total IoU among pairs >= threshold.

    A pair that is the only candidate of both its row and its column is matched directly; the rest go to
    the Hungarian solver, which is exact because such pairs share no candidates with anything else."""
    candidate = iou >= threshold
    row_count = candidate.sum(axis=1)
    column_count = candidate.sum(axis=0)
    lone = candidate & (row_count[:, None] == 1) & (column_count[None, :] == 1)
    track_index, detection_index = np.nonzero(lone)
    tangled_rows = np.nonzero((row_count > 0) & ~lone.any(axis=1))[0]
    if tangled_rows.size == 0:
        return track_index, detection_index
    tangled_columns = np.nonzero((column_count > 0) & ~lone.any(axis=0))[0]
    sub = np.where(candidate[np.ix_(tangled_rows, tangled_columns)], iou[np.ix_(tangled_rows, tangled_columns)], 0.0)
    pairs = hungarian_max(sub)
    extra_tracks = tangled_rows[[row for row, _ in pairs]]
    extra_detections = tangled_columns[[column for _, column in pairs]]
    return np.concatenate([track_index, extra_tracks]), np.concatenate([detection_index, extra_detections])


def _process_noise(means: np.ndarray) -> np.ndarray:
    """(T, 8) diagonal process noise variances, scaled by each track's width (x, w) and height (y, h)."""
    size = np.maximum(means[:, [2, 3, 2, 3]], _MIN_SIZE)
    return np.concatenate([(size * _POSITION_NOISE) ** 2, (size * _VELOCITY_NOISE) ** 2], axis=1)


def kalman_predict(means: np.ndarray, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every filter one frame ahead: (T, 8) means, (T, 8, 8) covariances."""
    predicted_means = means @ _TRANSITION.T
    predicted_covariances = _TRANSITION @ covariances @ _TRANSITION.T
    diagonal = np.arange(8)
    predicted_covariances[:, diagonal, diagonal] += _process_noise(means)
    return predicted_means, predicted_covariances


def kalman_correct(means: np.ndarray, covariances: np.ndarray,
                   measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filters corrected by (K, 4) xywh measurements: the position part of the state is observed."""
    sizes = np.maximum(measurements[:, [2, 3, 2, 3]], _MIN_SIZE)
    innovation_covariance = covariances[:, :4, :4].copy()
    diagonal = np.arange(4)
    innovation_covariance[:, diagonal, diagonal] += (sizes * _MEASUREMENT_NOISE) ** 2
    observed_rows = covariances[:, :4, :]  # H P, (K, 4, 8)
    gain_transposed = np.linalg.solve(innovation_covariance, observed_rows)  # (H P H' + R)^-1 H P = K'
    innovation = measurements - means[:, :4]
    corrected_means = means + np.einsum("kij,ki->kj", gain_transposed, innovation)
    corrected_covariances = covariances - np.einsum("kij,kil->kjl", gain_transposed, observed_rows)
    return corrected_means, corrected_covariances


def kalman_start(measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New filters at (K, 4) xywh measurements, standing still with a wide velocity spread."""
    count = measurements.shape[0]
    means = np.concatenate([measurements, np.zeros((count, 4))], axis=1)
    sizes = np.maximum(measurements[:, [2, 3, 2, 3]], _MIN_SIZE)
    variances = np.concatenate([(2.0 * _POSITION_NOISE * sizes) ** 2,
                                (_INITIAL_VELOCITY_SPREAD * _VELOCITY_NOISE * sizes) ** 2], axis=1)
    covariances = np.zeros((count, 8, 8))
    diagonal = np.arange(8)
    covariances[:, diagonal, diagonal] = variances
    return means, covariances


# ---- the tracker -------------------------------------------------------------------------------------------


class Tracker:
    """Tracks one camera's detections frame by frame. Not thread-safe: one caller per tracker."""

    def __init__(self, settings: TrackerSettings = TrackerSettings()) -> None:
        check_settings(settings)
        self.settings = settings
        self._last_id = 0
        self._clear()

    def _clear(self) -> None:
        """No tracks. The id counter stays: ids are never reused."""
        self._means = np.zeros((0, 8))
        self._covariances = np.zeros((0, 8, 8))
        self._class_ids = np.zeros(0, dtype=np.int64)
        self._track_ids = np.zeros(0, dtype=np.int64)  # 0 while tentative
        self._hits = np.zeros(0, dtype=np.int64)
        self._missed = np.zeros(0, dtype=np.int64)  # frames since last matched; 0 = matched last frame

    @property
    def active_count(self) -> int:
        """Confirmed tracks not ended yet, seen in the last frame or lost."""
        return int(np.count_nonzero(self._track_ids))

    def end_all(self) -> tuple[int, ...]:
        """End of a run: the ids of every confirmed track (seen or lost), and the tracker emptied."""
        ended = tuple(int(track_id) for track_id in self._track_ids[self._track_ids > 0])
        self._clear()
        return ended

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> TrackerUpdate:
        """One frame's detections: (N, 4) xyxy boxes, (N,) scores, (N,) class ids; N may be 0."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        class_ids = np.asarray(class_ids).astype(np.int64, copy=False).reshape(-1)
        if not boxes.shape[0] == scores.shape[0] == class_ids.shape[0]:
            raise ValueError(f"boxes, scores and class_ids differ in length: "
                             f"{boxes.shape[0]}, {scores.shape[0]}, {class_ids.shape[0]}")
        settings = self.settings
        self._means, self._covariances = kalman_predict(self._means, self._covariances)
        predicted = xywh_to_xyxy(self._means[:, :4])
        matched_tracks, matched_detections = self._associate(predicted, boxes, scores, class_ids)

        track_count = self._means.shape[0]
        matched = np.zeros(track_count, dtype=bool)
        matched[matched_tracks] = True
        measurements = xyxy_to_xywh(boxes[matched_detections])
        self._means[matched_tracks], self._covariances[matched_tracks] = kalman_correct(
            self._means[matched_tracks], self._covariances[matched_tracks], measurements)
        self._hits[matched_tracks] += 1
        self._missed[matched] = 0
        self._missed[~matched] += 1
        self._confirm(matched_tracks)

        # Tentative tracks die at their first miss; confirmed ones once lost for more than track_buffer.
        confirmed = self._track_ids > 0
        expired = confirmed & (self._missed > settings.track_buffer)
        ended = tuple(int(track_id) for track_id in self._track_ids[expired])
        keep = ~expired & (confirmed | matched)
        self._keep(keep)
        kept_tracks = (np.cumsum(keep) - 1)[matched_tracks]  # matched tracks are always kept
        new_tracks, new_detections = self._start(boxes, scores, class_ids, matched_detections)
        tracked = self._report(np.concatenate([kept_tracks, new_tracks]),
                               np.concatenate([matched_detections, new_detections]), boxes, scores)
        return TrackerUpdate(tracked=tracked, ended=ended)

    def _associate(self, predicted: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                   class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ByteTrack's two stages: strong detections with every track, then weak ones with the remaining
        confirmed tracks seen in the previous frame. Track and detection indices of the pairs."""
        settings = self.settings
        iou = iou_matrix(predicted, boxes)
        iou[self._class_ids[:, None] != class_ids[None, :]] = 0.0
        strong = np.nonzero(scores >= settings.high_threshold)[0]
        first_tracks, first_detections = match_by_iou(iou[:, strong], settings.match_iou)
        first_detections = strong[first_detections]

        weak = np.nonzero((scores >= settings.low_threshold) & (scores < settings.high_threshold))[0]
        open_tracks = np.ones(predicted.shape[0], dtype=bool)
        open_tracks[first_tracks] = False
        open_tracks &= (self._track_ids > 0) & (self._missed == 0)  # missed == 0 here: seen last frame
        candidates = np.nonzero(open_tracks)[0]
        if weak.size == 0 or candidates.size == 0:
            return first_tracks, first_detections
        second_tracks, second_detections = match_by_iou(iou[np.ix_(candidates, weak)], settings.low_match_iou)
        return (np.concatenate([first_tracks, candidates[second_tracks]]),
                np.concatenate([first_detections, weak[second_detections]]))

    def _confirm(self, matched_tracks: np.ndarray) -> None:
        """Ids for the tentative tracks that have just reached min_hits, in track order."""
        newly = matched_tracks[(self._track_ids[matched_tracks] == 0)
                               & (self._hits[matched_tracks] >= self.settings.min_hits)]
        newly = np.sort(newly)
        self._track_ids[newly] = np.arange(self._last_id + 1, self._last_id + 1 + newly.size)
        self._last_id += int(newly.size)

    def _report(self, matched_tracks: np.ndarray, matched_detections: np.ndarray, boxes: np.ndarray,
                scores: np.ndarray) -> tuple[TrackState, ...]:
        """The confirmed matched tracks, in detection order."""
        order = np.argsort(matched_detections, kind="stable")
        tracks = matched_tracks[order]
        detections = matched_detections[order]
        reported = self._track_ids[tracks] > 0
        tracks, detections = tracks[reported], detections[reported]
        track_ids = self._track_ids[tracks].tolist()
        class_ids = self._class_ids[tracks].tolist()
        hits = self._hits[tracks].tolist()
        chosen_boxes = boxes[detections].tolist()
        chosen_scores = scores[detections].tolist()
        detection_indices = detections.tolist()
        return tuple(
            TrackState(track_id=track_id, box=(box[0], box[1], box[2], box[3]), score=score, class_id=class_id,
                       detection_index=index, hits=hit)
            for track_id, box, score, class_id, index, hit
            in zip(track_ids, chosen_boxes, chosen_scores, class_ids, detection_indices, hits))

    def _keep(self, keep: np.ndarray) -> None:
        self._means = self._means[keep]
        self._covariances = self._covariances[keep]
        self._class_ids = self._class_ids[keep]
        self._track_ids = self._track_ids[keep]
        self._hits = self._hits[keep]
        self._missed = self._missed[keep]

    def _start(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
               matched_detections: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tentative tracks for the unmatched detections that score at least new_track_threshold (confirmed at
        once when min_hits is 1). Their track and detection indices."""
        unmatched = np.ones(boxes.shape[0], dtype=bool)
        unmatched[matched_detections] = False
        new = np.nonzero(unmatched & (scores >= self.settings.new_track_threshold))[0]
        first = self._means.shape[0]
        if new.size == 0:
            return new, new
        means, covariances = kalman_start(xyxy_to_xywh(boxes[new]))
        count = new.size
        self._means = np.concatenate([self._means, means])
        self._covariances = np.concatenate([self._covariances, covariances])
        self._class_ids = np.concatenate([self._class_ids, class_ids[new]])
        self._track_ids = np.concatenate([self._track_ids, np.zeros(count, dtype=np.int64)])
        self._hits = np.concatenate([self._hits, np.ones(count, dtype=np.int64)])
        self._missed = np.concatenate([self._missed, np.zeros(count, dtype=np.int64)])
        new_tracks = np.arange(first, first + count)
        self._confirm(new_tracks)
        return new_tracks, new
