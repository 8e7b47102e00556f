"""Rate limits on what the component publishes: error replies (a token bucket) and frame messages
(a steady cap). Pure bookkeeping on a caller-supplied clock; not thread-safe (one owner)."""

from __future__ import annotations

# Error replies: a burst of ERROR_BURST, then ERROR_RATE_PER_S; the rest are counted, not published.
ERROR_BURST = 20
ERROR_RATE_PER_S = 1.0


class ErrorLimiter:
    """Token bucket for error replies, so a flood of bad commands cannot flood the output topic."""

    def __init__(self, burst: int = ERROR_BURST, rate_per_s: float = ERROR_RATE_PER_S) -> None:
        self.burst = max(1, burst)
        self.rate_per_s = rate_per_s
        self._tokens = float(self.burst)
        self._updated: float | None = None
        self.suppressed = 0  # since the last error that was published
        self.suppressed_total = 0

    def allow(self, now: float) -> bool:
        if self._updated is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        self.suppressed_total += 1
        return False

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


class PublishGate:
    """Caps frame messages per second; frames over the cap are counted, not published."""

    def __init__(self, max_rate: float) -> None:
        self.interval = 1.0 / max_rate if max_rate > 0 else 0.0
        self._next = 0.0

    def allow(self, now: float) -> bool:
        if now < self._next:
            return False
        # Schedule from the ideal time, not `now`, so the rate does not drift below the cap.
        self._next = max(self._next + self.interval, now) if self._next else now + self.interval
        return True
