"""The controller's transition table, on its own: no threads, no model, no broker.

(state, event) → (state, effects): every command in every state, the run-ending events, shutdown, and
the reasons the README documents. The event loop that carries the effects out is tested end to end in
test_component.py, test_faults.py and test_pause_idle.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from yolo_edge.commands import Action, parse_command
from yolo_edge.replies import Outcome, Rejected, StateReply, aggregate_state, reply_for
from yolo_edge.transitions import TRANSITIONS, Effect, Event, State, Transition, transition

pytestmark = pytest.mark.runtime

COMMANDS = (Event.START, Event.PAUSE, Event.STOP)
RUN_ENDERS = (Event.SOURCE_ENDED, Event.SOURCE_FAILED, Event.SOURCE_REOPEN_FAILED, Event.INFERENCE_FAILED,
              Event.INTERNAL_ERROR, Event.CAMERA_REMOVED)


@pytest.mark.parametrize(("state", "event", "expected"), [
    (State.IDLE, Event.START, Transition(State.RUNNING, (Effect.START_RUN,), "start command")),
    (State.RUNNING, Event.START, Transition(State.RUNNING, (Effect.ACKNOWLEDGE,), "already running")),
    (State.PAUSED, Event.START, Transition(State.RUNNING, (Effect.RESUME_RUN,), "start command (resume)")),
    (State.IDLE, Event.PAUSE, Transition(State.IDLE, (Effect.REJECT,),
                                         "cannot pause: the component is idle; send start first")),
    (State.RUNNING, Event.PAUSE, Transition(State.PAUSED, (Effect.PAUSE_RUN,), "pause command")),
    (State.PAUSED, Event.PAUSE, Transition(State.PAUSED, (Effect.ACKNOWLEDGE,), "already paused")),
    (State.IDLE, Event.STOP, Transition(State.IDLE, (Effect.ACKNOWLEDGE,), "already idle")),
    (State.RUNNING, Event.STOP, Transition(State.IDLE, (Effect.END_RUN,), "stop command")),
    (State.PAUSED, Event.STOP, Transition(State.IDLE, (Effect.END_RUN,), "stop command")),
])
def test_every_command_in_every_state(state: State, event: Event, expected: Transition):
    assert transition(state, event) == expected


def test_every_command_has_an_answer_in_every_state():
    for state in State:
        for event in COMMANDS:
            found = transition(state, event)
            assert found is not None and found.effects, (state, event)


def test_a_repeated_command_changes_nothing_and_only_acknowledges():
    for state, event in ((State.RUNNING, Event.START), (State.PAUSED, Event.PAUSE), (State.IDLE, Event.STOP)):
        found = transition(state, event)
        assert found is not None and found.state is state and found.effects == (Effect.ACKNOWLEDGE,)


@pytest.mark.parametrize("event", RUN_ENDERS)
@pytest.mark.parametrize("state", [State.RUNNING, State.PAUSED])
def test_failures_and_the_end_of_the_source_end_the_run(state: State, event: Event):
    assert transition(state, event) == Transition(State.IDLE, (Effect.END_RUN,), event.value)


@pytest.mark.parametrize("event", RUN_ENDERS)
def test_nothing_happens_to_an_idle_component_when_a_closed_run_reports_late(event: Event):
    assert transition(State.IDLE, event) is None


def test_shutdown_ends_every_run_and_leaves_an_idle_camera_alone():
    # The model, shared by the cameras, is released by the controller once every run has ended.
    assert transition(State.IDLE, Event.SHUTDOWN) is None
    for state in (State.RUNNING, State.PAUSED):
        assert transition(state, Event.SHUTDOWN) == Transition(State.IDLE, (Effect.END_RUN,), "shutdown")


def test_only_a_started_run_leaves_idle_and_every_run_ends_in_idle():
    leaving_idle = {event for (state, event), found in TRANSITIONS.items()
                    if state is State.IDLE and found.state is not State.IDLE}
    assert leaving_idle == {Event.START}
    for (state, _event), found in TRANSITIONS.items():
        if Effect.END_RUN in found.effects:
            assert state is not State.IDLE and found.state is State.IDLE
        if Effect.START_RUN in found.effects:
            assert state is State.IDLE


def test_commands_map_to_events():
    for action in Action:
        assert Event.for_action(action).value == action.value
    assert Event.for_action(parse_command(b'{"status": " Pause "}').action) is Event.PAUSE


def test_every_state_reason_is_documented():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("### State reasons", 1)[1].split("\n### ", 1)[0]
    documented = set(re.findall(r"`([^`]+)`", table))
    reasons = {found.reason for found in TRANSITIONS.values() if Effect.REJECT not in found.effects}
    reasons.discard("shutdown")  # a shutdown's reason is the request's own (`signal SIGTERM`, ...)
    assert reasons <= documented, sorted(reasons - documented)


# --- the reply to an event, from what it did to each camera (replies.py) ---

def outcome(camera: str, previous: State, event: Event, applied: bool = True) -> Outcome:
    found = transition(previous, event)
    assert found is not None
    return Outcome(camera, previous, found.state if applied else previous, found, applied)


def test_one_reply_for_a_command_to_every_camera():
    outcomes = [outcome("a", State.IDLE, Event.START), outcome("b", State.RUNNING, Event.START)]
    reply = reply_for(outcomes, {"a": State.RUNNING, "b": State.RUNNING, "c": State.PAUSED})
    assert isinstance(reply, StateReply) and reply.reason == "start command" and reply.started == ["a"]
    assert "changed" not in reply.fields and "camera" not in reply.fields
    assert reply.fields["cameras"] == {
        "a": {"state": "running", "previous": "idle", "changed": True, "reason": "start command"},
        "b": {"state": "running", "previous": "running", "changed": False, "reason": "already running"},
        "c": {"state": "paused"}}


def test_a_repeated_command_says_nothing_changed():
    reply = reply_for([outcome("a", State.PAUSED, Event.PAUSE)], {"a": State.PAUSED}, named="a")
    assert isinstance(reply, StateReply) and reply.reason == "already paused"
    assert reply.fields["changed"] is False and reply.fields["camera"] == "a" and reply.started == []


def test_pause_is_rejected_only_when_no_camera_can_pause():
    idle = outcome("a", State.IDLE, Event.PAUSE)
    assert reply_for([idle], {"a": State.IDLE}) == Rejected("cannot pause: the component is idle; send start first")
    mixed = reply_for([idle, outcome("b", State.RUNNING, Event.PAUSE)], {"a": State.IDLE, "b": State.PAUSED})
    assert isinstance(mixed, StateReply) and mixed.reason == "pause command"
    assert mixed.fields["cameras"]["a"]["changed"] is False


def test_nothing_is_said_when_every_effect_failed_or_nothing_happened():
    assert reply_for([outcome("a", State.IDLE, Event.START, applied=False)], {"a": State.IDLE}) is None
    assert reply_for([], {"a": State.IDLE}) is None


def test_a_run_ended_by_a_failure_carries_the_error_and_the_given_reason():
    reply = reply_for([outcome("a", State.RUNNING, Event.SOURCE_FAILED)], {"a": State.IDLE, "b": State.RUNNING},
                      error=ValueError("bad frame"), named="a")
    assert isinstance(reply, StateReply) and reply.reason == "source failed" and reply.fields["error"] == "bad frame"
    shutdown = reply_for([outcome("a", State.RUNNING, Event.SHUTDOWN)], {"a": State.IDLE}, reason="signal SIGTERM")
    assert isinstance(shutdown, StateReply) and shutdown.reason == "signal SIGTERM"


def test_the_component_state_is_the_most_active_cameras():
    assert aggregate_state([State.IDLE, State.PAUSED, State.RUNNING]) is State.RUNNING
    assert aggregate_state([State.IDLE, State.PAUSED]) is State.PAUSED
    assert aggregate_state([State.IDLE]) is State.IDLE and aggregate_state([]) is State.IDLE
