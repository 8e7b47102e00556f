"""Zones: polygon containment (edges, concave shapes, fractions), inertia, loitering, per-zone filters,
occupancy and entry counts, forget, and config errors named by their full key."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from yolo_edge.config import ConfigError
from yolo_edge.scene.filters import DetectionFilter
from yolo_edge.scene.zones import (
    ZoneMembership,
    ZoneSpec,
    ZoneTracker,
    anchor_points,
    parse_zones,
    points_in_polygon,
    resolve_points,
)

pytestmark = pytest.mark.runtime

NAMES = {0: "person", 1: "car"}
FRAME = (480, 640)  # height, width
SQUARE = ((100.0, 100.0), (300.0, 100.0), (300.0, 300.0), (100.0, 300.0))
INSIDE = (200.0, 200.0)
OUTSIDE = (500.0, 200.0)


@dataclass(frozen=True)
class Obj:
    track_id: int
    box: tuple[float, float, float, float]
    class_id: int = 0
    score: float = 0.9


def standing_at(track_id: int, anchor: tuple[float, float], class_id: int = 0, score: float = 0.9) -> Obj:
    """An object whose box's bottom centre is `anchor`."""
    x, y = anchor
    return Obj(track_id, (x - 20.0, y - 80.0, x + 20.0, y), class_id, score)


def test_points_in_a_square_edges_and_corners_count_as_inside():
    points = np.array([[200, 200], [100, 200], [300, 300], [200, 100], [99.9, 200], [300.1, 300], [200, 301]])
    assert points_in_polygon(points, np.array(SQUARE)).tolist() == [True, True, True, True, False, False, False]


def test_points_in_a_concave_polygon():
    # an L: the notch (200..300, 100..200) is outside
    ell = np.array([[100, 100], [200, 100], [200, 200], [300, 200], [300, 300], [100, 300]])
    points = np.array([[150, 150], [250, 150], [250, 250], [200, 150], [250, 200], [150, 299], [301, 250]])
    assert points_in_polygon(points, ell).tolist() == [True, False, True, True, True, True, False]


def test_points_in_polygon_with_no_points():
    assert points_in_polygon(np.zeros((0, 2)), np.array(SQUARE)).tolist() == []


def test_fractions_scale_by_width_and_height_and_pixels_stay():
    fractions = resolve_points([[0, 0], [0.5, 0], [0.5, 1.0], [0, 1]], FRAME)
    assert fractions.tolist() == [[0, 0], [320, 0], [320, 480], [0, 480]]
    assert resolve_points(SQUARE, FRAME).tolist() == [list(point) for point in SQUARE]
    left_half = fractions
    inside = points_in_polygon(np.array([[320, 479], [321, 10], [0, 0]]), left_half)
    assert inside.tolist() == [True, False, True]


def test_anchor_is_the_bottom_centre():
    assert anchor_points(np.array([[10, 20, 30, 60], [0, 0, 5, 5]])).tolist() == [[20, 60], [2.5, 5]]
    assert anchor_points(np.zeros((0, 4))).shape == (0, 2)


def run(tracker: ZoneTracker, frames: list[list[Obj]], start: float = 0.0, step: float = 1.0) -> list[dict]:
    """Updates at start, start+step, ...; each frame's members."""
    return [dict(tracker.update(objects, start + index * step).members) for index, objects in enumerate(frames)]


def test_inertia_before_entering_and_before_leaving():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=3)], FRAME, NAMES)
    positions = [INSIDE, INSIDE, INSIDE, INSIDE, OUTSIDE, OUTSIDE, OUTSIDE, OUTSIDE]
    members = [frame[1] for frame in run(tracker, [[standing_at(1, p)] for p in positions])]
    nothing = ZoneMembership((), (), (), ())
    in_press = ZoneMembership(("press",), (), (), ())
    assert members == [
        nothing, nothing,  # 2 frames inside: not yet
        ZoneMembership(("press",), ("press",), (), ()),  # the 3rd: entered, once
        in_press,
        in_press, in_press,  # 2 frames outside: still in
        ZoneMembership((), (), ("press",), ()),  # the 3rd: left
        nothing]


def test_an_interrupted_run_starts_over():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=3)], FRAME, NAMES)
    positions = [INSIDE, INSIDE, OUTSIDE, INSIDE, INSIDE, INSIDE]
    entered = [frame[1].entered for frame in run(tracker, [[standing_at(1, p)] for p in positions])]
    assert entered == [(), (), (), (), (), ("press",)]


def test_inertia_one_enters_on_the_first_frame():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=1)], FRAME, NAMES)
    assert tracker.update([standing_at(1, INSIDE)], 0.0).members[1].entered == ("press",)


def test_loitering_once_per_stay_timed_from_the_first_frame_inside():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=3, loitering_s=5.0)], FRAME, NAMES)
    # one frame a second: inside from t=0 (entered at t=2), loitering at t=5, out at t=7..9 (left at t=9),
    # back in from t=10 (entered at t=12), loitering again at t=15
    positions = [INSIDE] * 7 + [OUTSIDE] * 3 + [INSIDE] * 8
    frames = run(tracker, [[standing_at(1, p)] for p in positions])
    loitering = [t for t, frame in enumerate(frames) if frame[1].loitering]
    assert loitering == [5, 15]
    assert [t for t, frame in enumerate(frames) if frame[1].entered] == [2, 12]
    assert [t for t, frame in enumerate(frames) if frame[1].left] == [9]
    assert frames[5][1] == ZoneMembership(("press",), (), (), ("press",))


def test_loitering_waits_for_the_time_not_the_frames():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=1, loitering_s=2.0)], FRAME, NAMES)
    times = [0.0, 0.5, 1.0, 1.99, 2.0, 2.5, 30.0]
    loitering = [tracker.update([standing_at(1, INSIDE)], now).members[1].loitering for now in times]
    assert loitering == [(), (), (), (), ("press",), (), ()]


def test_per_zone_classes_and_min_score():
    zones = parse_zones("cameras.dock-1.zones", {
        "walkway": {"points": SQUARE, "inertia": 1, "classes": ["person"]},
        "lot": {"points": SQUARE, "inertia": 1, "min_score": 0.5}})
    tracker = ZoneTracker(zones, FRAME, NAMES)
    update = tracker.update([standing_at(1, INSIDE, class_id=0, score=0.9), standing_at(2, INSIDE, class_id=1),
                             standing_at(3, INSIDE, class_id=0, score=0.4)], 0.0)
    assert {track: member.zones for track, member in update.members.items()} == {
        1: ("walkway", "lot"), 2: ("lot",), 3: ("walkway",)}
    assert update.occupancy == {"walkway": {"person": 2}, "lot": {"person": 1, "car": 1}}


def test_occupancy_and_cumulative_entries():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=1), ZoneSpec("door", ((0, 0), (1, 0), (1, 0.1)))],
                          FRAME, NAMES)
    first = tracker.update([standing_at(1, INSIDE), standing_at(2, INSIDE), standing_at(3, INSIDE, class_id=1),
                            standing_at(4, OUTSIDE)], 0.0)
    assert first.occupancy == {"press": {"person": 2, "car": 1}, "door": {}}
    assert first.entries == {"press": {"person": 2, "car": 1}, "door": {}}
    assert first.members[4] == ZoneMembership((), (), (), ())
    # 1 leaves; 2 and 3 are not in this frame (occluded) and stay in; 4 enters
    second = tracker.update([standing_at(1, OUTSIDE), standing_at(4, INSIDE)], 1.0)
    assert set(second.members) == {1, 4}
    assert second.members[1].left == ("press",)
    assert second.occupancy == {"press": {"person": 2, "car": 1}, "door": {}}
    assert second.entries == {"press": {"person": 3, "car": 1}, "door": {}}
    # 1 comes back: a second entry for the same track
    third = tracker.update([standing_at(1, INSIDE)], 2.0)
    assert third.entries == {"press": {"person": 4, "car": 1}, "door": {}}
    assert third.occupancy == {"press": {"person": 3, "car": 1}, "door": {}}


def test_forget_drops_tracks_without_events_and_entries_stay():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=2)], FRAME, NAMES)
    run(tracker, [[standing_at(1, INSIDE), standing_at(2, INSIDE)]] * 2)
    tracker.forget([1, 99])
    update = tracker.update([], 2.0)
    assert update.members == {}
    assert update.occupancy == {"press": {"person": 1}}
    assert update.entries == {"press": {"person": 2}}
    # a forgotten id seen again starts over, with inertia
    assert tracker.update([standing_at(1, INSIDE)], 3.0).members[1].zones == ()
    assert tracker.update([standing_at(1, INSIDE)], 4.0).members[1].entered == ("press",)


def test_an_object_in_no_zone_and_a_tracker_with_no_zones():
    tracker = ZoneTracker([], FRAME, NAMES)
    update = tracker.update([standing_at(7, INSIDE)], 0.0)
    assert update.members == {7: ZoneMembership((), (), (), ())}
    assert (update.occupancy, update.entries) == ({}, {})


def test_unknown_labels_fall_back_to_the_class_id():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=1)], FRAME, NAMES)
    assert tracker.update([standing_at(1, INSIDE, class_id=5)], 0.0).occupancy == {"press": {"5": 1}}


def test_parse_zones_full_and_shorthand_in_config_order():
    zones = parse_zones("cameras.dock-1.zones", {
        "press": {"points": [[0.1, 0.5], [0.5, 0.5], [0.5, 1], [0.1, 1]], "inertia": "5", "loitering_s": 30,
                  "classes": "person", "min_score": 0.6, "min_area": 0.01},
        "door_2": [[10, 10], [100, 10], [100, 200]]})
    assert zones == (
        ZoneSpec("press", ((0.1, 0.5), (0.5, 0.5), (0.5, 1.0), (0.1, 1.0)), 5, 30.0,
                 DetectionFilter("cameras.dock-1.zones.press", ("person",), 0.6, 0.01)),
        ZoneSpec("door_2", ((10.0, 10.0), (100.0, 10.0), (100.0, 200.0)), 3, 0.0,
                 DetectionFilter("cameras.dock-1.zones.door_2")))
    assert parse_zones("zones", None) == ()
    assert parse_zones("zones", "") == ()
    assert parse_zones("zones", '{"a": [[0, 0], [1, 0], [1, 1]]}') == (
        ZoneSpec("a", ((0, 0), (1, 0), (1, 1)), filter=DetectionFilter("zones.a")),)


@pytest.mark.parametrize(("value", "key", "bad"), [
    ({"press": {"points": SQUARE, "inertia": 0}}, "cameras.dock-1.zones.press.inertia", 0),
    ({"press": {"points": SQUARE, "inertia": 2.5}}, "cameras.dock-1.zones.press.inertia", 2.5),
    ({"press": {"points": SQUARE, "loitering_s": -1}}, "cameras.dock-1.zones.press.loitering_s", -1),
    ({"press": {"points": SQUARE, "min_score": 2}}, "cameras.dock-1.zones.press.min_score", 2),
    ({"press": {"points": SQUARE, "dwell": 2}}, "cameras.dock-1.zones.press.dwell", 2),
    ({"press": {"inertia": 2}}, "cameras.dock-1.zones.press.points", None),
    ({"press": {"points": [[0, 0], [1, 1]]}}, "cameras.dock-1.zones.press.points", [[0, 0], [1, 1]]),
    ({"press": [[0, 0], [1, 1], [2, 2]]}, "cameras.dock-1.zones.press", [[0, 0], [1, 1], [2, 2]]),
    ({"press": [[0, 0], [1, "x"], [2, 0]]}, "cameras.dock-1.zones.press[1]", "x"),
    ({"press": [[0, 0], [1], [2, 0]]}, "cameras.dock-1.zones.press[1]", [1]),
    ({"press": [[0, 0], [-1, 5], [2, 0]]}, "cameras.dock-1.zones.press[1]", -1),
    ({"press": "0,0 1,0 1,1"}, "cameras.dock-1.zones.press", "0,0 1,0 1,1"),
    ({"press area": SQUARE}, "cameras.dock-1.zones", "press area"),
    ({"": SQUARE}, "cameras.dock-1.zones", ""),
    (["press"], "cameras.dock-1.zones", ["press"]),
])
def test_config_errors_name_the_full_key(value, key, bad):
    with pytest.raises(ConfigError) as raised:
        parse_zones("cameras.dock-1.zones", value)
    assert (raised.value.key, raised.value.value) == (key, bad)


def test_unknown_zone_class_is_reported_when_the_tracker_is_made():
    zones = parse_zones("cameras.dock-1.zones", {"press": {"points": SQUARE, "classes": ["person", "forklift"]}})
    with pytest.raises(ConfigError) as raised:
        ZoneTracker(zones, FRAME, NAMES)
    assert (raised.value.key, raised.value.value) == ("cameras.dock-1.zones.press.classes", "forklift")


def test_many_tracks_and_reused_rows_after_forget():
    tracker = ZoneTracker([ZoneSpec("press", SQUARE, inertia=1, loitering_s=10.0)], FRAME, NAMES)
    first = tracker.update([standing_at(track, INSIDE) for track in range(40)], 0.0)
    assert first.occupancy == {"press": {"person": 40}}
    tracker.forget(range(20))
    # 30 new tracks, 20 of them in the forgotten tracks' rows: no state carried over
    second = tracker.update([standing_at(track, OUTSIDE, class_id=1) for track in range(100, 130)], 9.0)
    assert all(member == ZoneMembership((), (), (), ()) for member in second.members.values())
    assert second.occupancy == {"press": {"person": 20}}
    third = tracker.update([standing_at(track, INSIDE, class_id=1) for track in range(100, 130)]
                           + [standing_at(track, INSIDE) for track in range(20, 40)], 10.0)
    assert third.occupancy == {"press": {"person": 20, "car": 30}}
    assert third.entries == {"press": {"person": 40, "car": 30}}
    assert sorted(track for track, member in third.members.items() if member.loitering) == list(range(20, 40))
    assert sorted(track for track, member in third.members.items() if member.entered) == list(range(100, 130))


def test_several_polygons_at_once_match_one_at_a_time():
    from yolo_edge.scene.geometry import PolygonSet

    polygons = [np.array(SQUARE), np.array([[100, 100], [200, 100], [200, 200], [300, 200], [300, 300], [100, 300]]),
                np.array([[0, 0], [640, 0], [320, 480]])]
    grid = np.array([[x, y] for x in range(0, 641, 10) for y in range(0, 481, 10)], dtype=np.float64)
    together = PolygonSet(polygons).contains(grid)
    for column, polygon in enumerate(polygons):
        assert together[:, column].tolist() == points_in_polygon(grid, polygon).tolist()
    # the square: 21 x 21 grid points; the L: those less the notch's 10 x 10; the triangle: per row y, the x from
    # 2y/3 to 640 - 2y/3 (counted exactly with fractions)
    assert together.sum(axis=0).tolist() == [441, 341, 1585]
