"""A direct MQTT client (paho-mqtt 2.x) for running without Greengrass: local broker, tests, demo."""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ..config import MAX_PAYLOAD_BYTES
from .base import CommandHandler, TransportError

log = logging.getLogger(__name__)

# paho keeps QoS 1 messages it could not send yet (and those awaiting PUBACK) in its own queue;
# capping it keeps memory bounded when the link dies silently, the publisher buffers the rest.
MAX_QUEUED_MESSAGES = 100
CLOSE_FLUSH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 30
    qos: int = 1

    @classmethod
    def from_address(cls, address: str, **kwargs: Any) -> MqttSettings:
        """'HOST:PORT' or 'HOST' (port 1883, or 8883 with TLS); `kwargs` are the other fields."""
        host, _, port_text = address.rpartition(":") if ":" in address else (address, "", "")
        tls = bool(kwargs.get("ca_file"))
        if not port_text:
            return cls(host=address, port=8883 if tls else 1883, **kwargs)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"--broker {address!r}: the port must be a number from 1 to 65535")
        return cls(host=host or "127.0.0.1", port=int(port_text), **kwargs)


class MqttTransport:
    name = "mqtt"
    max_payload_bytes = MAX_PAYLOAD_BYTES

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        client_id = settings.client_id or f"yolo-edge-{uuid.uuid4().hex[:8]}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        self._last_publish: mqtt.MQTTMessageInfo | None = None
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.ca_file:
            self._client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file,
                                 keyfile=settings.key_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._topic: str | None = None
        self._handler: CommandHandler | None = None
        self._connected = threading.Event()
        self.reconnects = 0
        self._ever_connected = False

    def start(self, input_topic: str, on_command: CommandHandler) -> None:
        self._topic, self._handler = input_topic, on_command
        try:
            self._client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to MQTT broker {self.settings.host}:{self.settings.port}: "
                                 f"{exc}") from exc
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def set_input_topic(self, topic: str) -> None:
        old, self._topic = self._topic, topic
        if self._connected.is_set():
            if old:
                self._client.unsubscribe(old)
            self._client.subscribe(topic, qos=self.settings.qos)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=self.settings.qos)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and self.settings.qos > 0:
            # The connection dropped before on_disconnect cleared `connected()`. paho has queued the
            # message and sends it after reconnecting; raising here would publish it twice.
            self._last_publish = info
            return
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        self._last_publish = info

    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        last = self._last_publish
        if last is not None and self._connected.is_set() and self.settings.qos > 0:
            try:  # let the last messages (the final summary) reach the broker before disconnecting
                last.wait_for_publish(CLOSE_FLUSH_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                log.debug("not waiting for the last publish: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks run on paho's network thread: only hand over, never block.
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker refused the connection: %s", reason_code)
            return
        if self._ever_connected:
            self.reconnects += 1
            log.info("reconnected to MQTT broker %s:%d", self.settings.host, self.settings.port)
        self._ever_connected = True
        if self._topic:
            client.subscribe(self._topic, qos=self.settings.qos)
        else:
            self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        # Connected from here on, not from on_connect: paho resends the QoS 1 messages of the previous
        # connection right after on_connect returns, and new messages must not overtake them.
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self._connected.clear()
        if reason_code != 0:
            log.warning("MQTT connection lost (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if self._handler is not None and message.topic == self._topic:
            self._handler(bytes(message.payload))
