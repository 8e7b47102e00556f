"""Run metrics: the rolling FPS, latency percentiles and the run statistics."""

from __future__ import annotations

import pytest

from yolo_edge.metrics import RollingFPS, RunStats, percentiles

pytestmark = pytest.mark.runtime


def test_rolling_fps_counts_delivered_frames_per_second():
    fps = RollingFPS(window=10)
    for i in range(20):
        fps.tick(i * 0.05)
    assert fps.value == pytest.approx(20.0)


def test_percentiles_and_run_stats():
    assert percentiles([]) == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0}
    stats = RunStats()
    stats.reset(0.0)
    for i in range(100):
        stats.record(i * 0.1, 1.0, float(i), 2.0)
    summary = stats.latency_summary()
    assert summary["inference"]["p50"] == pytest.approx(49.5)
    assert summary["total"]["p99"] == pytest.approx(98.01 + 3.0)
    assert summary["inference"]["p50"] <= summary["inference"]["p90"] <= summary["inference"]["p99"]
    assert stats.fps() == pytest.approx(10.0)
