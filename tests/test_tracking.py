"""scene.tracking: scripted box sequences through the tracker, its assignment solver and its settings."""

from __future__ import annotations

import itertools
from typing import List, Sequence, Tuple

import numpy as np
import pytest

from yolo_edge.config import ConfigError
from yolo_edge.scene.tracking import (
    Tracker,
    TrackerSettings,
    TrackerUpdate,
    hungarian_max,
    iou_matrix,
    match_by_iou,
)

pytestmark = pytest.mark.runtime

Detection = Tuple[Tuple[float, float, float, float], float, int]  # xyxy, score, class id
Frame = List[Detection]


def box_at(x: float, y: float, width: float = 40.0, height: float = 80.0) -> tuple[float, float, float, float]:
    """An xyxy box with its top-left corner at (x, y)."""
    return (x, y, x + width, y + height)


def feed(tracker: Tracker, frames: Sequence[Frame]) -> list[TrackerUpdate]:
    updates = []
    for frame in frames:
        boxes = np.array([box for box, _, _ in frame], dtype=np.float64).reshape(-1, 4)
        scores = np.array([score for _, score, _ in frame], dtype=np.float64)
        class_ids = np.array([class_id for _, _, class_id in frame], dtype=np.int64)
        updates.append(tracker.update(boxes, scores, class_ids))
    return updates


def ids_per_frame(updates: Sequence[TrackerUpdate]) -> list[list[int]]:
    """Each frame's reported ids, in detection order."""
    return [[state.track_id for state in update.tracked] for update in updates]


def ended_at(updates: Sequence[TrackerUpdate]) -> dict[int, tuple[int, ...]]:
    """Frame index -> ids ended there, for the frames that ended any."""
    return {index: update.ended for index, update in enumerate(updates) if update.ended}


def crossing(frames: int, step: float = 10.0, score: float = 0.9) -> list[Frame]:
    return [[(box_at(step * index, 100.0), score, 0)] for index in range(frames)]


# ---- one object --------------------------------------------------------------------------------------------


def test_object_crossing_the_frame_keeps_one_id_and_ends_once_track_buffer_frames_after_leaving():
    tracker = Tracker()
    updates = feed(tracker, crossing(60) + [[] for _ in range(40)])
    ids = ids_per_frame(updates)
    assert ids[0] == []  # tentative until its second match (min_hits 2)
    assert ids[1:60] == [[1]] * 59
    assert ids[60:] == [[]] * 40
    # Last seen in frame 59; lost in frames 60..89 (30 = track_buffer); ended in frame 90.
    assert ended_at(updates) == {90: (1,)}
    assert [state.hits for state in updates[59].tracked] == [60]
    assert tracker.active_count == 0


def test_reported_state_is_the_matched_detection_not_the_kalman_estimate():
    tracker = Tracker()
    updates = feed(tracker, [[(box_at(0.0, 0.0), 0.9, 3)], [((1.5, 2.5, 41.5, 82.5), 0.75, 3)]])
    (state,) = updates[1].tracked
    assert (state.track_id, state.box, state.score, state.class_id, state.detection_index, state.hits) == (
        1, (1.5, 2.5, 41.5, 82.5), 0.75, 3, 0, 2)


def test_jitter_of_three_pixels_keeps_one_id():
    rng = np.random.default_rng(7)
    offsets = rng.integers(-3, 4, size=(200, 4)).astype(float)
    base = np.array(box_at(300.0, 200.0))
    frames = [[(tuple(base + offset), 0.8, 0)] for offset in offsets]
    updates = feed(Tracker(), frames)
    assert ids_per_frame(updates)[1:] == [[1]] * 199
    assert ended_at(updates) == {}


def test_occlusion_gap_of_ten_frames_keeps_the_id_on_the_predicted_path():
    path = crossing(60, step=8.0)
    frames = [frame if not 20 <= index < 30 else [] for index, frame in enumerate(path)]
    tracker = Tracker()
    updates = feed(tracker, frames)
    ids = ids_per_frame(updates)
    assert ids[1:20] == [[1]] * 19
    assert ids[20:30] == [[]] * 10
    assert ids[30:] == [[1]] * 30
    assert ended_at(updates) == {}
    assert tracker.active_count == 1
    assert updates[30].tracked[0].hits == 21  # frames 0..19 and 30


def test_gap_longer_than_track_buffer_ends_the_track_and_the_object_comes_back_with_a_new_id():
    path = crossing(60, step=8.0)
    frames = [frame if not 20 <= index < 30 else [] for index, frame in enumerate(path)]
    updates = feed(Tracker(TrackerSettings(track_buffer=5)), frames)
    ids = ids_per_frame(updates)
    assert ids[1:20] == [[1]] * 19
    assert ended_at(updates) == {25: (1,)}  # missed in frames 20..25: 6 > 5
    assert ids[30] == []  # a new tentative track
    assert ids[31:] == [[2]] * 29


def test_track_buffer_zero_ends_a_track_at_its_first_miss():
    updates = feed(Tracker(TrackerSettings(track_buffer=0)), crossing(5) + [[]])
    assert ended_at(updates) == {5: (1,)}


def test_min_hits_one_reports_a_track_in_its_first_frame():
    updates = feed(Tracker(TrackerSettings(min_hits=1)), crossing(3))
    assert ids_per_frame(updates) == [[1], [1], [1]]
    assert [update.tracked[0].hits for update in updates] == [1, 2, 3]


def test_min_hits_three_confirms_in_the_third_frame():
    updates = feed(Tracker(TrackerSettings(min_hits=3)), crossing(4))
    assert ids_per_frame(updates) == [[], [], [1], [1]]


# ---- two objects -------------------------------------------------------------------------------------------


def passing(frames: int, lane_a: float, lane_b: float, step: float = 10.0) -> list[list[Detection]]:
    """A moves right in lane_a while B moves left in lane_b; they meet half-way. Detections listed B first
    on odd frames so that detection order cannot carry the identity."""
    result = []
    for index in range(frames):
        a = (box_at(step * index, lane_a), 0.9, 0)
        b = (box_at(step * (frames - 1 - index), lane_b), 0.85, 0)
        result.append([a, b] if index % 2 == 0 else [b, a])
    return result


def id_of_each_object(updates: Sequence[TrackerUpdate], lane_a: float) -> tuple[set, set]:
    """The ids reported for the object in lane A and for the one in lane B, over the whole run."""
    ids_a, ids_b = set(), set()
    for update in updates:
        for state in update.tracked:
            (ids_a if state.box[1] == lane_a else ids_b).add(state.track_id)
    return ids_a, ids_b


@pytest.mark.parametrize("lane_b", [200.0, 150.0, 140.0, 120.0], ids=[
    "parallel-lanes-no-overlap", "overlap-iou-0.14", "overlap-iou-0.33", "overlap-iou-0.60"])
def test_two_objects_passing_each_other_keep_their_own_ids(lane_b):
    frames = passing(61, lane_a=100.0, lane_b=lane_b)
    tracker = Tracker()
    updates = feed(tracker, frames)
    assert id_of_each_object(updates, lane_a=100.0) == ({1}, {2})
    assert all(len(update.tracked) == 2 for update in updates[1:])
    assert ended_at(updates) == {}
    assert tracker.active_count == 2


def test_an_object_hidden_while_another_passes_in_front_keeps_its_id():
    frames = passing(61, lane_a=100.0, lane_b=120.0)
    # B's detection is missing while the boxes overlap (A in front): frames 27..33.
    hidden = range(27, 34)
    frames = [[det for det in frame if not (index in hidden and det[0][1] == 120.0)]
              for index, frame in enumerate(frames)]
    updates = feed(Tracker(), frames)
    assert id_of_each_object(updates, lane_a=100.0) == ({1}, {2})
    assert [len(update.tracked) for update in updates[27:34]] == [1] * 7
    assert all(len(update.tracked) == 2 for update in updates[34:])


def test_detections_are_reported_in_detection_order():
    frames = passing(5, lane_a=100.0, lane_b=300.0)
    updates = feed(Tracker(), frames)
    assert [state.detection_index for state in updates[3].tracked] == [0, 1]
    assert ids_per_frame(updates)[3:] == [[2, 1], [1, 2]]  # frame 3 lists B first


# ---- scores ------------------------------------------------------------------------------------------------


def test_low_score_detections_continue_a_track_but_never_start_one():
    strong = crossing(10)
    weak = [[(box_at(10.0 * index, 100.0), 0.2, 0)] for index in range(10, 20)]
    weak_only_object = [[(box_at(500.0, 400.0), 0.2, 0)] for _ in range(20)]
    frames = [a + b for a, b in zip(strong + weak, weak_only_object)]
    updates = feed(Tracker(), frames)
    assert ids_per_frame(updates)[1:] == [[1]] * 19
    assert [state.score for state in updates[15].tracked] == [0.2]


def test_scores_between_high_and_new_track_threshold_do_not_start_tracks():
    frames = [[(box_at(100.0, 100.0), 0.55, 0)] for _ in range(10)]
    tracker = Tracker()
    assert ids_per_frame(feed(tracker, frames)) == [[]] * 10
    assert tracker.active_count == 0


def test_low_score_detections_do_not_bring_back_a_lost_track():
    frames = crossing(10) + [[], []] + [[(box_at(10.0 * index, 100.0), 0.2, 0)] for index in range(12, 16)]
    updates = feed(Tracker(), frames)
    assert ids_per_frame(updates)[10:] == [[]] * 6


def test_detections_below_low_threshold_are_ignored():
    frames = crossing(5) + [[(box_at(10.0 * index, 100.0), 0.05, 0)] for index in range(5, 8)]
    updates = feed(Tracker(), frames)
    assert ids_per_frame(updates)[5:] == [[], [], []]


def test_single_frame_spurious_detections_are_never_confirmed_and_use_no_ids():
    rng = np.random.default_rng(3)
    frames: list[Frame] = []
    for index in range(50):
        x, y = rng.uniform(0, 1800), rng.uniform(0, 1000)
        # A flash every other frame: the frame between is empty, so a flash never meets a second match.
        frames.append([(box_at(x, y, 30.0, 30.0), 0.95, 0)] if index % 2 == 0 else [])
    tracker = Tracker()
    updates = feed(tracker, frames)
    assert ids_per_frame(updates) == [[]] * 50
    updates = feed(tracker, crossing(3))
    assert ids_per_frame(updates) == [[], [1], [1]]  # the first confirmed track is still id 1


# ---- ids, classes, empty frames ----------------------------------------------------------------------------


def test_ids_are_never_reused_also_after_end_all():
    settings = TrackerSettings(track_buffer=2)
    tracker = Tracker(settings)
    first = feed(tracker, crossing(3) + [[], [], []])
    second = feed(tracker, crossing(3) + [[], [], []])
    assert ids_per_frame(first)[1:3] == [[1], [1]]
    assert ended_at(first) == {5: (1,)}
    assert ids_per_frame(second)[1:3] == [[2], [2]]
    assert ended_at(second) == {5: (2,)}
    feed(tracker, crossing(3))
    assert tracker.active_count == 1
    assert tracker.end_all() == (3,)
    assert tracker.active_count == 0
    assert ids_per_frame(feed(tracker, crossing(2))) == [[], [4]]


def test_end_all_returns_seen_and_lost_confirmed_tracks_but_not_tentative_ones():
    tracker = Tracker()
    feed(tracker, [
        [(box_at(0, 0), 0.9, 0), (box_at(300, 0), 0.9, 0)],
        [(box_at(0, 0), 0.9, 0), (box_at(300, 0), 0.9, 0)],
        [(box_at(0, 0), 0.9, 0), (box_at(600, 0), 0.9, 0)],  # 2 lost, a tentative one at 600
    ])
    assert tracker.active_count == 2
    assert tracker.end_all() == (1, 2)
    assert tracker.end_all() == ()


def test_class_aware_a_box_changing_class_starts_a_new_track():
    same_box = box_at(100.0, 100.0)
    frames = [[(same_box, 0.9, 0)]] * 5 + [[(same_box, 0.9, 1)]] * 5
    updates = feed(Tracker(TrackerSettings(track_buffer=3)), frames)
    assert ids_per_frame(updates) == [[], [1], [1], [1], [1], [], [2], [2], [2], [2]]
    assert [state.class_id for state in updates[6].tracked] == [1]
    assert ended_at(updates) == {8: (1,)}  # missed in frames 5..8: 4 > 3


def test_class_aware_two_classes_on_the_same_box_get_two_tracks():
    same_box = box_at(100.0, 100.0)
    frames = [[(same_box, 0.9, 2), (same_box, 0.8, 5)]] * 4
    updates = feed(Tracker(), frames)
    assert [[(state.track_id, state.class_id) for state in update.tracked] for update in updates[1:]] == [
        [(1, 2), (2, 5)]] * 3


def test_empty_frames_from_the_start_and_between():
    tracker = Tracker()
    empty = tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    assert empty == TrackerUpdate(tracked=(), ended=())
    assert tracker.update(np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int32)).tracked == ()
    updates = feed(tracker, crossing(3) + [[]] + crossing(6)[4:])
    assert ids_per_frame(updates) == [[], [1], [1], [], [1], [1]]


def test_float32_and_int32_inputs():
    tracker = Tracker()
    for index in range(3):
        update = tracker.update(np.array([box_at(5.0 * index, 0.0)], np.float32), np.array([0.9], np.float32),
                                np.array([1], np.int32))
    (state,) = update.tracked
    assert (state.track_id, state.box, state.class_id, type(state.score), type(state.class_id)) == (
        1, (10.0, 0.0, 50.0, 80.0), 1, float, int)


def test_arrays_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="boxes, scores and class_ids differ in length: 2, 1, 2"):
        Tracker().update(np.zeros((2, 4)), np.zeros(1), np.zeros(2))


# ---- assignment --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5)])
def test_hungarian_finds_the_largest_total_weight(shape):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    for _ in range(30):
        weights = np.where(rng.random(shape) < 0.6, rng.random(shape), 0.0)
        pairs = hungarian_max(weights)
        rows, columns = zip(*pairs) if pairs else ((), ())
        assert len(set(rows)) == len(rows) and len(set(columns)) == len(columns)
        assert all(weights[row, column] > 0 for row, column in pairs)
        best = max_total_by_brute_force(weights)
        assert sum(weights[row, column] for row, column in pairs) == pytest.approx(best, abs=1e-12)


def max_total_by_brute_force(weights: np.ndarray) -> float:
    rows, columns = weights.shape
    if rows > columns:
        weights, (rows, columns) = weights.T, (columns, rows)
    return max(sum(weights[row, column] for row, column in zip(range(rows), chosen))
               for chosen in itertools.permutations(range(columns), rows))


def test_match_by_iou_prefers_the_largest_total_over_the_single_best_pair():
    # Greedy would take (0, 0) at 0.9 and leave track 1 without a match; the optimum matches both.
    iou = np.array([[0.9, 0.8], [0.7, 0.0]])
    tracks, detections = match_by_iou(iou, 0.2)
    assert sorted(zip(tracks.tolist(), detections.tolist())) == [(0, 1), (1, 0)]


def test_match_by_iou_threshold_and_lone_pairs():
    iou = np.array([[0.5, 0.0, 0.0], [0.0, 0.19, 0.0], [0.0, 0.0, 0.2]])
    tracks, detections = match_by_iou(iou, 0.2)
    assert sorted(zip(tracks.tolist(), detections.tolist())) == [(0, 0), (2, 2)]
    empty_tracks, empty_detections = match_by_iou(np.zeros((0, 3)), 0.2)
    assert (empty_tracks.size, empty_detections.size) == (0, 0)


def test_iou_matrix_values():
    first = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    second = np.array([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    assert iou_matrix(first, second).tolist() == [[50.0 / 150.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


# ---- settings ----------------------------------------------------------------------------------------------


def test_settings_defaults_and_greengrass_strings():
    assert TrackerSettings.from_mapping("tracker", {}) == TrackerSettings()
    parsed = TrackerSettings.from_mapping("tracker", {
        "track_buffer": "60", "high_threshold": "0.4", "low_threshold": 0.05, "new_track_threshold": 0.45,
        "match_iou": 0.3, "low_match_iou": "0.6", "min_hits": 3.0})
    assert parsed == TrackerSettings(track_buffer=60, high_threshold=0.4, low_threshold=0.05,
                                     new_track_threshold=0.45, match_iou=0.3, low_match_iou=0.6, min_hits=3)
    assert isinstance(parsed.track_buffer, int) and isinstance(parsed.min_hits, int)


FIELDS = "high_threshold, low_match_iou, low_threshold, match_iou, min_hits, new_track_threshold, track_buffer"


@pytest.mark.parametrize(("value", "key", "bad", "allowed"), [
    ({"buffer": 30}, "cameras.door.tracker.buffer", 30, f"one of the keys {FIELDS}"),
    ({"track_buffer": -1}, "cameras.door.tracker.track_buffer", -1, "a whole number from 0 to 100000"),
    ({"track_buffer": 1.5}, "cameras.door.tracker.track_buffer", 1.5, "a whole number from 0 to 100000"),
    ({"track_buffer": True}, "cameras.door.tracker.track_buffer", True, "a whole number from 0 to 100000"),
    ({"track_buffer": "lots"}, "cameras.door.tracker.track_buffer", "lots", "a whole number from 0 to 100000"),
    ({"min_hits": 0}, "cameras.door.tracker.min_hits", 0, "a whole number from 1 to 1000"),
    ({"high_threshold": 1.5}, "cameras.door.tracker.high_threshold", 1.5, "a number from 0 to 1"),
    ({"high_threshold": None}, "cameras.door.tracker.high_threshold", None, "a number from 0 to 1"),
    ({"low_threshold": "nan"}, "cameras.door.tracker.low_threshold", "nan", "a number from 0 to 1"),
    ({"match_iou": 0}, "cameras.door.tracker.match_iou", 0, "a number above 0 and at most 1"),
    ({"low_match_iou": 2}, "cameras.door.tracker.low_match_iou", 2, "a number above 0 and at most 1"),
    ({"low_threshold": 0.6}, "cameras.door.tracker.low_threshold", 0.6, "a number from 0 to high_threshold (0.5)"),
    ({"new_track_threshold": 0.4}, "cameras.door.tracker.new_track_threshold", 0.4,
     "a number from high_threshold (0.5) to 1"),
    ([30], "cameras.door.tracker", [30], f"an object with the keys {FIELDS}"),
])
def test_settings_errors_name_the_key_path_and_the_value(value, key, bad, allowed):
    with pytest.raises(ConfigError) as caught:
        TrackerSettings.from_mapping("cameras.door.tracker", value)
    assert (caught.value.key, caught.value.value, caught.value.allowed) == (key, bad, allowed)
    assert str(caught.value) == f"config key {key!r}: invalid value {bad!r}; allowed: {allowed}"


def test_tracker_refuses_bad_settings_built_directly():
    with pytest.raises(ConfigError, match="config key 'tracker.low_threshold': invalid value 0.9"):
        Tracker(TrackerSettings(low_threshold=0.9))
