"""A stand-in for the Greengrass nucleus' IPC server, for tests: eventstream RPC on a Unix socket.

The real `GreengrassCoreIPCClientV2` (awsiotsdk over awscrt) connects to it exactly as to a nucleus,
from `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT` and `SVCUID` (see `environment()`).

Wire format, written here from the eventstream specification rather than taken from a library:
a message is a prelude (total length, headers length: big-endian uint32 each, then the CRC32 of
those 8 bytes), the headers (name length byte, name, type byte, value), the payload, and the CRC32
of everything before it. The RPC layer rides on three int32 headers: `:message-type`,
`:message-flags` and `:stream-id`. A connection opens with CONNECT (auth token in the JSON payload)
answered by CONNECT_ACK with the CONNECTION_ACCEPTED flag; each operation is a new stream whose first
message names it in the `operation` header; the first reply on a stream is the response, later ones
are stream events; TERMINATE_STREAM, from either side, ends the stream.

The server records every request, answers GetConfiguration from the configuration it holds,
accepts PublishToIoTCore and UpdateState, and pushes IoT Core messages and configuration-update
events to the streams subscribed to them. Errors can be injected per operation.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Tuple

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"
SERVICE = "aws.greengrass#"
RPC_VERSION = "0.1.0"

# Header value types (eventstream specification).
BOOL_TRUE, BOOL_FALSE, BYTE, INT16, INT32, INT64, BYTE_BUF, STRING, TIMESTAMP, UUID = range(10)
_FIXED_SIZE_FORMATS = {BYTE: ">b", INT16: ">h", INT32: ">i", INT64: ">q", TIMESTAMP: ">q"}

# RPC message types and flags.
APPLICATION_MESSAGE, APPLICATION_ERROR, PING, PING_RESPONSE, CONNECT, CONNECT_ACK = range(6)
PROTOCOL_ERROR, INTERNAL_ERROR = 6, 7
CONNECTION_ACCEPTED, TERMINATE_STREAM = 0x1, 0x2

PRELUDE_SIZE = 12  # total length, headers length, prelude CRC
CRC_SIZE = 4
MAX_MESSAGE_SIZE = 16 * 1024 * 1024

Header = Tuple[str, int, Any]  # name, type, value


class ProtocolError(Exception):
    """Bytes on the socket that are not a valid eventstream RPC message."""


# -- framing ------------------------------------------------------------------------------------------


def _encode_header(name: str, kind: int, value: Any) -> bytes:
    raw_name = name.encode()
    out = struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">B", kind)
    if kind in (BOOL_TRUE, BOOL_FALSE):
        return out
    if kind in _FIXED_SIZE_FORMATS:
        return out + struct.pack(_FIXED_SIZE_FORMATS[kind], value)
    if kind in (BYTE_BUF, STRING):
        raw = value.encode() if kind == STRING else bytes(value)
        return out + struct.pack(">H", len(raw)) + raw
    if kind == UUID:
        return out + value.bytes
    raise ValueError(f"unknown header type {kind} for header {name!r}")


def encode_message(headers: Sequence[Header], payload: bytes = b"") -> bytes:
    """One eventstream message: prelude, prelude CRC, headers, payload, message CRC."""
    header_bytes = b"".join(_encode_header(*header) for header in headers)
    total = PRELUDE_SIZE + len(header_bytes) + len(payload) + CRC_SIZE
    prelude = struct.pack(">II", total, len(header_bytes))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + header_bytes + payload
    return message + struct.pack(">I", zlib.crc32(message))


def decode_headers(data: bytes) -> dict[str, tuple[int, Any]]:
    headers: dict[str, tuple[int, Any]] = {}
    position = 0
    while position < len(data):
        name_length = data[position]
        name = data[position + 1:position + 1 + name_length].decode()
        position += 1 + name_length
        kind = data[position]
        position += 1
        value: Any
        if kind in (BOOL_TRUE, BOOL_FALSE):
            value = kind == BOOL_TRUE
        elif kind in _FIXED_SIZE_FORMATS:
            fmt = _FIXED_SIZE_FORMATS[kind]
            (value,) = struct.unpack_from(fmt, data, position)
            position += struct.calcsize(fmt)
        elif kind in (BYTE_BUF, STRING):
            (length,) = struct.unpack_from(">H", data, position)
            raw = data[position + 2:position + 2 + length]
            value = raw.decode() if kind == STRING else bytes(raw)
            position += 2 + length
        elif kind == UUID:
            value = uuid.UUID(bytes=bytes(data[position:position + 16]))
            position += 16
        else:
            raise ProtocolError(f"header {name!r} has unknown type {kind}")
        headers[name] = (kind, value)
    if position != len(data):
        raise ProtocolError("headers overrun their declared length")
    return headers


@dataclass
class Message:
    headers: dict[str, tuple[int, Any]]
    payload: bytes

    def header(self, name: str, default: Any = None) -> Any:
        return self.headers.get(name, (None, default))[1]

    def int_header(self, name: str) -> int:
        kind, value = self.headers.get(name, (None, None))
        if kind != INT32:
            raise ProtocolError(f"header {name!r} must be an int32, got type {kind}")
        return int(value)

    @property
    def message_type(self) -> int:
        return self.int_header(":message-type")

    @property
    def flags(self) -> int:
        return self.int_header(":message-flags")

    @property
    def stream_id(self) -> int:
        return self.int_header(":stream-id")

    def json(self) -> Any:
        return json.loads(self.payload.decode()) if self.payload else {}


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_message(sock: socket.socket) -> Message | None:
    """The next message, or None at end of stream. Checks both CRCs."""
    prelude = _read_exactly(sock, PRELUDE_SIZE)
    if prelude is None:
        return None
    total, headers_length, prelude_crc = struct.unpack(">III", prelude)
    if zlib.crc32(prelude[:8]) != prelude_crc:
        raise ProtocolError("prelude CRC mismatch")
    if not PRELUDE_SIZE + CRC_SIZE + headers_length <= total <= MAX_MESSAGE_SIZE:
        raise ProtocolError(f"bad lengths: total {total}, headers {headers_length}")
    rest = _read_exactly(sock, total - PRELUDE_SIZE)
    if rest is None:
        raise ProtocolError("connection closed inside a message")
    (message_crc,) = struct.unpack(">I", rest[-CRC_SIZE:])
    if zlib.crc32(prelude + rest[:-CRC_SIZE]) != message_crc:
        raise ProtocolError("message CRC mismatch")
    return Message(decode_headers(rest[:headers_length]), rest[headers_length:-CRC_SIZE])


def rpc_headers(message_type: int, flags: int, stream_id: int, model: str | None = None) -> list[Header]:
    headers: list[Header] = [(":message-type", INT32, message_type), (":message-flags", INT32, flags),
                             (":stream-id", INT32, stream_id)]
    if model is not None:
        headers += [(":content-type", STRING, "application/json"), ("service-model-type", STRING, model)]
    return headers


def topic_matches(subscription: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest)."""
    wanted, actual = subscription.split("/"), topic.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(actual) or (level != "+" and level != actual[index]):
            return False
    return len(wanted) == len(actual)


# -- the server ---------------------------------------------------------------------------------------


@dataclass
class Request:
    """One operation a client started: `operation` without the service prefix, e.g. "PublishToIoTCore"."""

    operation: str
    body: dict[str, Any]
    stream_id: int
    connection: int


@dataclass
class Stream:
    operation: str
    body: dict[str, Any]
    open: bool = True
    closed_by_client: bool = False


@dataclass
class Published:
    topic: str
    qos: str
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class _Injected:
    error: str  # model name without the prefix, e.g. "UnauthorizedError"
    message: str
    times: int | None  # None: until cleared


class _Connection:
    def __init__(self, number: int, sock: socket.socket) -> None:
        self.number = number
        self.sock = sock
        self.write_lock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.connected = False
        self.token: str | None = None

    def send(self, headers: Sequence[Header], body: dict[str, Any] | None = None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        with self.write_lock:
            self.sock.sendall(encode_message(headers, payload))


STREAMING_OPERATIONS = {"SubscribeToIoTCore": "IoTCoreMessage",
                        "SubscribeToConfigurationUpdate": "ConfigurationUpdateEvents"}


class GreengrassIpcServer:
    """Listens on a Unix socket in a fresh temporary folder (short enough for AF_UNIX's 108 bytes)."""

    def __init__(self, configuration: dict[str, Any], component: str = "com.yoloedge.inference",
                 token: str | None = None, socket_name: str = "ipc.socket") -> None:
        self.component = component
        self.token = token or uuid.uuid4().hex
        self.configuration = copy.deepcopy(configuration)
        self._folder = tempfile.mkdtemp(prefix="gg-ipc-")
        self.socket_path = os.path.join(self._folder, socket_name)  # nucleus lite's is gg-ipc.socket
        self.requests: list[Request] = []
        self.published: list[Published] = []
        self.states: list[str] = []
        self.connect_tokens: list[str] = []
        self.protocol_errors: list[str] = []
        self._failures: dict[str, _Injected] = {}
        self._connections: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._changed = threading.Condition()
        self._listener: socket.socket | None = None
        self._stopping = False

    # -- life cycle --

    def start(self) -> GreengrassIpcServer:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        listener.listen(8)
        self._listener = listener
        self._spawn(self._accept_loop, "ipc-accept")
        return self

    def environment(self, token: str | None = None) -> dict[str, str]:
        """The variables the nucleus gives a component process."""
        return {SOCKET_ENV: self.socket_path, TOKEN_ENV: self.token if token is None else token}

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
            self._listener.close()
        self.drop_connections()
        for thread in self._threads:
            thread.join(5)
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> GreengrassIpcServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def drop_connections(self) -> None:
        """Close every client connection, as a nucleus that restarts would."""
        with self._changed:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    # -- what the test controls --

    def fail(self, operation: str, error: str, message: str, times: int | None = None) -> None:
        """Answer `operation` with the error shape `error` (e.g. "UnauthorizedError"), `times` times."""
        self._failures[operation] = _Injected(error, message, times)

    def clear_failure(self, operation: str) -> None:
        self._failures.pop(operation, None)

    def send_iot_message(self, topic: str, payload: bytes) -> int:
        """A message arriving from IoT Core on `topic`; returns how many subscriptions got it."""
        body = {"message": {"topicName": topic, "payload": base64.b64encode(payload).decode()}}
        return self._push("SubscribeToIoTCore", lambda s: topic_matches(s.body.get("topicName", ""), topic),
                          "IoTCoreMessage", body)

    def merge_configuration(self, values: dict[str, Any]) -> int:
        """A deployment merging `values`: one event per changed key, as the nucleus sends them."""
        with self._changed:
            self.configuration.update(copy.deepcopy(values))
        sent = 0
        for key in values:
            body = {"configurationUpdateEvent": {"componentName": self.component, "keyPath": [key]}}
            sent += self._push("SubscribeToConfigurationUpdate", lambda _s: True, "ConfigurationUpdateEvents", body)
        return sent

    def send_malformed_event(self, operation: str) -> int:
        """An event of a type the stream does not carry: the client reports a stream error."""
        return self._push(operation, lambda _s: True, "NotAnEventOfThisStream", {})

    def end_subscriptions(self, topic: str) -> int:
        """The nucleus ends the IoT Core subscriptions to `topic` (TERMINATE_STREAM, no payload)."""
        ended = 0
        for connection, stream_id, stream in self._open_streams("SubscribeToIoTCore"):
            if stream.body.get("topicName") == topic:
                stream.open = False
                connection.send(rpc_headers(APPLICATION_MESSAGE, TERMINATE_STREAM, stream_id))
                ended += 1
        return ended

    # -- what the test inspects --

    def subscribed_topics(self) -> list[str]:
        """Topics of the IoT Core subscriptions still open, in subscription order."""
        return [stream.body.get("topicName", "") for _c, _i, stream in self._open_streams("SubscribeToIoTCore")]

    def open_streams(self, operation: str) -> list[Stream]:
        return [stream for _c, _i, stream in self._open_streams(operation)]

    def all_streams(self, operation: str) -> list[Stream]:
        with self._changed:
            return [s for c in self._connections for s in c.streams.values() if s.operation == operation]

    def calls(self, operation: str) -> list[Request]:
        with self._changed:
            return [request for request in self.requests if request.operation == operation]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"IPC server: no {what} within {timeout} s")
                self._changed.wait(min(remaining, 0.1))

    def wait_published(self, predicate: Callable[[Published], bool], start: int = 0,
                       timeout: float = 60.0) -> tuple[int, Published]:
        """Index and message of the first publish from index `start` on that matches."""
        found: list[tuple[int, Published]] = []

        def matched() -> bool:
            for index in range(start, len(self.published)):
                if predicate(self.published[index]):
                    found.append((index, self.published[index]))
                    return True
            return False

        self.wait_until(matched, timeout, "matching publish")
        return found[0]

    # -- internals --

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                sock, _address = self._listener.accept()
            except OSError:
                return
            with self._changed:
                connection = _Connection(len(self._connections) + 1, sock)
                self._connections.append(connection)
            self._spawn(self._serve, f"ipc-conn-{connection.number}", connection)

    def _serve(self, connection: _Connection) -> None:
        try:
            while True:
                message = read_message(connection.sock)
                if message is None:
                    return
                self._dispatch(connection, message)
        except (ProtocolError, OSError) as exc:
            if not self._stopping:
                self._note_protocol_error(f"connection {connection.number}: {exc}")
        finally:
            with self._changed:
                connection.connected = False
                for stream in connection.streams.values():
                    stream.open = False
                self._changed.notify_all()
            connection.sock.close()

    def _note_protocol_error(self, text: str) -> None:
        with self._changed:
            self.protocol_errors.append(text)
            self._changed.notify_all()

    def _dispatch(self, connection: _Connection, message: Message) -> None:
        kind = message.message_type
        if not connection.connected:
            if kind != CONNECT or message.stream_id != 0:
                raise ProtocolError(f"first message must be CONNECT on stream 0, got type {kind}")
            self._connect(connection, message)
        elif kind == PING:
            connection.send(rpc_headers(PING_RESPONSE, 0, 0))
        elif kind in (APPLICATION_MESSAGE, APPLICATION_ERROR):
            self._stream_message(connection, message)
        else:
            raise ProtocolError(f"unexpected message type {kind} after CONNECT")

    def _connect(self, connection: _Connection, message: Message) -> None:
        if message.header(":version") != RPC_VERSION:
            raise ProtocolError(f"CONNECT without :version {RPC_VERSION}: {message.header(':version')!r}")
        token = message.json().get("authToken")
        accepted = token == self.token
        with self._changed:
            self.connect_tokens.append(token)
            connection.connected = accepted
            connection.token = token
            self._changed.notify_all()
        connection.send(rpc_headers(CONNECT_ACK, CONNECTION_ACCEPTED if accepted else 0, 0))

    def _stream_message(self, connection: _Connection, message: Message) -> None:
        stream_id = message.stream_id
        if stream_id <= 0:
            raise ProtocolError(f"application message on stream {stream_id}")
        operation = message.header("operation")
        stream = connection.streams.get(stream_id)
        if stream is None:
            if not operation or not operation.startswith(SERVICE):
                raise ProtocolError(f"new stream {stream_id} without an operation header")
            self._start_operation(connection, stream_id, operation[len(SERVICE):], message)
        elif message.flags & TERMINATE_STREAM:
            with self._changed:
                stream.open = False
                stream.closed_by_client = True
                self._changed.notify_all()

    def _start_operation(self, connection: _Connection, stream_id: int, operation: str, message: Message) -> None:
        expected_model = f"{SERVICE}{operation}Request"
        if message.header("service-model-type") != expected_model:
            raise ProtocolError(f"{operation} request typed {message.header('service-model-type')!r}")
        body = message.json()
        streaming = operation in STREAMING_OPERATIONS
        stream = Stream(operation, body, open=streaming)
        with self._changed:
            connection.streams[stream_id] = stream
            self.requests.append(Request(operation, body, stream_id, connection.number))
        failure = self._take_failure(operation)
        if failure is not None:
            stream.open = False
            connection.send(rpc_headers(APPLICATION_ERROR, TERMINATE_STREAM, stream_id, SERVICE + failure.error),
                            {"message": failure.message})
        else:
            response = self._respond(operation, body)
            if response is None:
                stream.open = False
                connection.send(rpc_headers(APPLICATION_ERROR, TERMINATE_STREAM, stream_id, SERVICE + "ServiceError"),
                                {"message": f"{operation} is not supported by this test nucleus"})
            else:
                flags = 0 if streaming else TERMINATE_STREAM
                connection.send(rpc_headers(APPLICATION_MESSAGE, flags, stream_id, f"{SERVICE}{operation}Response"),
                                response)
        with self._changed:
            self._changed.notify_all()

    def _take_failure(self, operation: str) -> _Injected | None:
        failure = self._failures.get(operation)
        if failure is None:
            return None
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[operation]
        return failure

    def _respond(self, operation: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if operation == "GetConfiguration":
            return self._get_configuration(body)
        if operation == "PublishToIoTCore":
            with self._changed:
                self.published.append(Published(body["topicName"], body["qos"],
                                                base64.b64decode(body.get("payload", ""))))
            return {}
        if operation == "UpdateState":
            with self._changed:
                self.states.append(body["state"])
            return {}
        if operation in STREAMING_OPERATIONS:
            return {}
        return None

    def _get_configuration(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._changed:
            value: Any = copy.deepcopy(self.configuration)
        for key in body.get("keyPath") or []:
            value = value[key]
        return {"componentName": body.get("componentName") or self.component, "value": value}

    def _open_streams(self, operation: str) -> list[tuple[_Connection, int, Stream]]:
        with self._changed:
            return [(connection, stream_id, stream) for connection in self._connections
                    for stream_id, stream in connection.streams.items()
                    if stream.operation == operation and stream.open]

    def _push(self, operation: str, wanted: Callable[[Stream], bool], event: str, body: dict[str, Any]) -> int:
        sent = 0
        for connection, stream_id, stream in self._open_streams(operation):
            if wanted(stream):
                connection.send(rpc_headers(APPLICATION_MESSAGE, 0, stream_id, SERVICE + event), body)
                sent += 1
        return sent


__all__ = ["GreengrassIpcServer", "Message", "ProtocolError", "Published", "Request", "Stream", "decode_headers",
           "encode_message", "read_message", "topic_matches"]
