"""Time per frame of the whole scene step: tracking + zones + lines + per-object events (Scene.update).

The same synthetic detections as tracker_bench.py (N objects bouncing around a 1920×1080 frame with
jitter, weak and missing boxes and spurious ones), through `yolo_edge.scene.events.Scene` with 4 zones
(loitering on, one with a class list) and 2 counting lines, as the component runs it per camera. The
target is at most 2 ms per frame at 50 objects (p50 and p99 printed; warm-up frames left out).

    python benchmarks/scene_bench.py             # 50 objects, 1000 frames
    python benchmarks/scene_bench.py --smoke     # 10 objects, 60 frames
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tracker_bench import scene

from yolo_edge.scene.events import Scene, SceneSettings
from yolo_edge.scene.lines import parse_lines
from yolo_edge.scene.zones import parse_zones

NAMES = {0: "person", 1: "car", 2: "forklift"}
ZONES = {
    "dock": {"points": [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]], "loitering_s": 5},
    "press": {"points": [[0.5, 0], [1, 0], [1, 0.5], [0.5, 0.5]], "classes": ["person"]},
    "aisle": {"points": [[0, 0.5], [0.5, 0.5], [0.4, 1], [0, 1]], "inertia": 5},
    "gate": {"points": [[0.5, 0.5], [1, 0.5], [1, 1], [0.6, 1], [0.55, 0.8]]},
}
LINES = {"entry": {"points": [[0.5, 0], [0.5, 1]]}, "belt": {"points": [[0, 0.5], [1, 0.5]], "in": "right"}}


def measure(objects: int, frames: int, warmup: int, seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    settings = SceneSettings(parse_zones("zones", ZONES), parse_lines("lines", LINES))
    watched = Scene(settings, NAMES)
    times, counts = [], {"events": 0, "crossings": 0}
    for index, frame in enumerate(scene(objects, frames, seed)):
        start = time.perf_counter()
        update = watched.update(frame.boxes, frame.scores, frame.class_ids, (1080, 1920), time.time(),
                                index / 20.0)
        elapsed = time.perf_counter() - start
        if index >= warmup:
            times.append(elapsed * 1000)
        counts["events"] += len(update.events)
        counts["crossings"] += len(update.crossings)
    return np.asarray(times), counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="10 objects, 60 frames: proves the script works")
    args = parser.parse_args(argv)
    objects, frames = (10, 60) if args.smoke else (args.objects, args.frames)
    warmup = min(50, frames // 4)
    times, counts = measure(objects, frames, warmup)
    print("| step | objects | zones | lines | frames | p50 ms | p99 ms | max ms | events | crossings |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| tracking + zones + lines + events | {objects} | {len(ZONES)} | {len(LINES)} | {len(times)} | "
          f"{np.percentile(times, 50):.3f} | {np.percentile(times, 99):.3f} | {times.max():.3f} | "
          f"{counts['events']} | {counts['crossings']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
