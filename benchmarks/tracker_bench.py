"""Time per frame of yolo_edge.scene.tracking.Tracker.update on a synthetic scene, and its id switches.

N objects bounce around a 1920×1080 frame at constant speeds for F frames. Each frame's detections are the
objects' boxes with ±2 px jitter, a random score (a quarter of them below high_threshold, so the second
association runs), 5 % of them missing, and 3 spurious one-frame boxes. Prints p50/p99/max ms per update
(warm-up frames left out) and, from the ground truth, how many ids each object got.

    python benchmarks/tracker_bench.py                     # 50 objects, 1000 frames
    python benchmarks/tracker_bench.py --smoke             # 10 objects, 60 frames
    python benchmarks/tracker_bench.py --supervision       # also supervision's ByteTrack (if installed)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import numpy as np

from yolo_edge.scene.tracking import Tracker

FRAME_SIZE = np.array([1920.0, 1080.0])
JITTER_PX = 2.0
MISSING_SHARE = 0.05
SPURIOUS_PER_FRAME = 3


@dataclass(frozen=True)
class Frame:
    boxes: np.ndarray  # (N, 4) xyxy
    scores: np.ndarray  # (N,)
    class_ids: np.ndarray  # (N,)
    objects: np.ndarray  # (N,) ground-truth object index, -1 for a spurious box


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float
    max_ms: float
    id_switches: int  # over all objects: ids an object got beyond its first
    objects_tracked: int  # objects that got an id at all


def scene(objects: int, frames: int, seed: int) -> Iterator[Frame]:
    """The synthetic detections, frame by frame."""
    rng = np.random.default_rng(seed)
    sizes = rng.uniform(30.0, 120.0, size=(objects, 2))
    centres = rng.uniform(sizes, FRAME_SIZE - sizes)
    velocities = rng.uniform(-6.0, 6.0, size=(objects, 2))
    class_ids = rng.integers(0, 3, size=objects)
    for _ in range(frames):
        centres = centres + velocities
        bounced = (centres < sizes / 2) | (centres > FRAME_SIZE - sizes / 2)
        velocities = np.where(bounced, -velocities, velocities)
        seen = np.nonzero(rng.random(objects) >= MISSING_SHARE)[0]
        jittered = centres[seen] + rng.uniform(-JITTER_PX, JITTER_PX, size=(seen.size, 2))
        boxes = np.concatenate([jittered - sizes[seen] / 2, jittered + sizes[seen] / 2], axis=1)
        scores = np.where(rng.random(seen.size) < 0.25, rng.uniform(0.15, 0.5, seen.size),
                          rng.uniform(0.6, 0.95, seen.size))
        spurious_corner = rng.uniform([0.0, 0.0], FRAME_SIZE - 60.0, size=(SPURIOUS_PER_FRAME, 2))
        spurious = np.concatenate([spurious_corner, spurious_corner + 40.0], axis=1)
        yield Frame(
            boxes=np.concatenate([boxes, spurious]),
            scores=np.concatenate([scores, rng.uniform(0.1, 0.7, SPURIOUS_PER_FRAME)]),
            class_ids=np.concatenate([class_ids[seen], rng.integers(0, 3, SPURIOUS_PER_FRAME)]),
            objects=np.concatenate([seen, np.full(SPURIOUS_PER_FRAME, -1)]),
        )


def run(update: Callable[[Frame], list[tuple]], frames: list[Frame], objects: int, warmup: int) -> Timing:
    """Times update(frame) per frame; update returns (detection index, track id) pairs."""
    times_ms = []
    ids_of_object: list[set] = [set() for _ in range(objects)]
    for index, frame in enumerate(frames):
        start = time.perf_counter()
        pairs = update(frame)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        if index >= warmup:
            times_ms.append(elapsed_ms)
        for detection_index, track_id in pairs:
            obj = int(frame.objects[detection_index])
            if obj >= 0:
                ids_of_object[obj].add(track_id)
    times = np.array(times_ms)
    return Timing(p50_ms=float(np.percentile(times, 50)), p99_ms=float(np.percentile(times, 99)),
                  max_ms=float(times.max()), id_switches=sum(max(len(ids) - 1, 0) for ids in ids_of_object),
                  objects_tracked=sum(1 for ids in ids_of_object if ids))


def yolo_edge_update() -> Callable[[Frame], list[tuple]]:
    tracker = Tracker()

    def update(frame: Frame) -> list[tuple]:
        result = tracker.update(frame.boxes, frame.scores, frame.class_ids)
        return [(state.detection_index, state.track_id) for state in result.tracked]

    return update


def supervision_update() -> Callable[[Frame], list[tuple]] | None:
    """supervision's ByteTrack (versions up to 0.25 have sv.ByteTrack), None when not installed."""
    try:
        import supervision as sv  # type: ignore[import-not-found]
    except ImportError:
        return None
    if not hasattr(sv, "ByteTrack"):
        return None
    tracker = sv.ByteTrack(frame_rate=30)

    def update(frame: Frame) -> list[tuple]:
        detections = sv.Detections(xyxy=frame.boxes.astype(np.float32), confidence=frame.scores.astype(np.float32),
                                   class_id=frame.class_ids.astype(int),
                                   data={"index": np.arange(len(frame.boxes))})
        tracked = tracker.update_with_detections(detections)
        return list(zip(tracked.data["index"].tolist(), tracked.tracker_id.tolist()))

    return update


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run: 10 objects, 60 frames, 5 warm-up")
    parser.add_argument("--objects", type=int, help="objects in the scene (default 50; smoke 10)")
    parser.add_argument("--frames", type=int, help="frames (default 1000; smoke 60)")
    parser.add_argument("--warmup", type=int, help="frames left out of the timing (default 20; smoke 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supervision", action="store_true",
                        help="also time supervision's ByteTrack on the same detections (if installed)")
    args = parser.parse_args(argv)
    defaults = (10, 60, 5) if args.smoke else (50, 1000, 20)
    args.objects = defaults[0] if args.objects is None else args.objects
    args.frames = defaults[1] if args.frames is None else args.frames
    args.warmup = defaults[2] if args.warmup is None else args.warmup
    if args.objects < 1 or args.frames <= args.warmup:
        parser.error("--objects must be at least 1 and --frames more than --warmup")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    frames = list(scene(args.objects, args.frames, args.seed))
    trackers = [("yolo-edge Tracker", yolo_edge_update())]
    if args.supervision:
        sv_update = supervision_update()
        if sv_update is None:
            print("supervision with sv.ByteTrack is not installed; timing yolo-edge only", file=sys.stderr)
        else:
            trackers.append(("supervision ByteTrack", sv_update))
    print(f"{args.objects} objects, {args.frames} frames ({args.warmup} warm-up), "
          f"{SPURIOUS_PER_FRAME} spurious boxes per frame, {MISSING_SHARE:.0%} missing, ±{JITTER_PX:g} px jitter\n")
    print("| tracker | objects | frames | p50 ms | p99 ms | max ms | objects tracked | id switches |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, update in trackers:
        timing = run(update, frames, args.objects, args.warmup)
        print(f"| {name} | {args.objects} | {args.frames} | {timing.p50_ms:.3f} | {timing.p99_ms:.3f} | "
              f"{timing.max_ms:.3f} | {timing.objects_tracked} | {timing.id_switches} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
