"""The controller's parts that are tested without threads: the publish-rate gate."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.runtime


def test_publish_gate_caps_the_rate_without_drifting_below_it():
    from yolo_edge.controller import PublishGate

    gate = PublishGate(10.0)
    allowed = sum(gate.allow(i / 100) for i in range(300))  # 100 frames/s for 3 s
    assert allowed in (30, 31)
    uncapped = PublishGate(0.0)
    assert all(uncapped.allow(i / 100) for i in range(50))
