"""The single owner of the component's state: an event loop over the cameras' transition table.

Commands, configuration updates and live-source events arrive on one queue (transports and the
source readers only enqueue). The controller thread owns the model, which every camera shares, and
each camera's state and `Run` (its feeder and statistics, made at its start and dropped at its end);
nothing else mutates them. Each event is looked up in `transitions.TRANSITIONS` for each camera it
concerns, and the effects are carried out here; one state message answers it. While any camera runs,
the loop gathers a batch of ready frames from the running cameras (`gather.FrameGatherer`) and infers
it in one call; where the model runs frames side by side, the next batch starts before this one is
decoded (`frame_step.FramesInFlight`), and every batch in flight is finished before any event is
carried out, so events see no frame half done. While none runs, the thread blocks on the queue and
uses no CPU. Nothing that goes wrong in a command, a model or a source stops this thread: each failure
is published as an error message and the component stays controllable; a camera's failure ends only
that camera's run.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Sequence, Union

from . import messages
from .codes import ErrorCode, StatusEvent
from .commands import Command, CommandError, parse_command
from .config import CameraSpec, Config, ConfigError
from .frame_step import FramesInFlight, InFlight, finish_frames
from .gather import FrameGatherer
from .limits import ERROR_BURST, ERROR_RATE_PER_S, ErrorLimiter, PublishGate
from .model_slot import MODEL_KEYS, LoadFailed, ModelSlot
from .pipeline import FeedEnded, FeedFailed, FeedFrame, FrameFeeder
from .predictor import PostprocessSettings, Predictor, load_predictor
from .replies import Outcome, Rejected, aggregate_state, camera_states, reply_for
from .run import Run, summary_message
from .scene_step import SCENE_KEYS, SceneFactory
from .sources import FrameSource, SourceError, SourceEvent, SourceEventKind, open_source
from .transitions import Effect, Event, State, transition

log = logging.getLogger(__name__)

Emit = Callable[[Dict[str, Any]], None]

FEED_TIMEOUT_S = 0.2
# Batch gathering waits at most one frame interval of the fastest running camera, within these bounds
# (AUTO_GATHER_S until an interval is known).
AUTO_GATHER_S = 0.02
MAX_GATHER_S = 0.1

__all__ = ["ERROR_BURST", "ERROR_RATE_PER_S", "Camera", "Controller", "ErrorLimiter", "PublishGate", "State"]


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
    camera: str
    source: FrameSource
    event: SourceEvent


_QueuedEvent = Union[_CommandEvent, _ConfigEvent, _ShutdownEvent, _SourceEvent]


class Camera:
    """One configured camera: what it reads, its state, and its run while it has one."""

    def __init__(self, spec: CameraSpec) -> None:
        self.spec = spec
        self.state = State.IDLE
        self.run: Run | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class _GatheredFrame:
    """A frame of the batch being inferred, with the camera and run it belongs to."""

    camera: Camera
    run: Run
    item: FeedFrame
    waiting_since: float  # see gather.Gathered


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
        self.cameras: dict[str, Camera] = {name: Camera(spec) for name, spec in config.camera_specs().items()}
        self._model = ModelSlot(predictor_factory)
        self._gatherer = FrameGatherer()
        self._gate = PublishGate(config.max_publish_rate)  # shared: the output topic's rate, all cameras
        self._seq = 0  # frame messages' sequence number, over the component's lifetime
        self._last_summary = 0.0
        self._done = threading.Event()
        self.commands_rejected = 0
        self._errors = ErrorLimiter(error_burst, error_rate_per_s)
        self._summary_extras = summary_extras
        self._scenes = SceneFactory()
        self._in_flight: FramesInFlight[list[_GatheredFrame]] = FramesInFlight()

    # ---- called from other threads: only enqueue ----
    def submit_command(self, payload: bytes) -> None:
        self._put(_CommandEvent(bytes(payload)))

    def submit_config(self, values: dict[str, Any]) -> None:
        self._put(_ConfigEvent(dict(values)))

    def request_shutdown(self, reason: str = "shutdown") -> None:
        self._put(_ShutdownEvent(reason))

    def _put(self, event: _QueuedEvent) -> None:
        self._events.put(event)
        self._gatherer.wake()  # events go before the next batch: a pause stops before one more inference

    def wait_done(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def state(self) -> State:
        return aggregate_state([camera.state for camera in self.cameras.values()])

    @property
    def feeder(self) -> FrameFeeder | None:
        """The first camera's frame feeder while it has a run (with one camera: the run's feeder)."""
        runs = [camera.run for camera in self.cameras.values() if camera.run is not None]
        return runs[0].feeder if runs else None

    @property
    def predictor(self) -> Predictor | None:
        return self._model.predictor

    # ---- the controller thread ----
    def run(self) -> None:
        try:
            self._emit_state(State.IDLE, State.IDLE, "component started",
                             cameras=camera_states({n: c.state for n, c in self.cameras.items()}, {}))
            self._guarded(self._ensure_model)
            while True:
                event = self._next_event()
                if event is not None and len(self._in_flight):
                    self._guarded(self._finish_in_flight)
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
        """Run one unit of work; an unexpected exception ends the runs, never the controller thread."""
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - the thread must survive anything a model or source does
            log.exception("internal error")
            self._error(ErrorCode.INTERNAL_ERROR, f"unexpected {type(exc).__name__}: {exc}")
            active = [camera for camera in self.cameras.values() if camera.state is not State.IDLE]
            if active:
                try:
                    self._apply(Event.INTERNAL_ERROR, active, error=exc)
                except Exception:  # noqa: BLE001
                    log.exception("could not end the runs cleanly")
                    for camera in active:
                        camera.run, camera.state = None, State.IDLE

    def _next_event(self) -> _QueuedEvent | None:
        """Block while no camera runs; while one does, return None when there is a batch to do."""
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
        if command.camera is None:
            targets = list(self.cameras.values())
        elif command.camera in self.cameras:
            targets = [self.cameras[command.camera]]
        else:
            self.commands_rejected += 1
            known = list(self.cameras)
            self._error(ErrorCode.UNKNOWN_CAMERA, f"no camera {command.camera!r}; the cameras are "
                        f"{', '.join(known)}", command.request_id, camera=command.camera, known_cameras=known)
            return
        self._apply(Event.for_action(command.action), targets, command.request_id, named=command.camera)

    # ---- the transition table's effects ----
    def _apply(self, event: Event, cameras: Sequence[Camera], request_id: str | None = None,
               reason: str | None = None, error: Exception | None = None, named: str | None = None) -> None:
        """Look `event` up for each camera and carry out its effects; one state message answers for all.
        `named`: the camera the event is about (a command for one camera, one camera's source)."""
        before = self.state
        if event is Event.START and any(camera.state is State.IDLE for camera in cameras) \
                and not self._ensure_model_for_start(request_id):
            cameras = [camera for camera in cameras if camera.state is not State.IDLE]  # said why already
        outcomes: list[Outcome] = []
        ended: dict[str, Run] = {}
        for camera in cameras:
            found = transition(camera.state, event)
            if found is None:
                continue
            previous = camera.state
            applied = all(self._effect(effect, camera, request_id, ended) for effect in found.effects)
            if applied:
                camera.state = found.state
            outcomes.append(Outcome(camera.name, previous, camera.state, found, applied))
        if ended:
            self._emit_summary(ended, final=True, state=before)
        self._reply(outcomes, before, request_id, reason, error, named)

    def _effect(self, effect: Effect, camera: Camera, request_id: str | None, ended: dict[str, Run]) -> bool:
        """Carry out one effect for `camera`; False when it failed (already reported) and the transition stops."""
        if effect is Effect.START_RUN:
            return self._start_run(camera, request_id)
        run = camera.run
        if effect is Effect.RESUME_RUN and run is not None:
            run.resume()
        elif effect is Effect.PAUSE_RUN and run is not None:
            run.pause(self._emit)
        elif effect is Effect.END_RUN and run is not None:
            run.close(self._emit)
            ended[camera.name] = run
            camera.run = None
        return True

    def _reply(self, outcomes: Sequence[Outcome], before: State, request_id: str | None, reason: str | None,
               error: Exception | None, named: str | None) -> None:
        """Send the one reply `replies.reply_for` decides on."""
        states = {name: camera.state for name, camera in self.cameras.items()}
        reply = reply_for(outcomes, states, reason, error, named)
        if isinstance(reply, Rejected):
            self._error(ErrorCode.INVALID_TRANSITION, reply.reason, request_id, state=self.state.value,
                        **({"camera": named} if named else {}))
        elif reply is not None:
            fields = dict(reply.fields)
            runs = [self.cameras[name].run for name in reply.started]
            if len(runs) == 1 and runs[0] is not None:
                fields["source"] = runs[0].source.description
            if runs and self.predictor is not None:
                fields["model"] = self.predictor.info.name
            if before is State.IDLE and self.state is not State.IDLE:
                self._last_summary = time.monotonic()
            self._emit_state(self.state, before, reply.reason, request_id, **fields)

    def _start_run(self, camera: Camera, request_id: str | None) -> bool:
        predictor = self.predictor
        if predictor is None:
            return False
        try:
            self._scenes.check(camera.spec, predictor.info.names)
        except ConfigError as exc:
            self._error(ErrorCode.INVALID_CONFIG, str(exc), request_id, camera=camera.name, key=exc.key)
            return False
        try:
            source = self._source_factory(camera.spec.source, bool(camera.spec.loop_source))
        except (SourceError, OSError) as exc:
            self._error(ErrorCode.SOURCE_OPEN_FAILED, str(exc), request_id, camera=camera.name,
                        camera_id=camera.spec.source)
            return False
        camera.run = Run(camera.name, source, predictor, self._source_event_handler(camera.name),
                         on_ready=self._gatherer.notify, max_fps=camera.spec.max_fps,
                         scene=self._scenes.reporter(camera.spec, self.config, predictor.info.names))
        return True

    def _renew_scenes(self, cameras: Sequence[Camera]) -> None:
        """New scenes for these cameras' runs (settings or model changed): the old ones' objects end first."""
        runs = [camera.run for camera in cameras if camera.run is not None]
        for run in runs:
            run.end_scene(self._emit)
        predictor = self.predictor
        for camera in cameras:
            if camera.run is not None and predictor is not None:
                camera.run.scene = self._scenes.reporter(camera.spec, self.config, predictor.info.names)

    def _source_event_handler(self, camera: str) -> Callable[[FrameSource, SourceEvent], None]:
        def queue_it(source: FrameSource, event: SourceEvent) -> None:
            self._put(_SourceEvent(camera, source, event))

        return queue_it

    def _shutdown(self, reason: str) -> None:
        self._apply(Event.SHUTDOWN, list(self.cameras.values()), reason=reason)
        self._model.release()
        self._scenes.close()

    # ---- running ----
    def _step(self) -> None:
        predictor = self.predictor
        runs = {name: camera.run for name, camera in self.cameras.items()
                if camera.state is State.RUNNING and camera.run is not None}
        if predictor is None or not runs:
            raise RuntimeError(f"state {self.state.value} without a model or a run")
        gathered = self._gatherer.gather([(name, run.feeder) for name, run in runs.items()],
                                         self._max_batch(predictor, len(runs)), FEED_TIMEOUT_S,
                                         self._gather_timeout(list(runs.values())))
        frames: list[_GatheredFrame] = []
        for item in gathered:
            camera = self.cameras[item.camera]
            if isinstance(item.item, FeedFrame):
                frames.append(_GatheredFrame(camera, runs[camera.name], item.item, item.waiting_since))
                continue
            self._finish_in_flight()  # the camera's last frames are reported before its run ends
            if isinstance(item.item, FeedFailed):
                log.error("camera %s: source failed: %s", camera.name, item.item.error)
                self._error(ErrorCode.SOURCE_FAILED, str(item.item.error), camera=camera.name,
                            camera_id=camera.spec.source)
                self._apply(Event.SOURCE_FAILED, [camera], error=item.item.error, named=camera.name)
            elif isinstance(item.item, FeedEnded):
                self._apply(Event.SOURCE_ENDED, [camera], named=camera.name)
        live = [frame for frame in frames if frame.camera.run is frame.run]
        if len(live) < len(frames):  # an inference error of a batch finished above ended their run
            log.info("%d gathered frame(s) of ended runs not inferred", len(frames) - len(live))
        if live:
            self._infer(predictor, live)
        else:
            self._finish_in_flight()  # nothing new to start: report what is running now

    def _max_batch(self, predictor: Predictor, running: int) -> int:
        wanted = self.config.batch_size or running
        return max(1, min(wanted, running, predictor.info.max_batch))

    def _gather_timeout(self, runs: Sequence[Run]) -> float:
        if self.config.batch_timeout_ms:
            return self.config.batch_timeout_ms / 1000
        intervals = [run.frame_interval_s for run in runs if run.frame_interval_s]
        return min(min(intervals), MAX_GATHER_S) if intervals else AUTO_GATHER_S

    def _infer(self, predictor: Predictor, frames: Sequence[_GatheredFrame]) -> None:
        for frame in frames:
            frame.run.note_ready(frame.item)
        for batch in self._in_flight.submit(predictor, [frame.item for frame in frames], list(frames)):
            self._finish(batch)

    def _finish_in_flight(self) -> None:
        for batch in self._in_flight.drain():
            self._finish(batch)

    def _finish(self, batch: InFlight[list[_GatheredFrame]]) -> None:
        """Decode an ended batch and report each frame to its run; a frame whose run has ended since (an
        inference error of an earlier batch ended it) is only counted in the log."""
        frames = batch.tag
        current = [frame.camera.run is frame.run for frame in frames]
        if not all(current):
            stale = {frame.camera.name for frame, ok in zip(frames, current) if not ok}
            log.info("%d frame(s) inferred after their run ended, not reported (%s)", current.count(False),
                     ", ".join(sorted(stale)))
            if not any(current):
                return
        predictor = batch.predictor
        try:
            inferred = finish_frames(batch, [frame.run.fps for frame in frames], self._gate,
                                     self.config.publish_detections, [frame.waiting_since for frame in frames],
                                     [frame.camera.spec.filters for frame in frames], self.config.publish_frames)
        except Exception as exc:  # noqa: BLE001 - a failing model must not kill the component
            log.exception("inference failed")
            cause = "out of memory" if isinstance(exc, MemoryError) else f"{type(exc).__name__}: {exc}"
            cameras = [frame.camera for frame, ok in zip(frames, current) if ok]
            self._error(ErrorCode.INFERENCE_FAILED, f"inference with {predictor.info.name} failed: {cause}; "
                        "the run has stopped, send start to try again", model_loc=self.config.model_loc,
                        cause=cause, cameras=[camera.name for camera in cameras])
            self._apply(Event.INFERENCE_FAILED, cameras, error=exc,
                        named=cameras[0].name if len(cameras) == 1 else None)
            return
        for frame, result, ok in zip(frames, inferred, current):
            if not ok:
                continue
            self._seq += 1
            frame.run.record(result)
            track_ids = frame.run.observe(result, self._emit)
            if result.published:
                frame.run.publish(result, self._seq, self.config.frames_per_message, self.config.publish_detections,
                                  self._emit, track_ids)
        interval = self.config.summary_interval_s
        if interval and time.monotonic() - self._last_summary >= interval:
            active = {name: camera.run for name, camera in self.cameras.items() if camera.run is not None}
            self._emit_summary(active, final=False, state=self.state)

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

    def _emit_summary(self, runs: dict[str, Run], final: bool, state: State) -> None:
        self._last_summary = time.monotonic()
        extra: dict[str, Any] = {"errors_suppressed": self._errors.suppressed_total,
                                 "commands_rejected": self.commands_rejected}
        if self._model.config is not None and not self._model.is_current(self.config):
            extra["configured_model_loc"] = self.config.model_loc  # running an older model (see model_kept)
        extra.update(self._scenes.counters())
        if self._summary_extras is not None:
            try:
                extra.update(self._summary_extras())
            except Exception:  # noqa: BLE001 - counters from other parts must not break the summary
                log.exception("summary extras failed")
        if len(runs) == 1 and len(self.cameras) > 1:
            extra["camera"] = next(iter(runs))
        self._emit(summary_message(runs, state.value, self.predictor.info if self.predictor else None, final,
                                   extra))

    def _emit_state(self, state: State, previous: State, reason: str, request_id: str | None = None,
                    **extra: Any) -> None:
        log.info("state %s -> %s (%s)", previous.value, state.value, reason)
        self._emit(messages.state_message(state.value, previous.value, reason, request_id, **extra))

    # ---- live sources ----
    def _source_event(self, item: _SourceEvent) -> None:
        camera = self.cameras.get(item.camera)
        run = camera.run if camera is not None else None
        if camera is None or run is None or item.source is not run.source:
            return  # from a source that has been closed since
        event = item.event
        details = dict(camera=camera.name, camera_id=camera.spec.source, state=camera.state.value, **event.details)
        if event.kind is SourceEventKind.LOST:
            run.source_outages += 1
            self._emit(messages.status_message(StatusEvent.SOURCE_LOST, event.message, **details))
        elif event.kind is SourceEventKind.RESTORED:
            self._emit(messages.status_message(StatusEvent.SOURCE_RESTORED, event.message, **details))

    # ---- the model ----
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

    def _ensure_model_for_start(self, request_id: str | None) -> bool:
        """A start runs the configured model. While other cameras run, the model they run stays loaded
        until the configured one is ready (and stays if it cannot be loaded); once it is, their sources
        are restarted so their frames are prepared for it."""
        others_run = self.state is not State.IDLE
        previous = self.predictor
        if not self._ensure_model(request_id, keep_previous=others_run):
            return False
        if others_run and self.predictor is not previous:
            self._restart_sources()
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
        was_running = self.state is State.RUNNING
        self.config = new
        if "max_publish_rate" in changed:
            self._gate = PublishGate(new.max_publish_rate)
        if any(key in changed for key in MODEL_KEYS):
            self._swap_model(old)
        elif self.predictor is not None:
            self.predictor.settings = PostprocessSettings.from_config(new)
        if "event_topic" in changed and self._on_input_topic is not None:
            self._on_input_topic(new.event_topic)
        cameras = self._update_cameras(new.camera_specs(), was_running)
        if any(key in changed for key in SCENE_KEYS):
            self._renew_scenes(list(self.cameras.values()))
        self._emit(messages.status_message(StatusEvent.CONFIG_APPLIED, "configuration updated", changed=changed,
                                           **{key: names for key, names in cameras.items() if names}))

    def _update_cameras(self, specs: dict[str, CameraSpec], was_running: bool) -> dict[str, list[str]]:
        """Cameras added, removed or changed by a configuration update; the others are left alone.
        A camera added while the component runs starts at once."""
        removed = [name for name in self.cameras if name not in specs]
        for name in removed:
            camera = self.cameras[name]
            if camera.state is not State.IDLE:
                self._apply(Event.CAMERA_REMOVED, [camera], named=name)
            del self.cameras[name]
        changed = [name for name, spec in specs.items() if name in self.cameras and self.cameras[name].spec != spec]
        for name in changed:
            camera = self.cameras[name]
            camera.spec, old = specs[name], camera.spec
            if camera.run is not None and camera.spec.reading != old.reading:
                self._restart_source(camera)
            elif camera.run is not None:
                self._renew_scenes([camera])  # only its filters, zones or lines changed
        added = [name for name in specs if name not in self.cameras]
        for name in added:
            self.cameras[name] = Camera(specs[name])
        if was_running and added:
            self._apply(Event.START, [self.cameras[name] for name in added], reason="camera added",
                        named=added[0] if len(added) == 1 else None)
        return {"cameras_added": added, "cameras_removed": removed, "cameras_changed": changed}

    def _swap_model(self, old_config: Config) -> None:
        """Load the newly configured model between frames. During a run the old model keeps running
        until the new one is ready, and keeps running if it fails (a later start retries the new one)."""
        running = self.state is not State.IDLE
        previous = self.predictor
        if self._ensure_model(keep_previous=running):
            if self.predictor is not previous:
                self._restart_sources()
            return
        if running and previous is not None:
            self._emit(messages.status_message(
                StatusEvent.MODEL_KEPT, f"still running {previous.info.name} ({old_config.model_loc}); the "
                f"configured model {self.config.model_loc} could not be loaded and is retried at the next start",
                running_model=previous.info.name, running_model_loc=old_config.model_loc,
                configured_model_loc=self.config.model_loc))

    def _restart_sources(self) -> None:
        """After a model change: frames already prepared for the old model must be prepared again, and
        scenes follow the new model's classes."""
        for camera in list(self.cameras.values()):
            if camera.run is not None:
                self._restart_source(camera)
        self._renew_scenes(list(self.cameras.values()))

    def _restart_source(self, camera: Camera) -> None:
        run, predictor = camera.run, self.predictor
        if run is None or predictor is None:
            return
        run.feeder.stop()  # first: a camera cannot be opened twice
        try:
            source = self._source_factory(camera.spec.source, bool(camera.spec.loop_source))
        except (SourceError, OSError) as exc:
            self._error(ErrorCode.SOURCE_OPEN_FAILED, str(exc), camera=camera.name, camera_id=camera.spec.source)
            self._apply(Event.SOURCE_REOPEN_FAILED, [camera], error=exc, named=camera.name)
            return
        run.replace_source(source, predictor, self._source_event_handler(camera.name),
                           paused=camera.state is State.PAUSED)
