"""Per-stage latency windows, rolling end-to-end FPS and percentiles; cheap enough for every frame."""

from __future__ import annotations

from collections import deque

import numpy as np

STAGES = ("preprocess", "inference", "postprocess", "total")


class RollingFPS:
    """Frames delivered per second over the last `window` frames (end to end, not 1/inference)."""

    def __init__(self, window: int = 30) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def tick(self, now: float) -> float:
        self._times.append(now)
        return self.value

    @property
    def value(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def reset(self) -> None:
        self._times.clear()


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, (50, 90, 99))
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "mean": round(float(arr.mean()), 3)}


class RunStats:
    """Counts and latency windows for one run (start → stop), summarised on demand."""

    def __init__(self, window: int = 2000) -> None:
        self.window = window
        self.reset(0.0)

    def reset(self, now: float) -> None:
        self.started = now
        self.frames = 0
        self.published = 0
        self.dropped = 0
        self.latencies: dict[str, deque[float]] = {stage: deque(maxlen=self.window) for stage in STAGES}
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None

    def record(self, now: float, preprocess: float, inference: float, postprocess: float) -> None:
        self.frames += 1
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.last_frame_at = now
        for stage, value in zip(STAGES, (preprocess, inference, postprocess,
                                          preprocess + inference + postprocess)):
            self.latencies[stage].append(value)

    def fps(self) -> float:
        """Average end-to-end FPS of the run, first to last frame."""
        if self.frames < 2 or self.first_frame_at is None or self.last_frame_at is None:
            return 0.0
        span = self.last_frame_at - self.first_frame_at
        return (self.frames - 1) / span if span > 0 else 0.0

    def latency_summary(self) -> dict[str, dict[str, float]]:
        return {stage: percentiles(list(values)) for stage, values in self.latencies.items()}
