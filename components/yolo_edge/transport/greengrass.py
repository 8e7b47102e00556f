"""Greengrass IPC transport: commands from and results to AWS IoT Core through the nucleus.

Uses awsiotsdk's `GreengrassCoreIPCClientV2`. The client runs stream callbacks on an executor
(`on_stream_error` on the IPC network thread, where a blocking IPC call deadlocks), so every stream
callback here only hands work over: commands go straight to `on_command` (which must only enqueue),
configuration-change events go onto a queue that a worker thread drains. The executor has a single
worker: with the SDK's default pool, two commands sent back to back could reach the controller in
the opposite order (start, stop becoming stop, start).

When a stream ends without the component asking (the nucleus restarted, or dropped the connection:
nucleus lite does so after a request larger than its IPC buffer), a recovery thread connects a new
client and reopens the command subscription and the configuration stream, waiting 0.5 s, then 1, 2 …
up to 30 s between attempts; messages wait in the publisher meanwhile.

awsiotsdk is imported lazily so that `greengrass_available()` and this module work without it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Protocol, TypeVar, runtime_checkable

from ..config import MAX_PAYLOAD_BYTES
from .base import CommandHandler, TransportError

log = logging.getLogger(__name__)

IPC_SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
IPC_TOKEN_ENV = "SVCUID"
QOS_AT_LEAST_ONCE = "1"  # awsiot.greengrasscoreipc.model.QOS.AT_LEAST_ONCE
STATE_RUNNING = "RUNNING"  # awsiot.greengrasscoreipc.model.ReportedLifecycleState.RUNNING
STATE_ERRORED = "ERRORED"  # awsiot.greengrasscoreipc.model.ReportedLifecycleState.ERRORED
CALLBACK_THREAD_PREFIX = "greengrass-ipc"
# How long close() waits for the nucleus to confirm that the streams are closed, and for the
# configuration worker: together well inside the ~1 s that Component.stop leaves the transport.
STREAM_CLOSE_TIMEOUT_S = 0.5
WORKER_JOIN_TIMEOUT_S = 0.5
RECONNECT_FIRST_DELAY_S = 0.5
RECONNECT_MAX_DELAY_S = 30.0
# Reconnecting longer than this calls `on_gave_up`: a nucleus lite whose IPC daemon restarted has forgotten
# this process' token (SVCUID), so only a restart of the component can bring it back.
RECONNECT_GIVE_UP_S = 60.0
# Nucleus lite reads an IPC request into a 10,000-byte buffer (GGL_IPC_MAX_MSG_LEN) and drops the whole
# connection when one is larger. A publish carries its payload base64-encoded inside JSON beside the topic
# and the eventstream headers, so 7,000 payload bytes fit with a topic of up to 256 bytes.
NUCLEUS_LITE_SOCKET_NAME = "gg-ipc.socket"
NUCLEUS_LITE_MAX_PAYLOAD_BYTES = 7000

ConfigCallback = Callable[[Dict[str, Any]], None]

if TYPE_CHECKING:
    from typing import ParamSpec  # Python 3.10; only annotations use it

    _P = ParamSpec("_P")
_T = TypeVar("_T")


# awsiotsdk ships no type information: these protocols name the parts of it this transport uses.
class _StreamOperation(Protocol):
    """A streaming operation (SubscribeToIoTCoreOperation, SubscribeToConfigurationUpdateOperation)."""

    def close(self) -> object: ...


class _MqttMessage(Protocol):
    payload: bytes | str | None


class _IoTCoreMessage(Protocol):
    """The event of an IoT Core subscription."""

    message: _MqttMessage | None


class _ConfigurationResponse(Protocol):
    value: dict[str, Any] | None


class IpcClient(Protocol):
    """The methods of awsiotsdk's `GreengrassCoreIPCClientV2` that this transport calls."""

    def publish_to_iot_core(self, *, topic_name: str, qos: str, payload: bytes) -> object: ...

    def get_configuration(self, *, key_path: list[str]) -> _ConfigurationResponse: ...

    def subscribe_to_iot_core(self, *, topic_name: str, qos: str,
                              on_stream_event: Callable[[_IoTCoreMessage], None],
                              on_stream_error: Callable[[Exception], bool],
                              on_stream_closed: Callable[[], None]) -> tuple[object, _StreamOperation]: ...

    def subscribe_to_configuration_update(self, *, key_path: list[str], on_stream_event: Callable[[object], None],
                                          on_stream_error: Callable[[Exception], bool],
                                          on_stream_closed: Callable[[], None]) -> tuple[object, _StreamOperation]: ...

    def update_state(self, *, state: str) -> object: ...

    def close(self) -> object: ...


@runtime_checkable
class _CarriesMessage(Protocol):
    """awsiotsdk's service errors (and AwsCrtError): their text is in `.message`; str() of them is empty."""

    message: str | None


def greengrass_available(environ: Mapping[str, str] | None = None) -> bool:
    """True when the nucleus has given this process an IPC socket and token (it runs as a component)."""
    env = os.environ if environ is None else environ
    return bool(env.get(IPC_SOCKET_ENV)) and bool(env.get(IPC_TOKEN_ENV))


def _ipc_error_types() -> tuple[type[BaseException], ...]:
    """Every exception an IPC call can raise: service errors, stream/connection errors, timeouts.

    RuntimeError included: awscrt's native calls raise a bare one, e.g. "4104
    (AWS_ERROR_EVENT_STREAM_RPC_CONNECTION_CLOSED)" when the connection drops under a call."""
    kinds: list[type[BaseException]] = [TimeoutError, ConnectionError, RuntimeError]
    try:
        from awscrt.exceptions import AwsCrtError
        from awsiot.eventstreamrpc import (
            ConnectionClosedError,
            EventStreamError,
            EventStreamOperationError,
            StreamClosedError,
        )
        from awsiot.greengrasscoreipc.model import GreengrassCoreIPCError
    except ImportError:  # pragma: no cover - awsiotsdk missing; nothing IPC-specific can be raised then
        return tuple(kinds)
    kinds += [GreengrassCoreIPCError, EventStreamError, EventStreamOperationError, ConnectionClosedError,
              StreamClosedError, AwsCrtError]
    return tuple(kinds)


def nucleus_payload_limit(environ: Mapping[str, str] | None = None) -> int:
    """The largest payload the nucleus running this component carries per publish.

    Nucleus lite names its IPC socket `gg-ipc.socket`; the Java nucleus `ipc.socket`."""
    env = os.environ if environ is None else environ
    socket_name = os.path.basename(env.get(IPC_SOCKET_ENV, ""))
    return NUCLEUS_LITE_MAX_PAYLOAD_BYTES if socket_name == NUCLEUS_LITE_SOCKET_NAME else MAX_PAYLOAD_BYTES


class MessageRejected(TransportError):
    """The nucleus refused this message for good (not authorized, invalid, too large): sending it
    again cannot succeed, unlike a TransportError from a lost connection. `retryable` is False."""

    retryable = False


# Rejections of the message itself rather than of the moment (a full spooler, a lost connection).
_REJECTING_ERRORS = ("UnauthorizedError", "InvalidArgumentsError")
_TOO_LARGE_HINTS = ("exceeds", "too large", "size limit", "maxmessagesize")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, _CarriesMessage) and exc.message:
        return exc.message
    return str(exc)


def _rejects_message(exc: BaseException) -> bool:
    if type(exc).__name__ in _REJECTING_ERRORS:
        return True
    text = _error_text(exc).lower()
    return type(exc).__name__ == "ServiceError" and any(hint in text for hint in _TOO_LARGE_HINTS)


def _describe(exc: BaseException) -> str:
    text = _error_text(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _CallbackExecutor(ThreadPoolExecutor):
    """One worker, so stream events reach the component in the order the nucleus sent them.

    A callback submitted after shutdown (a stream the nucleus closes while the client is closing)
    is dropped: awsiotsdk would otherwise log the RuntimeError with a traceback."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix=CALLBACK_THREAD_PREFIX)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:
            log.debug("IPC callback %r arrived after shutdown; dropped", fn)
            dropped: Future[_T] = Future()
            dropped.cancel()
            return dropped


class _Stream:
    """An open IPC stream operation and the event its on_stream_closed callback sets."""

    def __init__(self, operation: _StreamOperation, closed: threading.Event) -> None:
        self.operation = operation
        self.closed = closed


class GreengrassTransport:
    """Transport over Greengrass IPC: subscribe/publish to IoT Core, configuration, lifecycle state.

    `client` is a `GreengrassCoreIPCClientV2` (or anything with its methods); when None, one is
    connected on first use from the nucleus' environment variables, with a single-worker callback
    executor (a client passed in needs one too, or commands can overtake each other).
    """

    name = "greengrass"

    def __init__(self, client: IpcClient | None = None, *, config_debounce_s: float = 0.2,
                 reconnect_delays_s: tuple[float, float] | None = None, give_up_after_s: float | None = None,
                 on_gave_up: Callable[[str], None] | None = None) -> None:
        self._client = client
        self._reconnect_delays_s = reconnect_delays_s or (RECONNECT_FIRST_DELAY_S, RECONNECT_MAX_DELAY_S)
        self._give_up_after_s = RECONNECT_GIVE_UP_S if give_up_after_s is None else give_up_after_s
        self._on_gave_up = on_gave_up
        self.max_payload_bytes = nucleus_payload_limit()
        if self.max_payload_bytes < MAX_PAYLOAD_BYTES:
            log.info("Greengrass nucleus lite: messages are kept to at most %d bytes (its IPC request limit)",
                     self.max_payload_bytes)
        self._errors = _ipc_error_types()
        self._lock = threading.Lock()
        self._on_command: CommandHandler | None = None
        self._input_topic: str | None = None
        self._pending_topic: str | None = None
        self._topic_lock = threading.Lock()  # one subscription change at a time, in call order
        self._subscription: _StreamOperation | None = None  # the operation of the current input topic
        self._subscription_alive = False
        self._closed = False
        self._config_debounce_s = config_debounce_s
        self._config_events: queue.Queue[bool] = queue.Queue()
        self._config_worker: threading.Thread | None = None
        self._streams: list[_Stream] = []  # every stream opened and not yet seen closed
        self._config_callback: ConfigCallback | None = None
        self._config_operation: _StreamOperation | None = None
        self._config_alive = False
        self._lost = threading.Event()  # a stream ended that the component did not close
        self._closing = threading.Event()
        self._recovery: threading.Thread | None = None
        self.reconnects = 0

    # -- client --------------------------------------------------------------------------------------

    def _ipc(self) -> IpcClient:
        with self._lock:
            if self._closed:
                raise TransportError("Greengrass transport is closed")
            if self._client is None:
                self._client = self._connect()
            return self._client

    @staticmethod
    def _connect() -> IpcClient:
        if not greengrass_available():
            raise TransportError(
                f"Greengrass IPC is not available: {IPC_SOCKET_ENV} and {IPC_TOKEN_ENV} are not set. "
                "Run inside a Greengrass component, or use the MQTT transport for local runs")
        try:
            from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
        except ImportError as exc:
            raise TransportError(
                "Greengrass IPC needs awsiotsdk: pip install 'yolo-edge[greengrass]'") from exc
        executor = _CallbackExecutor()
        try:
            client: IpcClient = GreengrassCoreIPCClientV2(executor=executor)
        except Exception as exc:  # connect() raises CRT, timeout and KeyError alike
            executor.shutdown(wait=False)
            raise TransportError(f"cannot connect to the Greengrass nucleus over IPC: {_describe(exc)}") from exc
        return client

    def _call(self, what: str, function: Callable[..., _T], **kwargs: Any) -> _T:
        try:
            return function(**kwargs)
        except self._errors as exc:
            kind = MessageRejected if _rejects_message(exc) else TransportError
            raise kind(f"{what} failed: {_describe(exc)}") from exc

    # -- Transport protocol --------------------------------------------------------------------------

    def start(self, input_topic: str, on_command: CommandHandler) -> None:
        """Subscribe to `input_topic` on IoT Core; each message's payload goes to `on_command`.

        A topic set with `set_input_topic` before `start` (a configuration update that won the
        race with start-up) is newer than `input_topic` and wins."""
        with self._topic_lock:
            self._on_command = on_command
            topic, self._pending_topic = self._pending_topic or input_topic, None
            self._subscribe(topic)
        if self._recovery is None:
            self._recovery = threading.Thread(target=self._recovery_loop, name="greengrass-reconnect", daemon=True)
            self._recovery.start()
        self._report_running()

    def set_input_topic(self, topic: str) -> None:
        """Move the command subscription to `topic`: subscribe the new one, then drop the old one."""
        with self._topic_lock:
            if self._on_command is None:
                self._pending_topic = topic
                return
            if topic == self._input_topic and self._subscription_alive:
                return
            self._subscribe(topic)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish to IoT Core at QoS 1. Success means the nucleus accepted it into its spooler.

        Raises MessageRejected (a TransportError with `retryable = False`) when the nucleus refuses
        the message itself (topic not allowed by accessControl, payload over its size limit), and
        TransportError when the moment is wrong (connection lost, spooler full)."""
        client = self._ipc()
        self._call(f"publish to {topic!r} ({len(payload)} bytes)", client.publish_to_iot_core,
                   topic_name=topic, qos=QOS_AT_LEAST_ONCE, payload=payload)

    def connected(self) -> bool:
        """True while the command subscription is open (the nucleus keeps the cloud link itself)."""
        return not self._closed and self._subscription_alive

    def close(self) -> None:
        """Unsubscribe, stop the configuration worker and close the IPC connection. Idempotent.

        The streams are closed, and their closing confirmed, before the client: a stream still open
        when the client closes would deliver its on_stream_closed to an executor already shut down."""
        # A subscription change in progress finishes first, so that its stream is closed too.
        changing = self._topic_lock.acquire(timeout=STREAM_CLOSE_TIMEOUT_S)
        try:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._closing.set()
                self._lost.set()  # wakes the recovery thread so it can exit
                client, streams = self._client, self._streams
                self._streams = []
                self._subscription = None
                self._subscription_alive = False
        finally:
            if changing:
                self._topic_lock.release()
        self._config_events.put(False)  # wakes the worker so it can exit
        self._close_streams(streams)
        for worker in (self._config_worker, self._recovery):
            if worker is not None and worker is not threading.current_thread():
                worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
        if client is not None:
            try:
                client.close()  # also shuts the callback executor down, after its queued callbacks
            except Exception as exc:  # closing must not fail shutdown
                log.warning("closing the IPC client failed: %s", _describe(exc))

    # -- configuration and state -----------------------------------------------------------------

    def read_configuration(self) -> dict[str, Any]:
        """The component's whole configuration (including `accessControl`) as a plain dict."""
        client = self._ipc()
        response = self._call("get_configuration", client.get_configuration, key_path=[])
        return dict(response.value) if response.value else {}

    def watch_configuration(self, callback: ConfigCallback) -> None:
        """Call `callback(whole configuration)` after every configuration change.

        Changes that arrive close together (a deployment merging several keys sends one event per
        key) are folded into one re-read, so a multi-key merge reconfigures the component once.
        """
        if self._config_worker is not None:
            raise TransportError("watch_configuration may be called only once")
        self._open_config_stream()
        self._config_callback = callback
        self._config_worker = threading.Thread(
            target=self._config_loop, args=(callback,), name="greengrass-config", daemon=True)
        self._config_worker.start()

    def _open_config_stream(self) -> None:
        client = self._ipc()
        operation_box: list[_StreamOperation | None] = [None]

        def on_closed() -> None:
            log.info("configuration update stream closed")
            if operation_box[0] is not None and self._config_operation is operation_box[0]:
                self._config_alive = False
                self._stream_lost("configuration update stream")

        operation = self._open_stream(
            "subscribe_to_configuration_update", "configuration update", client.subscribe_to_configuration_update,
            self._on_config_event, on_closed, key_path=[])
        operation_box[0] = operation
        with self._lock:
            self._config_operation = operation
            self._config_alive = True

    def report_error(self) -> None:
        """Tell the nucleus this component is ERRORED (it runs the Recover step, then restarts it)."""
        client = self._ipc()
        self._call("update_state(ERRORED)", client.update_state, state=STATE_ERRORED)

    def _report_running(self) -> None:
        """Tell the nucleus the component is RUNNING: it takes commands from now on. A nucleus that
        refuses this only loses a state report; the component runs on."""
        try:
            client = self._ipc()
            self._call("update_state(RUNNING)", client.update_state, state=STATE_RUNNING)
        except TransportError as exc:
            log.warning("could not report RUNNING to the nucleus: %s", exc)

    # -- internals ---------------------------------------------------------------------------------

    def _subscribe(self, topic: str) -> None:
        client = self._ipc()

        def on_message(event: _IoTCoreMessage) -> None:
            self._on_iot_message(topic, event)

        def on_closed() -> None:
            if self._subscription is operation_box[0] and not self._closed:
                self._subscription_alive = False
                self._stream_lost(f"IoT Core subscription to {topic!r}")

        operation_box: list[_StreamOperation | None] = [None]
        operation = self._open_stream(f"subscribe to {topic!r}", f"subscription to {topic!r}",
                                      client.subscribe_to_iot_core, on_message, on_closed,
                                      topic_name=topic, qos=QOS_AT_LEAST_ONCE)
        operation_box[0] = operation
        with self._lock:
            previous, self._subscription = self._subscription, operation
            self._input_topic = topic
            self._subscription_alive = True
        log.info("subscribed to IoT Core topic %r", topic)
        if previous is not None:
            self._close_operation(previous)

    # -- recovery --------------------------------------------------------------------------------------

    def _stream_lost(self, what: str) -> None:
        """A stream ended that close() did not end: runs on the client's callback thread, so it only
        wakes the recovery thread."""
        if self._closed:
            return
        log.warning("%s closed by the nucleus; reconnecting", what)
        self._lost.set()

    def _recovery_loop(self) -> None:
        first_delay, max_delay = self._reconnect_delays_s
        while True:
            self._lost.wait()
            self._lost.clear()
            delay, attempts, started = first_delay, 0, time.monotonic()
            gave_up = False
            while not self._closed and not self._healthy():
                if self._closing.wait(delay):
                    return
                attempts += 1
                try:
                    self._reconnect()
                except TransportError as exc:
                    delay = min(delay * 2, max_delay)
                    lost_s = time.monotonic() - started
                    giving_up = not gave_up and self._on_gave_up is not None and lost_s >= self._give_up_after_s
                    log.warning("reconnecting to the nucleus failed (attempt %d): %s%s", attempts, exc,
                                "" if giving_up else f"; next attempt in {delay:.1f} s")
                    if giving_up and self._on_gave_up is not None:
                        gave_up = True
                        log.error("no IPC connection to the nucleus for %.0f s (%d attempts); giving up",
                                  lost_s, attempts)
                        self._on_gave_up(f"{attempts} reconnection attempts in {lost_s:.0f} s failed: {exc}")
                else:
                    if self._healthy():
                        self.reconnects += 1
                        log.info("reconnected to the nucleus after %.1f s (%d attempt(s))",
                                 time.monotonic() - started, attempts)
            if self._closed:
                return

    def _healthy(self) -> bool:
        return self._subscription_alive and (self._config_callback is None or self._config_alive)

    def _reconnect(self) -> None:
        """A new client, the command subscription and the configuration stream opened again on it."""
        with self._topic_lock:
            if self._closed or self._healthy() or self._input_topic is None:
                return
            with self._lock:
                old, streams = self._client, self._streams
                self._client, self._streams = None, []
                self._subscription, self._config_operation = None, None
                self._subscription_alive = self._config_alive = False
            for stream in streams:
                self._close_operation(stream.operation)
            if old is not None:
                try:
                    old.close()
                except Exception as exc:  # the old connection is already gone
                    log.debug("closing the lost IPC client failed: %s", _describe(exc))
            self._subscribe(self._input_topic)
            if self._config_callback is not None:
                self._open_config_stream()
                self._config_events.put(True)  # updates may have been missed while disconnected

    def _on_iot_message(self, topic: str, event: _IoTCoreMessage) -> None:
        if topic != self._input_topic or self._on_command is None:
            return  # a late message of a subscription that has just been replaced
        payload = event.message.payload if event.message is not None else None
        if payload is None:
            return
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            self._on_command(bytes(payload))
        except Exception:
            log.exception("command handler failed on a message from %r", topic)

    @staticmethod
    def _on_stream_error(what: str) -> Callable[[Exception], bool]:
        def on_error(error: Exception) -> bool:
            log.warning("IPC stream error on %s: %s", what, _describe(error))
            return False  # keep the stream open

        return on_error

    def _on_config_event(self, _event: object) -> None:
        self._config_events.put(True)

    def _config_loop(self, callback: ConfigCallback) -> None:
        while self._config_events.get():
            # Fold a burst of events into one re-read.
            while True:
                try:
                    if not self._config_events.get(timeout=self._config_debounce_s):
                        return
                except queue.Empty:
                    break
            if self._closed:
                return
            try:
                mapping = self.read_configuration()
            except TransportError as exc:
                if self._closed:
                    return  # the transport closed during the read
                log.error("re-reading the configuration after an update failed: %s", exc)
                continue
            try:
                callback(mapping)
            except Exception:
                log.exception("configuration callback failed")

    def _open_stream(self, what: str, stream_name: str, function: Callable[..., tuple[object, _StreamOperation]],
                     on_event: Callable[[Any], None], on_closed: Callable[[], None],
                     **kwargs: Any) -> _StreamOperation:
        """Start a streaming operation; it is remembered until its on_stream_closed has run."""
        closed = threading.Event()

        def on_stream_closed() -> None:
            try:
                on_closed()
            finally:
                closed.set()

        _response, operation = self._call(what, function, on_stream_event=on_event,
                                          on_stream_error=self._on_stream_error(stream_name),
                                          on_stream_closed=on_stream_closed, **kwargs)
        with self._lock:
            self._streams = [stream for stream in self._streams if not stream.closed.is_set()]
            self._streams.append(_Stream(operation, closed))
        return operation

    def _close_streams(self, streams: list[_Stream]) -> None:
        """Close `streams` and wait (bounded) until the client has run their on_stream_closed."""
        for stream in streams:
            if not stream.closed.is_set():
                self._close_operation(stream.operation)
        if threading.current_thread().name.startswith(CALLBACK_THREAD_PREFIX):
            return  # the callbacks would run on this very thread, after we return
        deadline = time.monotonic() + STREAM_CLOSE_TIMEOUT_S
        for stream in streams:
            if not stream.closed.wait(max(0.0, deadline - time.monotonic())):
                log.debug("an IPC stream did not confirm closing within %.1f s", STREAM_CLOSE_TIMEOUT_S)

    def _close_operation(self, operation: _StreamOperation) -> None:
        try:
            operation.close()
        except Exception as exc:  # the stream may already be gone with the connection
            log.debug("closing an IPC stream failed: %s", _describe(exc))
