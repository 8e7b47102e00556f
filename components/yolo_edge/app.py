"""Wires configuration, transport, controller and publisher into the running component."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from . import messages
from .config import Config
from .controller import Controller
from .predictor import Predictor, load_predictor
from .publisher import CAPACITY_BYTES, CAPACITY_MESSAGES, Publisher
from .sources import FrameSource, open_source
from .transport import Transport

log = logging.getLogger(__name__)

# Greengrass sends SIGKILL about 5 s after SIGTERM; everything below must fit well inside that.
STOP_TIMEOUT_S = 4.0


class Component:
    """One running inference component. `start()` returns at once; `stop()` shuts it down.

    `publish_buffer` / `publish_buffer_bytes` bound the messages kept while the connection is down;
    `controller_options` go to `Controller` (e.g. `error_burst`, `error_rate_per_s`).
    """

    def __init__(self, config: Config, transport: Transport,
                 predictor_factory: Callable[[Config], Predictor] = load_predictor,
                 source_factory: Callable[[str, bool], FrameSource] = open_source, *,
                 publish_buffer: int = CAPACITY_MESSAGES, publish_buffer_bytes: int = CAPACITY_BYTES,
                 controller_options: dict[str, Any] | None = None) -> None:
        self.transport = transport
        self.publisher = Publisher(transport, topic=self._topic_for,
                                   capacity=publish_buffer, capacity_bytes=publish_buffer_bytes,
                                   max_bytes=self._max_message_bytes)
        self.controller = Controller(config, self.publisher.submit, predictor_factory, source_factory,
                                     on_input_topic=transport.set_input_topic,
                                     summary_extras=self._connection_counts, **(controller_options or {}))
        self._thread = threading.Thread(target=self.controller.run, name="controller", daemon=True)
        self._stopped = False
        self._limit_warned = 0  # the configured max_message_bytes last warned about

    def _topic_for(self, kind: str) -> str:
        """The topic of a message type: event messages on event_topic_out when it is set."""
        config = self.controller.config
        if config.event_topic_out and kind in messages.EVENT_TYPES:
            return config.event_topic_out
        return config.output_topic

    def _max_message_bytes(self) -> int:
        # Never above what the transport carries: nucleus lite drops the connection on a larger request.
        carried, configured = self.transport.max_payload_bytes, self.controller.config.max_message_bytes
        if configured > carried and configured != self._limit_warned:
            self._limit_warned = configured
            log.warning("config key 'max_message_bytes' is %d, over the %d bytes the %s transport carries; "
                        "messages are kept to at most %d bytes", configured, carried, self.transport.name, carried)
        return min(configured or carried, carried)

    @property
    def config(self) -> Config:
        return self.controller.config

    def start(self) -> Component:
        self.publisher.start()
        self._thread.start()
        self.transport.start(self.controller.config.event_topic, self.controller.submit_command)
        return self

    def submit_command(self, payload: bytes) -> None:
        self.controller.submit_command(payload)

    def submit_config(self, values: dict) -> None:
        self.controller.submit_config(values)

    def stop(self, reason: str = "shutdown", timeout: float = STOP_TIMEOUT_S) -> None:
        """End the run (final summary), release the source and model, flush messages, disconnect.

        Each step gets a share of `timeout`, so the whole stop fits Greengrass' 5 s grace."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self.controller.request_shutdown(reason)
        if not self.controller.wait_done(max(0.1, timeout * 0.55)):
            log.warning("controller did not finish within %.1f s", timeout * 0.55)
        self.publisher.close(flush_timeout=max(0.1, deadline - time.monotonic() - timeout * 0.25))
        self.transport.close()
        log.info("stopped in %.2f s (%s)", timeout - (deadline - time.monotonic()), reason)

    def wait(self) -> None:
        self.controller.wait_done()

    def _connection_counts(self) -> dict[str, Any]:
        return {"messages_dropped": self.publisher.dropped, "transport_reconnects": self.transport.reconnects}


class ShutdownRequest:
    """Why and with which exit status the process should stop: the first request wins."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._lock = threading.Lock()
        self.reason = ""
        self.exit_code = 0

    def request(self, reason: str, exit_code: int = 0) -> None:
        with self._lock:
            if self._requested.is_set():
                return
            self.reason, self.exit_code = reason, exit_code
            self._requested.set()

    def wait(self) -> None:
        self._requested.wait()


def run_until_signalled(component: Component, shutdown: ShutdownRequest | None = None) -> int:
    """Run until SIGTERM/SIGINT (Greengrass stops components with SIGTERM, then SIGKILL after ~5 s), or
    until `shutdown` is requested (exit status from the request)."""
    shutdown = shutdown or ShutdownRequest()

    def handle(signum: int, _frame: object) -> None:
        shutdown.request("signal " + signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    component.start()
    shutdown.wait()
    log.info("shutting down: %s", shutdown.reason)
    component.stop(shutdown.reason)
    return shutdown.exit_code
