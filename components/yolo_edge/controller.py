"""The single owner of the component's state: idle → running ⇄ paused → idle.

Commands and configuration updates arrive on one queue (transports only enqueue). The controller
thread owns the model, the frame feeder and the run statistics; nothing else mutates them. When
idle or paused it blocks on the queue, so it uses no CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from . import messages
from .backends import ModelLoadError
from .commands import Command, CommandError, parse_command
from .config import Config, ConfigError
from .metrics import RollingFPS, RunStats
from .pipeline import FeedItem, FrameFeeder
from .predictor import PostprocessSettings, Predictor, load_predictor
from .sources import FrameSource, SourceError, open_source

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]

MODEL_KEYS = ("model_loc", "model_height", "model_width", "device", "half", "threads", "task")
SOURCE_KEYS = ("camera_id", "loop_source")
FEED_TIMEOUT_S = 0.2


class State(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"


@dataclass(frozen=True)
class _CommandEvent:
    payload: bytes


@dataclass(frozen=True)
class _ConfigEvent:
    values: dict[str, Any]


@dataclass(frozen=True)
class _ShutdownEvent:
    reason: str


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


class Controller:
    def __init__(self, config: Config, emit: Emit,
                 predictor_factory: Callable[[Config], Predictor] = load_predictor,
                 source_factory: Callable[[str, bool], FrameSource] = open_source,
                 on_input_topic: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._emit = emit
        self._predictor_factory = predictor_factory
        self._source_factory = source_factory
        self._on_input_topic = on_input_topic
        self._events: queue.Queue = queue.Queue()
        self.state = State.IDLE
        self.predictor: Predictor | None = None
        self.feeder: FrameFeeder | None = None
        self.stats = RunStats()
        self.fps = RollingFPS()
        self._gate = PublishGate(config.max_publish_rate)
        self._batch: list[dict[str, Any]] = []
        self._seq = 0
        self._last_summary = 0.0
        self._done = threading.Event()
        self.commands_rejected = 0

    # ---- called from other threads: only enqueue ----
    def submit_command(self, payload: bytes) -> None:
        self._events.put(_CommandEvent(bytes(payload)))

    def submit_config(self, values: dict[str, Any]) -> None:
        self._events.put(_ConfigEvent(dict(values)))

    def request_shutdown(self, reason: str = "shutdown") -> None:
        self._events.put(_ShutdownEvent(reason))

    def wait_done(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # ---- the controller thread ----
    def run(self) -> None:
        try:
            self._emit_state(State.IDLE, State.IDLE, "component started")
            self._ensure_model()
            while True:
                event = self._next_event()
                if event is None:
                    self._step()
                elif isinstance(event, _ShutdownEvent):
                    self._shutdown(event.reason)
                    return
                else:
                    self._handle(event)
        finally:
            self._done.set()

    def _next_event(self) -> object | None:
        """Block while idle or paused; while running, return None when there is a frame to do."""
        if self.state is State.RUNNING:
            try:
                return self._events.get_nowait()
            except queue.Empty:
                return None
        return self._events.get()

    def _handle(self, event: object) -> None:
        if isinstance(event, _CommandEvent):
            try:
                command = parse_command(event.payload)
            except CommandError as exc:
                self.commands_rejected += 1
                log.warning("rejected command: %s", exc.message)
                self._emit(messages.error_message(exc.code, exc.message, exc.request_id))
                return
            self._command(command)
        elif isinstance(event, _ConfigEvent):
            self._reconfigure(event.values)

    def _command(self, command: Command) -> None:
        state, rid = self.state, command.request_id
        if command.action == "start":
            if state is State.RUNNING:
                self._emit_state(state, state, "already running", rid, changed=False)
            elif state is State.PAUSED:
                self._resume(rid)
            else:
                self._start(rid)
        elif command.action == "pause":
            if state is State.RUNNING:
                assert self.feeder is not None
                self.feeder.pause()
                self._flush_batch()
                self.state = State.PAUSED
                self._emit_state(State.PAUSED, state, "pause command", rid)
            elif state is State.PAUSED:
                self._emit_state(state, state, "already paused", rid, changed=False)
            else:
                self._emit(messages.error_message("invalid_transition", "cannot pause: the component is "
                                                  "idle; send start first", rid, state=state.value))
        elif command.action == "stop":
            if state is State.IDLE:
                self._emit_state(state, state, "already idle", rid, changed=False)
            else:
                self._finish_run("stop command", rid)

    def _ensure_model(self) -> bool:
        if self.predictor is not None:
            return True
        try:
            started = time.perf_counter()
            self.predictor = self._predictor_factory(self.config)
            info = self.predictor.info
            log.info("loaded %s (%s, %s, %s) in %.2f s", info.name, info.format, info.task, info.runtime,
                     time.perf_counter() - started)
            self._emit(messages.status_message("model_loaded", f"loaded {info.name}",
                                               model=messages.model_block(info),
                                               load_s=round(time.perf_counter() - started, 3)))
            return True
        except (ModelLoadError, ConfigError, ValueError, OSError, RuntimeError) as exc:
            log.error("model load failed: %s", exc)
            self._emit(messages.error_message("model_load_failed", str(exc), model_loc=self.config.model_loc))
            return False

    def _start(self, request_id: str | None) -> None:
        if not self._ensure_model():
            return
        assert self.predictor is not None
        try:
            source = self._source_factory(self.config.camera_id, self.config.loop_source)
        except (SourceError, OSError) as exc:
            self._emit(messages.error_message("source_open_failed", str(exc), request_id,
                                              camera_id=self.config.camera_id))
            return
        self.feeder = FrameFeeder(source, self.predictor.prepare).start()
        now = time.monotonic()
        self.stats.reset(now)
        self.fps.reset()
        self._last_summary = now
        self.state = State.RUNNING
        self._emit_state(State.RUNNING, State.IDLE, "start command", request_id, source=source.description)

    def _resume(self, request_id: str | None) -> None:
        assert self.feeder is not None
        self.fps.reset()  # the pause is not a slow frame
        self.feeder.resume()
        self.state = State.RUNNING
        self._emit_state(State.RUNNING, State.PAUSED, "start command (resume)", request_id)

    def _finish_run(self, reason: str, request_id: str | None = None, error: Exception | None = None) -> None:
        previous = self.state
        if self.feeder is not None:
            self.feeder.stop()
        self._flush_batch()
        self._emit_summary(final=True)
        self.feeder = None
        self.state = State.IDLE
        extra = {"error": str(error)} if error else {}
        self._emit_state(State.IDLE, previous, reason, request_id, **extra)

    def _step(self) -> None:
        assert self.feeder is not None and self.predictor is not None
        item = self.feeder.get(FEED_TIMEOUT_S)
        if item is None:
            return
        if item.end:
            if item.error is not None:
                log.error("source failed: %s", item.error)
                self._emit(messages.error_message("source_failed", str(item.error),
                                                  camera_id=self.config.camera_id))
                self._finish_run("source failed", error=item.error)
            else:
                self._finish_run("source ended")
            return
        self._infer(item)

    def _infer(self, item: FeedItem) -> None:
        assert self.predictor is not None and item.prepared is not None
        started = time.monotonic()
        try:
            prediction = self.predictor.infer_and_decode(item.prepared)
        except Exception as exc:  # noqa: BLE001 - a failing model must not kill the component
            log.exception("inference failed")
            self._emit(messages.error_message("inference_failed", f"{self.predictor.info.name}: {exc}"))
            self._finish_run("inference failed", error=exc)
            return
        now = time.monotonic()
        self.stats.record(now, prediction.preprocess_ms, prediction.inference_ms, prediction.postprocess_ms)
        fps = self.fps.tick(now)
        self._seq += 1
        if self._gate.allow(now):
            frame = item.prepared.frame
            self._publish_frame(messages.frame_message(
                seq=self._seq, info=self.predictor.info, source=self.feeder.source.description
                if self.feeder else "", frame_shape=frame.shape[:2], result=prediction.result,
                preprocess_ms=prediction.preprocess_ms, inference_ms=prediction.inference_ms,
                postprocess_ms=prediction.postprocess_ms, fps=fps,
                frame_age_ms=(started - item.captured_at) * 1000 if self.feeder and self.feeder.source.live
                else None, include_detections=self.config.publish_detections))
        else:
            self.stats.dropped += 1
        interval = self.config.summary_interval_s
        if interval and now - self._last_summary >= interval:
            self._emit_summary(final=False)

    def _publish_frame(self, frame: dict[str, Any]) -> None:
        self.stats.published += 1
        if self.config.frames_per_message <= 1:
            self._emit(frame)
            return
        self._batch.append(frame)
        if len(self._batch) >= self.config.frames_per_message:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if self._batch:
            self._emit(messages.frames_message(self._batch))
            self._batch = []

    def _emit_summary(self, final: bool) -> None:
        self._last_summary = time.monotonic()
        feeder = self.feeder
        extra = {}
        if feeder is not None:
            extra = {"frames_read": feeder.frames_read, "frames_dropped_stale": feeder.frames_dropped}
        self._emit(messages.summary_message(
            state=self.state.value, info=self.predictor.info if self.predictor else None,
            source=feeder.source.description if feeder else self.config.camera_id,
            frames=self.stats.frames, published=self.stats.published, not_published=self.stats.dropped,
            fps=self.stats.fps(), latency=self.stats.latency_summary(),
            elapsed_s=time.monotonic() - self.stats.started, final=final,
            commands_rejected=self.commands_rejected, **extra))

    def _emit_state(self, state: State, previous: State, reason: str, request_id: str | None = None,
                    **extra: Any) -> None:
        log.info("state %s -> %s (%s)", previous.value, state.value, reason)
        self._emit(messages.state_message(state.value, previous.value, reason, request_id, **extra))

    def _reconfigure(self, values: dict[str, Any]) -> None:
        try:
            new = Config.from_mapping(values)
        except ConfigError as exc:
            self._emit(messages.error_message("invalid_config", str(exc), key=exc.key))
            return
        old = self.config
        changed = [f.name for f in dataclasses.fields(Config) if getattr(old, f.name) != getattr(new, f.name)]
        if not changed:
            return
        log.info("configuration changed: %s", ", ".join(changed))
        self.config = new
        self._gate = PublishGate(new.max_publish_rate)
        if any(key in changed for key in MODEL_KEYS):
            self._swap_model(old)
        elif self.predictor is not None:
            self.predictor.settings = PostprocessSettings.from_config(new)
        if "event_topic" in changed and self._on_input_topic is not None:
            self._on_input_topic(new.event_topic)
        if any(key in changed for key in SOURCE_KEYS) and self.state is not State.IDLE:
            self._restart_source()
        self._emit(messages.status_message("config_applied", "configuration updated", changed=changed))

    def _swap_model(self, old_config: Config) -> None:
        """Load the new model between frames; keep the old one if the new one fails."""
        previous = self.predictor
        self.predictor = None
        if self._ensure_model():
            if previous is not None:
                previous.close()
            if self.feeder is not None:
                # Frames already prepared for the old input size must be prepared again.
                self._restart_source()
            return
        self.predictor = previous
        if previous is not None:
            self._emit(messages.status_message("model_kept", f"still running {previous.info.name} "
                                               f"({old_config.model_loc})"))

    def _restart_source(self) -> None:
        paused = self.state is State.PAUSED
        if self.feeder is not None:
            self.feeder.stop()
            self.feeder = None
        assert self.predictor is not None
        try:
            source = self._source_factory(self.config.camera_id, self.config.loop_source)
        except (SourceError, OSError) as exc:
            self._emit(messages.error_message("source_open_failed", str(exc), camera_id=self.config.camera_id))
            previous, self.state = self.state, State.IDLE
            self._emit_state(State.IDLE, previous, "source could not be opened")
            return
        self.feeder = FrameFeeder(source, self.predictor.prepare)
        if paused:
            self.feeder.pause()
        self.feeder.start()

    def _shutdown(self, reason: str) -> None:
        if self.state is not State.IDLE:
            self._finish_run(reason)
        if self.predictor is not None:
            self.predictor.close()
