"""The component's test harness, written once: message predicates, a thread-safe log of the messages a
component emits, the MQTT operator that sends commands and watches the output topic, and the helpers
that start a component (over a real Mosquitto) or a controller (in this process) for one test.

conftest.py turns the operator into the `operator` fixture; tests import the rest from here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Union

import paho.mqtt.client as mqtt

from yolo_edge.app import Component
from yolo_edge.config import Config
from yolo_edge.controller import Controller
from yolo_edge.transport.mqtt import MqttSettings, MqttTransport
from yolo_edge_tools.local_broker import LocalBroker

# The topics the harness's configurations and operators use unless told otherwise.
IN, OUT = "test/in", "test/out"
MODEL_SIZE = 320  # the `model` fixture's input size

Message = Dict[str, Any]
Match = Callable[[Message], bool]
Payload = Union[bytes, str, Message]


# ---------------------------------------------------------------------------------------------
# Waiting and matching
# ---------------------------------------------------------------------------------------------

def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "the condition") -> None:
    """Poll `condition` until it holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)


def is_type(kind: str, **fields: Any) -> Match:
    """A message of type `kind` whose `fields` have these values."""
    return lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())


def is_state(state: str, **fields: Any) -> Match:
    return is_type("state", state=state, **fields)


def is_status(event: str) -> Match:
    return is_type("status", event=event)


def is_final_summary(message: Message) -> bool:
    return message.get("type") == "summary" and message.get("final") is True


# ---------------------------------------------------------------------------------------------
# What the component emits
# ---------------------------------------------------------------------------------------------

class MessageLog:
    """Every message received, in arrival order; fed from any thread (it is a controller's `emit`).

    Two ways to wait, which do not disturb each other:
    - `wait_for(match, since=mark)` looks at every message from index `since` (0: all of them);
      `mark()` is the index the next message will get, `since(mark)` the messages after it.
    - `wait_for_next(match)` and `drain(seconds)` read on from where the previous one of them stopped:
      each message is seen once, in order, like reading a queue.
    """

    def __init__(self, timeout_s: float = 20.0) -> None:
        self.messages: list[Message] = []
        self.timeout_s = timeout_s  # wait_for's deadline when none is given
        self._cond = threading.Condition()
        self._read = 0  # the next message wait_for_next and drain look at

    def __call__(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def since(self, mark: int, match: Match | None = None) -> list[Message]:
        with self._cond:
            return [m for m in self.messages[mark:] if match is None or match(m)]

    def wait_for(self, match: Match, since: int = 0, timeout: float | None = None, count: int = 1) -> Message:
        """The `count`-th message from index `since` on that matches; AssertionError at the deadline."""
        timeout = self.timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        found, index = 0, since
        with self._cond:
            while True:
                for message in self.messages[index:]:
                    found += bool(match(message))
                    if found == count:
                        return message
                index = max(index, len(self.messages))
                self._wait_until(deadline, timeout, since)

    def wait_for_next(self, match: Match, timeout: float = 30.0) -> Message:
        """The first matching message after those already read; the ones before it are read too."""
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._read
            while True:
                while self._read < len(self.messages):
                    message = self.messages[self._read]
                    self._read += 1
                    if match(message):
                        return message
                self._wait_until(deadline, timeout, start)

    def drain(self, seconds: float) -> list[Message]:
        """Wait `seconds`, then read every message not read yet."""
        time.sleep(seconds)
        with self._cond:
            unread = self.messages[self._read:]
            self._read = len(self.messages)
            return unread

    def _wait_until(self, deadline: float, timeout: float, since: int) -> None:
        """Wait for the next message (the lock held); AssertionError, naming the last ones, after the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            tail = [(m.get("type"), m.get("event") or m.get("code") or m.get("state"))
                    for m in self.messages[since:][-15:]]
            raise AssertionError(f"no matching message within {timeout} s; last messages: {tail}")
        self._cond.wait(left)


class Operator(MessageLog):
    """What a user does with an MQTT client: publish commands on the command topic, watch the output topic.

    It survives broker restarts (it resubscribes on every connect, retrying every 0.5 s at most) and keeps
    every message; a payload that is not JSON is kept as {"type": "<not json>", "raw": ...}.
    """

    def __init__(self, port: int, output_topic: str = OUT, command_topic: str = IN) -> None:
        super().__init__()
        self.topic, self.command_topic = output_topic, command_topic
        self._subscribed = threading.Event()
        self._closed = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # back before the component is
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the operator could not subscribe"

    @classmethod
    def for_config(cls, port: int, config: Config) -> Operator:
        """An operator on the topics `config` names."""
        return cls(port, config.output_topic, config.event_topic)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _properties: Any
                    ) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = {"type": "<not json>", "raw": message.payload[:200].decode(errors="replace")}
        self(body)

    def send(self, payload: Payload, topic: str | None = None, retain: bool = False) -> None:
        """Publish a command (a dict is sent as JSON, bytes and str as they are) and wait until it is out."""
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        self.client.publish(topic or self.command_topic, body, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.client.loop_stop()
            self.client.disconnect()


# ---------------------------------------------------------------------------------------------
# Starting a component or a controller for one test
# ---------------------------------------------------------------------------------------------

def base_config(model: Path, source: Path | str, **extra: Any) -> Config:
    """A component configuration for `model` (320x320) on `source`, looping, on the harness's topics."""
    values: dict[str, Any] = {"model_loc": str(model), "camera_id": str(source), "MODEL_HEIGHT": MODEL_SIZE,
                              "MODEL_WIDTH": MODEL_SIZE, "summary_interval_s": 0, "event_topic": IN,
                              "output_topic": OUT, "loop_source": True}
    values.update(extra)
    return Config.from_mapping(values)


@contextmanager
def running_component(broker: LocalBroker, config: Config, **component_kwargs: Any
                      ) -> Iterator[tuple[Component, Operator]]:
    """A component on `broker` (connected, its first state message out) with an operator on its topics that
    subscribed before it started; `component_kwargs` go to Component. Both are closed after."""
    operator = Operator.for_config(broker.port, config)
    transport = MqttTransport(MqttSettings(port=broker.port))
    component = Component(config, transport, **component_kwargs).start()
    try:
        assert transport.wait_connected(10)
        operator.wait_for_next(is_state("idle", reason="component started"), timeout=20.0)
        yield component, operator
    finally:
        component.stop()
        operator.close()


@contextmanager
def running_controller(config: Config, **controller_kwargs: Any) -> Iterator[tuple[Controller, MessageLog]]:
    """A controller on its own thread in this process (no broker, no transport), its messages in a log;
    `controller_kwargs` go to Controller. Shut down after, and checked to have ended."""
    output = MessageLog(timeout_s=30.0)
    controller = Controller(config, output, **controller_kwargs)
    thread = threading.Thread(target=controller.run, name="controller", daemon=True)
    thread.start()
    try:
        yield controller, output
    finally:
        controller.request_shutdown()
        assert controller.wait_done(10)
