"""The single owner of the component's state: an event loop over the transition table.

Commands, configuration updates and live-source events arrive on one queue (transports and the
source reader only enqueue). The controller thread owns the model and the current `Run` (the feeder
and the run's statistics, made at start and dropped at its end); nothing else mutates them. Each
event is looked up in `transitions.TRANSITIONS` and its effects carried out here. When idle or paused
the thread blocks on the queue, so it uses no CPU. Nothing that goes wrong in a command, a model or a
source stops this thread: each failure is published as an error message and the component stays
controllable.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Union

from . import messages
from .codes import ErrorCode, StatusEvent
from .commands import Command, CommandError, parse_command
from .config import Config, ConfigError
from .frame_step import infer_frame
from .limits import ERROR_BURST, ERROR_RATE_PER_S, ErrorLimiter, PublishGate
from .model_slot import MODEL_KEYS, LoadFailed, ModelSlot
from .pipeline import FeedEnded, FeedFailed, FeedFrame, FrameFeeder
from .predictor import PostprocessSettings, Predictor, load_predictor
from .run import Run
from .sources import FrameSource, SourceError, SourceEvent, SourceEventKind, open_source
from .transitions import Effect, Event, State, Transition, transition

log = logging.getLogger(__name__)

Emit = Callable[[Dict[str, Any]], None]

SOURCE_KEYS = ("camera_id", "loop_source")
FEED_TIMEOUT_S = 0.2

__all__ = ["ERROR_BURST", "ERROR_RATE_PER_S", "Controller", "ErrorLimiter", "PublishGate", "State"]


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


_QueuedEvent = Union[_CommandEvent, _ConfigEvent, _ShutdownEvent, _SourceEvent]


class Controller:
    def __init__(self, config: Config, emit: Emit,
                 predictor_factory: Callable[[Config], Predictor] = load_predictor,
                 source_factory: Callable[[str, bool], FrameSource] = open_source,
                 on_input_topic: Callable[[str], None] | None = None, *,
                 error_burst: int = ERROR_BURST, error_rate_per_s: float = ERROR_RATE_PER_S,
                 summary_extras: Callable[[], dict[str, Any]] | None = None) -> None:
        self.config = config
        self._emit = emit
        self._source_factory = source_factory
        self._on_input_topic = on_input_topic
        self._events: queue.Queue[_QueuedEvent] = queue.Queue()
        self.state = State.IDLE
        self._model = ModelSlot(predictor_factory)
        self.current_run: Run | None = None  # the current run; None while idle
        self._seq = 0  # frame messages' sequence number, over the component's lifetime
        self._done = threading.Event()
        self.commands_rejected = 0
        self._errors = ErrorLimiter(error_burst, error_rate_per_s)
        self._summary_extras = summary_extras

    # ---- called from other threads: only enqueue ----
    def submit_command(self, payload: bytes) -> None:
        self._put(_CommandEvent(bytes(payload)))

    def submit_config(self, values: dict[str, Any]) -> None:
        self._put(_ConfigEvent(dict(values)))

    def request_shutdown(self, reason: str = "shutdown") -> None:
        self._put(_ShutdownEvent(reason))

    def _put(self, event: _QueuedEvent) -> None:
        self._events.put(event)
        run = self.current_run
        if run is not None:
            run.feeder.wake()  # events go before the next frame: a pause stops before one more inference

    def wait_done(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def feeder(self) -> FrameFeeder | None:
        """The current run's frame feeder; None while idle."""
        run = self.current_run
        return run.feeder if run is not None else None

    # ---- the controller thread ----
    def run(self) -> None:
        try:
            self._emit_state(State.IDLE, State.IDLE, "component started")
            self._guarded(self._ensure_model)
            while True:
                event = self._next_event()
                if isinstance(event, _ShutdownEvent):
                    self._guarded(self._apply, Event.SHUTDOWN, None, event.reason)
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
            self._error(ErrorCode.INTERNAL_ERROR, f"unexpected {type(exc).__name__}: {exc}")
            if self.state is not State.IDLE:
                try:
                    self._apply(Event.INTERNAL_ERROR, error=exc)
                except Exception:  # noqa: BLE001
                    log.exception("could not end the run cleanly")
                    self.current_run, self.state = None, State.IDLE

    def _next_event(self) -> _QueuedEvent | None:
        """Block while idle or paused; while running, return None when there is a frame to do."""
        if self.state is State.RUNNING:
            try:
                return self._events.get_nowait()
            except queue.Empty:
                return None
        return self._events.get()

    def _handle(self, event: _QueuedEvent) -> None:
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

    def _command(self, command: Command) -> None:
        self._apply(Event.for_action(command.action), command.request_id)

    # ---- the transition table's effects ----
    def _apply(self, event: Event, request_id: str | None = None, reason: str | None = None,
               error: Exception | None = None) -> None:
        """Look `event` up in the transition table and carry out its effects; the state message follows."""
        previous = self.state
        found = transition(previous, event)
        if found is None:
            return
        why = reason or found.reason
        for effect in found.effects:
            if not self._effect(effect, found, request_id, why):
                return  # the effect failed and said why; the state stays
        self.state = found.state
        if Effect.ACKNOWLEDGE in found.effects:
            self._emit_state(previous, previous, why, request_id, changed=False)
        elif Effect.REJECT in found.effects:
            return
        elif previous is not found.state:
            extra: dict[str, Any] = {"error": str(error)} if error else {}
            if Effect.START_RUN in found.effects and self.current_run is not None and self.predictor is not None:
                extra.update(source=self.current_run.source.description, model=self.predictor.info.name)
            self._emit_state(found.state, previous, why, request_id, **extra)

    def _effect(self, effect: Effect, found: Transition, request_id: str | None, reason: str) -> bool:
        """Carry out one effect; False when it failed (already reported) and the transition stops."""
        if effect is Effect.START_RUN:
            return self._start_run(request_id)
        if effect is Effect.RESUME_RUN:
            self._active()[0].resume()
        elif effect is Effect.PAUSE_RUN:
            self._active()[0].pause(self._emit)
        elif effect is Effect.END_RUN:
            self._end_run()
        elif effect is Effect.REJECT:
            self._error(ErrorCode.INVALID_TRANSITION, found.reason, request_id, state=self.state.value)
        elif effect is Effect.RELEASE_MODEL:
            self._model.release()
        return True

    def _start_run(self, request_id: str | None) -> bool:
        if not self._ensure_model(request_id) or self.predictor is None:
            return False
        try:
            source = self._source_factory(self.config.camera_id, self.config.loop_source)
        except (SourceError, OSError) as exc:
            self._error(ErrorCode.SOURCE_OPEN_FAILED, str(exc), request_id, camera_id=self.config.camera_id)
            return False
        self.current_run = Run(source, self.predictor, self.config.max_publish_rate, self._queue_source_event)
        return True

    def _active(self) -> tuple[Run, Predictor]:
        """The current run and its model; only called in RUNNING or PAUSED, which always have both."""
        run, predictor = self.current_run, self.predictor
        if run is None or predictor is None:
            raise RuntimeError(f"state {self.state.value} without a run and a model")
        return run, predictor

    def _end_run(self) -> None:
        run = self.current_run
        if run is None:
            return
        run.close(self._emit)
        self._emit_summary(run, final=True)
        self.current_run = None

    def _queue_source_event(self, source: FrameSource, event: SourceEvent) -> None:
        self._put(_SourceEvent(source, event))

    # ---- running ----
    def _step(self) -> None:
        run, predictor = self._active()
        item = run.next_item(FEED_TIMEOUT_S)
        if item is None:
            return
        if isinstance(item, FeedFailed):
            log.error("source failed: %s", item.error)
            self._error(ErrorCode.SOURCE_FAILED, str(item.error), camera_id=self.config.camera_id)
            self._apply(Event.SOURCE_FAILED, error=item.error)
        elif isinstance(item, FeedEnded):
            self._apply(Event.SOURCE_ENDED)
        else:
            self._infer(run, predictor, item)

    def _infer(self, run: Run, predictor: Predictor, item: FeedFrame) -> None:
        try:
            inferred = infer_frame(predictor, item, run.fps, run.gate, self.config.publish_detections)
        except Exception as exc:  # noqa: BLE001 - a failing model must not kill the component
            log.exception("inference failed")
            cause = "out of memory" if isinstance(exc, MemoryError) else f"{type(exc).__name__}: {exc}"
            self._error(ErrorCode.INFERENCE_FAILED, f"inference with {predictor.info.name} failed: {cause}; "
                        "the run has stopped, send start to try again", model_loc=self.config.model_loc,
                        cause=cause)
            self._apply(Event.INFERENCE_FAILED, error=exc)
            return
        self._seq += 1
        run.record(inferred)
        if inferred.published:
            run.publish(inferred, self._seq, self.config.frames_per_message, self.config.publish_detections,
                        self._emit)
        interval = self.config.summary_interval_s
        if interval and inferred.done_at - run.last_summary >= interval:
            self._emit_summary(run, final=False)

    # ---- replies ----
    def _error(self, code: ErrorCode, message: str, request_id: str | None = None, **extra: Any) -> bool:
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

    def _emit_summary(self, run: Run, final: bool) -> None:
        extra: dict[str, Any] = {"errors_suppressed": self._errors.suppressed_total,
                                 "commands_rejected": self.commands_rejected}
        if self._model.config is not None and not self._model.is_current(self.config):
            extra["configured_model_loc"] = self.config.model_loc  # running an older model (see model_kept)
        if self._summary_extras is not None:
            try:
                extra.update(self._summary_extras())
            except Exception:  # noqa: BLE001 - counters from other parts must not break the summary
                log.exception("summary extras failed")
        self._emit(run.summary_message(self.state.value, self.predictor.info if self.predictor else None, final,
                                       extra))

    def _emit_state(self, state: State, previous: State, reason: str, request_id: str | None = None,
                    **extra: Any) -> None:
        log.info("state %s -> %s (%s)", previous.value, state.value, reason)
        self._emit(messages.state_message(state.value, previous.value, reason, request_id, **extra))

    # ---- live sources ----
    def _source_event(self, item: _SourceEvent) -> None:
        run = self.current_run
        if run is None or item.source is not run.source:
            return  # from a source this run has already closed
        event = item.event
        if event.kind is SourceEventKind.LOST:
            run.source_outages += 1
            self._emit(messages.status_message(StatusEvent.SOURCE_LOST, event.message,
                                               camera_id=self.config.camera_id, state=self.state.value,
                                               **event.details))
        elif event.kind is SourceEventKind.RESTORED:
            self._emit(messages.status_message(StatusEvent.SOURCE_RESTORED, event.message,
                                               camera_id=self.config.camera_id, state=self.state.value,
                                               **event.details))

    # ---- the model ----
    @property
    def predictor(self) -> Predictor | None:
        return self._model.predictor

    def _ensure_model(self, request_id: str | None = None, keep_previous: bool = False) -> bool:
        """Load the configured model unless it is loaded already; on failure publish why and return False."""
        config = self.config
        if self._model.is_current(config):
            return True
        outcome = self._model.load(config, keep_previous)
        if isinstance(outcome, LoadFailed):
            extra: dict[str, Any] = {"model_loc": config.model_loc, "cause": outcome.cause}
            if outcome.kept is not None:
                extra["running_model"] = outcome.kept.info.name
            self._error(ErrorCode.MODEL_LOAD_FAILED, f"cannot load model {config.model_loc}: {outcome.cause} (the "
                        "next start or configuration change tries again)", request_id, **extra)
            return False
        info = outcome.predictor.info
        self._emit(messages.status_message(StatusEvent.MODEL_LOADED, f"loaded {info.name}",
                                           model=messages.model_block(info), model_loc=config.model_loc,
                                           load_s=round(outcome.load_s, 3)))
        return True

    # ---- configuration ----
    def _reconfigure(self, values: dict[str, Any]) -> None:
        try:
            new = Config.from_mapping(values)
        except ConfigError as exc:
            self._error(ErrorCode.INVALID_CONFIG, str(exc), key=exc.key)
            return
        old = self.config
        changed = [f.name for f in dataclasses.fields(Config) if getattr(old, f.name) != getattr(new, f.name)]
        if not changed:
            return
        log.info("configuration changed: %s", ", ".join(changed))
        self.config = new
        if self.current_run is not None:
            self.current_run.gate = PublishGate(new.max_publish_rate)
        if any(key in changed for key in MODEL_KEYS):
            self._swap_model(old)
        elif self.predictor is not None:
            self.predictor.settings = PostprocessSettings.from_config(new)
        if "event_topic" in changed and self._on_input_topic is not None:
            self._on_input_topic(new.event_topic)
        if any(key in changed for key in SOURCE_KEYS) and self.state is not State.IDLE:
            self._restart_source()
        self._emit(messages.status_message(StatusEvent.CONFIG_APPLIED, "configuration updated", changed=changed))

    def _swap_model(self, old_config: Config) -> None:
        """Load the newly configured model between frames. During a run the old model keeps running
        until the new one is ready, and keeps running if it fails (a later start retries the new one)."""
        running = self.state is not State.IDLE
        previous = self.predictor
        if self._ensure_model(keep_previous=running):
            if self.current_run is not None and self.predictor is not previous:
                # Frames already prepared for the old input size must be prepared again.
                self._restart_source()
            return
        if running and previous is not None:
            self._emit(messages.status_message(
                StatusEvent.MODEL_KEPT, f"still running {previous.info.name} ({old_config.model_loc}); the "
                f"configured model {self.config.model_loc} could not be loaded and is retried at the next start",
                running_model=previous.info.name, running_model_loc=old_config.model_loc,
                configured_model_loc=self.config.model_loc))

    def _restart_source(self) -> None:
        run, predictor = self._active()
        run.feeder.stop()  # first: a camera cannot be opened twice
        try:
            source = self._source_factory(self.config.camera_id, self.config.loop_source)
        except (SourceError, OSError) as exc:
            self._error(ErrorCode.SOURCE_OPEN_FAILED, str(exc), camera_id=self.config.camera_id)
            self._apply(Event.SOURCE_REOPEN_FAILED, error=exc)
            return
        run.replace_source(source, predictor, self._queue_source_event, paused=self.state is State.PAUSED)

