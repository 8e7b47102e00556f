"""Counting lines: left/right in image coordinates (y down), one count per real crossing with its direction,
nothing for jitter within the hysteresis band, beyond the segment's ends or a track first seen on the far side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from yolo_edge.config import ConfigError
from yolo_edge.scene.filters import DetectionFilter
from yolo_edge.scene.geometry import signed_offsets
from yolo_edge.scene.lines import Crossing, Direction, LineCounter, LineSpec, Side, parse_lines

pytestmark = pytest.mark.runtime

NAMES = {0: "person", 1: "box"}
FRAME = (480, 640)  # height, width: the diagonal is 800 px, so the default min_distance is 8 px
A, B = (0.0, 100.0), (200.0, 100.0)  # left to right across the top of the frame


@dataclass(frozen=True)
class Obj:
    track_id: int
    box: tuple[float, float, float, float]
    class_id: int = 0
    score: float = 0.9


def standing_at(track_id: int, x: float, y: float, class_id: int = 0) -> Obj:
    """An object whose box's bottom centre is (x, y)."""
    return Obj(track_id, (x - 10.0, y - 40.0, x + 10.0, y), class_id)


def walk(counter: LineCounter, track_id: int, path: list[tuple[float, float]], class_id: int = 0) -> list[Crossing]:
    crossings: list[Crossing] = []
    for x, y in path:
        crossings.extend(counter.update([standing_at(track_id, x, y, class_id)]))
    return crossings


def test_left_of_a_to_b_is_up_the_screen_when_b_is_to_the_right_of_a():
    # Looking from A=(0,100) towards B=(200,100) on the displayed image (y grows downwards), the left hand points
    # up the screen: y=50 is LEFT (negative offset), y=150 is RIGHT.
    distance, along = signed_offsets(np.array([[100, 50], [100, 150], [0, 100]]), np.array(A), np.array(B))
    assert distance.tolist() == [-50.0, 50.0, 0.0]
    assert along.tolist() == [0.5, 0.5, 0.0]
    # looking down the screen from (0,0) to (0,100), the left hand points to +x
    distance, _ = signed_offsets(np.array([[50, 50]]), np.array([0.0, 0.0]), np.array([0.0, 100.0]))
    assert distance.tolist() == [-50.0]


def test_moving_down_across_a_left_to_right_line_goes_from_left_to_right():
    in_is_left = LineCounter([LineSpec("door", (A, B), in_side=Side.LEFT)], FRAME, NAMES)
    assert walk(in_is_left, 1, [(100, 50), (100, 80), (100, 120), (100, 150)]) == [
        Crossing("door", 1, 0, Direction.OUT)]
    assert in_is_left.counts == {"door": {"person": {"in": 0, "out": 1}}}
    in_is_right = LineCounter([LineSpec("door", (A, B), in_side=Side.RIGHT)], FRAME, NAMES)
    assert walk(in_is_right, 1, [(100, 50), (100, 80), (100, 120), (100, 150)]) == [
        Crossing("door", 1, 0, Direction.IN)]
    assert in_is_right.counts == {"door": {"person": {"in": 1, "out": 0}}}


def test_a_straight_crossing_counts_once_however_long_the_track_stays():
    counter = LineCounter([LineSpec("door", (A, B))], FRAME, NAMES)
    crossings = walk(counter, 1, [(100, y) for y in range(40, 200, 5)])
    assert crossings == [Crossing("door", 1, 0, Direction.OUT)]
    assert counter.counts == {"door": {"person": {"in": 0, "out": 1}}}


def test_jitter_within_the_hysteresis_band_never_counts():
    counter = LineCounter([LineSpec("door", (A, B))], FRAME, NAMES)  # 8 px either side
    assert walk(counter, 1, [(100, 50)] + [(100, 100 + d) for d in (-7, 7, -7.9, 7.9, -3, 5)] * 5) == []
    assert walk(counter, 2, [(100, 100 + d) for d in (-7, 7, -7.9, 7.9, -3, 5)] * 5) == []
    assert counter.counts == {"door": {}}


def test_jitter_larger_than_the_band_counts_every_real_crossing():
    counter = LineCounter([LineSpec("door", (A, B), in_side=Side.LEFT)], FRAME, NAMES)
    crossings = walk(counter, 1, [(100, 91), (100, 109), (100, 91), (100, 109), (100, 100), (100, 91)])
    assert [crossing.direction for crossing in crossings] == [
        Direction.OUT, Direction.IN, Direction.OUT, Direction.IN]
    assert counter.counts == {"door": {"person": {"in": 2, "out": 2}}}


def test_a_crossing_beyond_the_segment_ends_does_not_count():
    counter = LineCounter([LineSpec("door", (A, B))], FRAME, NAMES)
    assert walk(counter, 1, [(250, 50), (250, 150), (201, 50), (201, 150)]) == []
    assert walk(counter, 2, [(-1, 50), (-1, 150)]) == []
    # the ends themselves are part of the segment
    assert len(walk(counter, 3, [(200, 50), (200, 150)])) == 1


def test_a_track_first_seen_on_the_far_side_does_not_count_until_it_crosses_back():
    counter = LineCounter([LineSpec("door", (A, B))], FRAME, NAMES)
    assert walk(counter, 1, [(100, 150), (100, 160), (100, 170)]) == []
    assert walk(counter, 2, [(100, 97), (100, 103), (100, 150)]) == []  # first firm side: right
    assert walk(counter, 2, [(100, 50)]) == [Crossing("door", 2, 0, Direction.IN)]


def test_forget_drops_the_remembered_side():
    counter = LineCounter([LineSpec("door", (A, B))], FRAME, NAMES)
    walk(counter, 1, [(100, 50)])
    counter.forget([1, 42])
    assert walk(counter, 1, [(100, 150)]) == []
    assert counter.counts == {"door": {}}


def test_several_tracks_lines_and_classes_in_one_frame():
    lines = parse_lines("cameras.dock-1.lines", {
        "door": {"points": [A, B], "in": "right"},
        "belt": {"points": [[0.5, 0], [0.5, 1]], "classes": ["box"]}})  # x = 320, top to bottom
    counter = LineCounter(lines, FRAME, NAMES)
    assert counter.update([standing_at(1, 100, 50), standing_at(2, 300, 300, 1), standing_at(3, 300, 300)]) == ()
    crossings = counter.update([standing_at(1, 100, 150), standing_at(2, 340, 300, 1), standing_at(3, 340, 300)])
    # looking down the screen along the belt line, +x is LEFT: box 2 moved from right to left, into `left`
    assert crossings == (Crossing("door", 1, 0, Direction.IN), Crossing("belt", 2, 1, Direction.IN))
    assert counter.counts == {"door": {"person": {"in": 1, "out": 0}}, "belt": {"box": {"in": 1, "out": 0}}}


def test_min_distance_in_pixels_and_as_a_fraction_of_the_diagonal():
    pixels = LineCounter([LineSpec("door", (A, B), min_distance=20.0)], FRAME, NAMES)
    assert walk(pixels, 1, [(100, 50), (100, 115)]) == []
    assert len(walk(pixels, 1, [(100, 120)])) == 1
    fraction = LineCounter([LineSpec("door", (A, B), min_distance=0.05)], FRAME, NAMES)  # 40 px
    assert walk(fraction, 1, [(100, 50), (100, 139)]) == []
    assert len(walk(fraction, 1, [(100, 140)])) == 1


def test_objects_the_line_filter_drops_do_not_move_their_side():
    counter = LineCounter([LineSpec("door", (A, B), filter=DetectionFilter(min_score=0.5))], FRAME, NAMES)
    counter.update([standing_at(1, 100, 50)])
    assert counter.update([Obj(1, (90, 110, 110, 150), 0, 0.4)]) == ()
    assert len(counter.update([standing_at(1, 100, 150)])) == 1


def test_parse_lines_full_and_shorthand():
    lines = parse_lines("cameras.dock-1.lines", {
        "door": {"points": [[0, 100], [200, 100]], "in": "Right", "min_distance": "12", "min_score": 0.3},
        "belt": [[0.5, 0], [0.5, 1]]})
    assert lines == (
        LineSpec("door", ((0.0, 100.0), (200.0, 100.0)), Side.RIGHT, 12.0,
                 DetectionFilter("cameras.dock-1.lines.door", min_score=0.3)),
        LineSpec("belt", ((0.5, 0.0), (0.5, 1.0)), filter=DetectionFilter("cameras.dock-1.lines.belt")))
    assert parse_lines("lines", None) == ()


@pytest.mark.parametrize(("value", "key", "bad"), [
    ({"door": {"points": [A, B], "in": "up"}}, "cameras.dock-1.lines.door.in", "up"),
    ({"door": {"points": [A, B], "min_distance": -1}}, "cameras.dock-1.lines.door.min_distance", -1),
    ({"door": {"points": [A, A]}}, "cameras.dock-1.lines.door.points", [A, A]),
    ({"door": {"points": [A, B, A]}}, "cameras.dock-1.lines.door.points", [A, B, A]),
    ({"door": {"points": [A, B], "out": "left"}}, "cameras.dock-1.lines.door.out", "left"),
    ({"door": {"in": "left"}}, "cameras.dock-1.lines.door.points", None),
    ({"door": {"points": [A, B], "min_area": "big"}}, "cameras.dock-1.lines.door.min_area", "big"),
    ({"door": [A, ("x", 1)]}, "cameras.dock-1.lines.door[1]", "x"),
    ({"door/1": [A, B]}, "cameras.dock-1.lines", "door/1"),
])
def test_config_errors_name_the_full_key(value, key, bad):
    with pytest.raises(ConfigError) as raised:
        parse_lines("cameras.dock-1.lines", value)
    assert (raised.value.key, raised.value.value) == (key, bad)


def test_unknown_line_class_is_reported_when_the_counter_is_made():
    lines = parse_lines("cameras.dock-1.lines", {"belt": {"points": [A, B], "classes": "pallet"}})
    with pytest.raises(ConfigError) as raised:
        LineCounter(lines, FRAME, NAMES)
    assert (raised.value.key, raised.value.value) == ("cameras.dock-1.lines.belt.classes", "pallet")
