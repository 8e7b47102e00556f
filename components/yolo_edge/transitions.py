"""A camera's states and what moves it between them, as one table: (state, event) → (state, effects).

Every camera has its own state; a command without a camera name is looked up for each camera. Pure
data and one lookup: no threads, no I/O. The controller looks up each event here and carries out
the effects in order; an effect that fails (a source that cannot be opened at start) leaves the
state where it was, which the controller handles (see `Controller._apply`).

    idle ──start──▶ running ──pause──▶ paused
      ▲               │  ▲──start (resume)──┘│
      └──stop / source ended / failures──────┘
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .commands import Action


class State(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"


class Event(str, Enum):
    START = "start"
    PAUSE = "pause"
    STOP = "stop"
    SOURCE_ENDED = "source ended"
    SOURCE_FAILED = "source failed"
    SOURCE_REOPEN_FAILED = "source could not be opened"
    INFERENCE_FAILED = "inference failed"
    INTERNAL_ERROR = "internal error"
    CAMERA_REMOVED = "camera removed"
    SHUTDOWN = "shutdown"

    @classmethod
    def for_action(cls, action: Action) -> Event:
        return cls(action.value)


class Effect(Enum):
    START_RUN = "start the run: load the model if needed, open the source, start the feeder"
    RESUME_RUN = "resume the feeder and its source"
    PAUSE_RUN = "pause the feeder and its source; flush batched frames"
    END_RUN = "stop the feeder, close the source, flush batched frames, publish the final summary"
    ACKNOWLEDGE = "reply with the state, changed: false"
    REJECT = "reply with an invalid_transition error"


@dataclass(frozen=True)
class Transition:
    state: State
    effects: tuple[Effect, ...]
    reason: str  # the `reason` of the state message (or the error's message for REJECT)


_ACTIVE = (State.RUNNING, State.PAUSED)
# Events that end a run whatever it was doing; the reason is the event's own text.
_RUN_ENDERS = (Event.SOURCE_ENDED, Event.SOURCE_FAILED, Event.SOURCE_REOPEN_FAILED, Event.INFERENCE_FAILED,
               Event.INTERNAL_ERROR, Event.CAMERA_REMOVED)


def _table() -> dict[tuple[State, Event], Transition]:
    table = {
        (State.IDLE, Event.START): Transition(State.RUNNING, (Effect.START_RUN,), "start command"),
        (State.RUNNING, Event.START): Transition(State.RUNNING, (Effect.ACKNOWLEDGE,), "already running"),
        (State.PAUSED, Event.START): Transition(State.RUNNING, (Effect.RESUME_RUN,), "start command (resume)"),
        (State.IDLE, Event.PAUSE): Transition(
            State.IDLE, (Effect.REJECT,), "cannot pause: the component is idle; send start first"),
        (State.RUNNING, Event.PAUSE): Transition(State.PAUSED, (Effect.PAUSE_RUN,), "pause command"),
        (State.PAUSED, Event.PAUSE): Transition(State.PAUSED, (Effect.ACKNOWLEDGE,), "already paused"),
        (State.IDLE, Event.STOP): Transition(State.IDLE, (Effect.ACKNOWLEDGE,), "already idle"),
    }
    # A shutdown ends every camera's run; the controller then releases the model, which they share.
    for state in _ACTIVE:
        table[(state, Event.STOP)] = Transition(State.IDLE, (Effect.END_RUN,), "stop command")
        table[(state, Event.SHUTDOWN)] = Transition(State.IDLE, (Effect.END_RUN,), "shutdown")
        for event in _RUN_ENDERS:
            table[(state, event)] = Transition(State.IDLE, (Effect.END_RUN,), event.value)
    return table


TRANSITIONS: dict[tuple[State, Event], Transition] = _table()


def transition(state: State, event: Event) -> Transition | None:
    """What `event` does in `state`; None when it does nothing there (e.g. a source ending while idle)."""
    return TRANSITIONS.get((state, event))
