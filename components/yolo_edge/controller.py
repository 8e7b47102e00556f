"""The single owner of the component's state: idle → running ⇄ paused → idle.

Commands, configuration updates and live-source events arrive on one queue (transports and the
source reader only enqueue). The controller thread owns the model, the frame feeder and the run
statistics; nothing else mutates them. When idle or paused it blocks on the queue, so it uses no
CPU. Nothing that goes wrong in a command, a model or a source stops this thread: each failure is
published as an error message and the component stays controllable.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Dict

from . import messages
from .backends import ModelLoadError
from .commands import Command, CommandError, parse_command
from .config import Config, ConfigError
from .metrics import RollingFPS, RunStats
from .pipeline import FeedItem, FrameFeeder
from .predictor import PostprocessSettings, Predictor, load_predictor
from .sources import FrameSource, SourceError, SourceEvent, open_source

log = logging.getLogger(__name__)

Emit = Callable[[Dict[str, Any]], None]

MODEL_KEYS = ("model_loc", "model_height", "model_width", "device", "half", "threads", "task")
SOURCE_KEYS = ("camera_id", "loop_source")
FEED_TIMEOUT_S = 0.2
# Error replies: a burst of ERROR_BURST, then ERROR_RATE_PER_S; the rest are counted, not published.
ERROR_BURST = 20
ERROR_RATE_PER_S = 1.0


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


@dataclass(frozen=True)
class _SourceEvent:
    source: FrameSource
    event: SourceEvent


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


class Controller:
    def __init__(self, config: Config, emit: Emit,
                 predictor_factory: Callable[[Config], Predictor] = load_predictor,
                 source_factory: Callable[[str, bool], FrameSource] = open_source,
                 on_input_topic: Callable[[str], None] | None = None, *,
                 error_burst: int = ERROR_BURST, error_rate_per_s: float = ERROR_RATE_PER_S,
                 summary_extras: Callable[[], dict[str, Any]] | None = None) -> None:
        self.config = config
        self._emit = emit
        self._predictor_factory = predictor_factory
        self._source_factory = source_factory
        self._on_input_topic = on_input_topic
        self._events: queue.Queue = queue.Queue()
        self.state = State.IDLE
        self.predictor: Predictor | None = None
        self._model_config: Config | None = None  # the configuration `predictor` was loaded with
        self.feeder: FrameFeeder | None = None
        self.stats = RunStats()
        self.fps = RollingFPS()
        self._gate = PublishGate(config.max_publish_rate)
        self._batch: list[dict[str, Any]] = []
        self._seq = 0
        self._last_summary = 0.0
        self._done = threading.Event()
        self.commands_rejected = 0
        self.source_outages = 0
        self._errors = ErrorLimiter(error_burst, error_rate_per_s)
        self._summary_extras = summary_extras

    # ---- called from other threads: only enqueue ----
    def submit_command(self, payload: bytes) -> None:
        self._put(_CommandEvent(bytes(payload)))

    def submit_config(self, values: dict[str, Any]) -> None:
        self._put(_ConfigEvent(dict(values)))

    def request_shutdown(self, reason: str = "shutdown") -> None:
        self._put(_ShutdownEvent(reason))

    def _put(self, event: object) -> None:
        self._events.put(event)
        feeder = self.feeder
        if feeder is not None:
            feeder.wake()  # events go before the next frame: a pause stops before one more inference

    def wait_done(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    # ---- the controller thread ----
    def run(self) -> None:
        try:
            self._emit_state(State.IDLE, State.IDLE, "component started")
            self._guarded(self._ensure_model)
            while True:
                event = self._next_event()
                if isinstance(event, _ShutdownEvent):
                    self._guarded(self._shutdown, event.reason)
                    return
                if event is None:
                    self._guarded(self._step)
                else:
                    self._guarded(self._handle, event)
        finally:
            self._done.set()

    def _guarded(self, action: Callable[..., Any], *args: Any) -> None:
        """Run one unit of work; an unexpected exception ends the run, never the controller thread."""
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - the thread must survive anything a model or source does
            log.exception("internal error")
            self._error("internal_error", f"unexpected {type(exc).__name__}: {exc}")
            if self.state is not State.IDLE:
                try:
                    self._finish_run("internal error", error=exc)
                except Exception:  # noqa: BLE001
                    log.exception("could not end the run cleanly")
                    self.feeder, self.state = None, State.IDLE

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
                # Log what is published; a flood of bad commands must not flood the log either.
                published = self._error(exc.code, exc.message, exc.request_id)
                log.log(logging.WARNING if published else logging.DEBUG, "rejected command: %s", exc.message)
                return
            self._command(command)
        elif isinstance(event, _ConfigEvent):
            self._reconfigure(event.values)
        elif isinstance(event, _SourceEvent):
            self._source_event(event)

    def _error(self, code: str, message: str, request_id: str | None = None, **extra: Any) -> bool:
        """Publish an error reply, unless the error budget is spent (then it is only counted).
        Returns whether it was published."""
        if not self._errors.allow(time.monotonic()):
            log.debug("error reply suppressed (rate limit): %s", message)
            return False
        suppressed = self._errors.take_suppressed()
        if suppressed:
            extra["suppressed"] = suppressed  # errors not published since the previous error message
            log.warning("%d error replies were suppressed by the rate limit", suppressed)
        self._emit(messages.error_message(code, message, request_id, **extra))
        return True

    def _source_event(self, item: _SourceEvent) -> None:
        if self.feeder is None or item.source is not self.feeder.source:
            return  # from a source this run has already closed
        event = item.event
        if event.kind == "lost":
            self.source_outages += 1
            self._emit(messages.status_message("source_lost", event.message, camera_id=self.config.camera_id,
                                               state=self.state.value, **event.details))
        elif event.kind == "restored":
            self._emit(messages.status_message("source_restored", event.message,
                                               camera_id=self.config.camera_id, state=self.state.value,
                                               **event.details))

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
                self._error("invalid_transition", "cannot pause: the component is idle; send start first", rid,
                            state=state.value)
        elif command.action == "stop":
            if state is State.IDLE:
                self._emit_state(state, state, "already idle", rid, changed=False)
            else:
                self._finish_run("stop command", rid)

    def _model_is_current(self) -> bool:
        """True when the loaded model is the one the configuration names (with the same options)."""
        loaded = self._model_config
        return self.predictor is not None and loaded is not None and all(
            getattr(loaded, key) == getattr(self.config, key) for key in MODEL_KEYS)

    def _ensure_model(self, request_id: str | None = None, keep_previous: bool = False) -> bool:
        """Load the configured model unless it is loaded already; on failure publish why and return False.

        A model loaded earlier from another configuration is released first, so its memory is free
        for the new one, unless `keep_previous` (a swap during a run: the old model keeps running
        until the new one is ready, and stays if the new one fails).
        """
        if self._model_is_current():
            return True
        previous = self.predictor
        if previous is not None and not keep_previous:
            self.predictor, self._model_config = None, None
            previous.close()
            previous = None
        config = self.config
        started = time.perf_counter()
        try:
            predictor = self._predictor_factory(config)
        except Exception as exc:  # noqa: BLE001 - whatever a backend raises, the component stays up
            cause = _load_failure_cause(exc)
            log.error("cannot load model %s: %s", config.model_loc, cause)
            extra: dict[str, Any] = {"model_loc": config.model_loc, "cause": cause}
            if previous is not None:
                extra["running_model"] = previous.info.name
            self._error("model_load_failed", f"cannot load model {config.model_loc}: {cause} (the next start "
                        "or configuration change tries again)", request_id, **extra)
            return False
        if previous is not None:
            previous.close()
        self.predictor, self._model_config = predictor, config
        info = predictor.info
        load_s = time.perf_counter() - started
        log.info("loaded %s (%s, %s, %s) in %.2f s", info.name, info.format, info.task, info.runtime, load_s)
        self._emit(messages.status_message("model_loaded", f"loaded {info.name}", model=messages.model_block(info),
                                           model_loc=config.model_loc, load_s=round(load_s, 3)))
        return True

    def _start(self, request_id: str | None) -> None:
        if not self._ensure_model(request_id):
            return
        assert self.predictor is not None
        try:
            source = self._source_factory(self.config.camera_id, self.config.loop_source)
        except (SourceError, OSError) as exc:
            self._error("source_open_failed", str(exc), request_id, camera_id=self.config.camera_id)
            return
        self.feeder = self._new_feeder(source)
        now = time.monotonic()
        self.stats.reset(now)
        self.fps.reset()
        self.source_outages = 0
        self._last_summary = now
        self.state = State.RUNNING
        self._emit_state(State.RUNNING, State.IDLE, "start command", request_id, source=source.description,
                         model=self.predictor.info.name)

    def _new_feeder(self, source: FrameSource, paused: bool = False) -> FrameFeeder:
        assert self.predictor is not None
        feeder = FrameFeeder(source, self.predictor.prepare,
                             on_source_event=lambda event: self._put(_SourceEvent(source, event)))
        if paused:
            feeder.pause()
        return feeder.start()

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
                self._error("source_failed", str(item.error), camera_id=self.config.camera_id)
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
            cause = "out of memory" if isinstance(exc, MemoryError) else f"{type(exc).__name__}: {exc}"
            self._error("inference_failed", f"inference with {self.predictor.info.name} failed: {cause}; "
                        "the run has stopped, send start to try again", model_loc=self.config.model_loc,
                        cause=cause)
            self._finish_run("inference failed", error=exc)
            return
        now = time.monotonic()
        fps = self.fps.tick(now)
        self._seq += 1
        publish = self._gate.allow(now)
        if publish and self.config.publish_detections:
            # Segmentation polygons only for frames whose message carries them; their time is
            # post-processing, in the message and in the statistics alike.
            prediction.finish()
        self.stats.record(now, prediction.preprocess_ms, prediction.inference_ms, prediction.postprocess_ms)
        if publish:
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
        extra: dict[str, Any] = {"errors_suppressed": self._errors.suppressed_total}
        if feeder is not None:
            extra.update(frames_read=feeder.frames_read, frames_dropped_stale=feeder.frames_dropped)
            if feeder.source.live:
                extra.update(source_outages=self.source_outages,
                             source_connected=bool(getattr(feeder.source, "connected", True)))
        if self._model_config is not None and not self._model_is_current():
            extra["configured_model_loc"] = self.config.model_loc  # running an older model (see model_kept)
        if self._summary_extras is not None:
            try:
                extra.update(self._summary_extras())
            except Exception:  # noqa: BLE001 - counters from other parts must not break the summary
                log.exception("summary extras failed")
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
            self._error("invalid_config", str(exc), key=exc.key)
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
        """Load the newly configured model between frames. During a run the old model keeps running
        until the new one is ready, and keeps running if it fails (a later start retries the new one)."""
        running = self.state is not State.IDLE
        previous = self.predictor
        if self._ensure_model(keep_previous=running):
            if self.feeder is not None and self.predictor is not previous:
                # Frames already prepared for the old input size must be prepared again.
                self._restart_source()
            return
        if running and previous is not None:
            self._emit(messages.status_message(
                "model_kept", f"still running {previous.info.name} ({old_config.model_loc}); the configured "
                f"model {self.config.model_loc} could not be loaded and is retried at the next start",
                running_model=previous.info.name, running_model_loc=old_config.model_loc,
                configured_model_loc=self.config.model_loc))

    def _restart_source(self) -> None:
        paused = self.state is State.PAUSED
        if self.feeder is not None:
            self.feeder.stop()
            self.feeder = None
        assert self.predictor is not None
        try:
            source = self._source_factory(self.config.camera_id, self.config.loop_source)
        except (SourceError, OSError) as exc:
            self._error("source_open_failed", str(exc), camera_id=self.config.camera_id)
            self._finish_run("source could not be opened", error=exc)
            return
        self.feeder = self._new_feeder(source, paused)

    def _shutdown(self, reason: str) -> None:
        if self.state is not State.IDLE:
            self._finish_run(reason)
        if self.predictor is not None:
            self.predictor.close()
            self.predictor = None


def _load_failure_cause(exc: BaseException) -> str:
    """What went wrong loading a model, in words an operator can act on."""
    if isinstance(exc, ModelLoadError):
        return exc.cause
    if isinstance(exc, MemoryError):
        return f"out of memory while loading ({str(exc) or 'MemoryError'}); free memory or use a smaller model"
    return f"{type(exc).__name__}: {exc}"
