"""The publish-rate gate and the error-reply token bucket, without threads."""

from __future__ import annotations

import pytest

from yolo_edge.limits import ErrorLimiter, PublishGate

pytestmark = pytest.mark.runtime


def test_publish_gate_caps_the_rate_without_drifting_below_it():
    gate = PublishGate(10.0)
    allowed = sum(gate.allow(i / 100) for i in range(300))  # 100 frames/s for 3 s
    assert allowed in (30, 31)
    uncapped = PublishGate(0.0)
    assert all(uncapped.allow(i / 100) for i in range(50))


def test_error_limiter_allows_a_burst_then_the_rate_and_counts_the_rest():
    limiter = ErrorLimiter(burst=3, rate_per_s=1.0)
    assert [limiter.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limiter.suppressed == 2 and limiter.suppressed_total == 2
    assert limiter.allow(1.0) and not limiter.allow(1.1)
    assert limiter.take_suppressed() == 3 and limiter.suppressed == 0 and limiter.suppressed_total == 3
