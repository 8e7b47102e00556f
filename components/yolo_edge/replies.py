"""What answers an event: from what the event did to each camera, the one reply the operator gets.

Pure: no threads, no I/O; the controller sends what `reply_for` decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

from .transitions import Effect, State, Transition


@dataclass(frozen=True)
class Outcome:
    """What an event did to one camera."""

    camera: str
    previous: State
    state: State
    transition: Transition
    applied: bool  # False: an effect failed (and said why); the camera's state stayed


@dataclass(frozen=True)
class StateReply:
    """A `state` message: the component's state, and each camera's under `cameras`."""

    reason: str
    fields: dict[str, Any] = field(default_factory=dict)
    started: Sequence[str] = ()  # cameras whose run this event started


@dataclass(frozen=True)
class Rejected:
    """An `invalid_transition` error: the command fits no camera it was for."""

    reason: str


Reply = Union[StateReply, Rejected]


def aggregate_state(states: Sequence[State]) -> State:
    """The component's state: running while any camera runs, else paused while any is paused, else idle."""
    for state in (State.RUNNING, State.PAUSED):
        if state in states:
            return state
    return State.IDLE


def camera_states(states: Mapping[str, State], outcomes: Mapping[str, Outcome]) -> dict[str, dict[str, Any]]:
    """Every camera's state; the ones an event concerned also say what it did to them."""
    entries: dict[str, dict[str, Any]] = {}
    for name, state in states.items():
        entry: dict[str, Any] = {"state": state.value}
        outcome = outcomes.get(name)
        if outcome is not None:
            entry.update(previous=outcome.previous.value, changed=outcome.previous is not outcome.state,
                         reason=outcome.transition.reason)
        entries[name] = entry
    return entries


def reply_for(outcomes: Sequence[Outcome], states: Mapping[str, State], reason: str | None = None,
              error: Exception | None = None, named: str | None = None) -> Reply | None:
    """The reply to an event that had `outcomes`, the cameras now being in `states`; None when nothing is
    to be said (the event did nothing, or every effect failed and was reported already). `named`: the
    camera the event was about; `reason` overrides the transition's own."""
    applied = [o for o in outcomes if o.applied]
    if not applied:
        return None
    rejected = [o for o in applied if Effect.REJECT in o.transition.effects]
    if len(rejected) == len(applied):
        return Rejected(rejected[0].transition.reason)
    changed = [o for o in applied if o.previous is not o.state]
    fields: dict[str, Any] = {"camera": named} if named else {}
    if not changed:
        fields["changed"] = False
    if error is not None:
        fields["error"] = str(error)
    fields["cameras"] = camera_states(states, {o.camera: o for o in outcomes})
    started = [o.camera for o in changed if Effect.START_RUN in o.transition.effects]
    return StateReply(reason or (changed or applied)[0].transition.reason, fields, started)
