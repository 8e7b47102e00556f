"""Wires configuration, transport, controller and publisher into the running component."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

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
        self.publisher = Publisher(transport, topic=lambda: self.controller.config.output_topic,
                                   capacity=publish_buffer, capacity_bytes=publish_buffer_bytes,
                                   max_bytes=self._max_message_bytes)
        self.controller = Controller(config, self.publisher.submit, predictor_factory, source_factory,
                                     on_input_topic=transport.set_input_topic,
                                     summary_extras=self._connection_counts, **(controller_options or {}))
        self._thread = threading.Thread(target=self.controller.run, name="controller", daemon=True)
        self._stopped = False

    def _max_message_bytes(self) -> int:
        return self.controller.config.max_message_bytes or self.transport.max_payload_bytes

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
        counts: dict[str, Any] = {"messages_dropped": self.publisher.dropped}
        reconnects = getattr(self.transport, "reconnects", None)
        if reconnects is not None:
            counts["transport_reconnects"] = reconnects
        return counts


def run_until_signalled(component: Component) -> int:
    """Run until SIGTERM/SIGINT (Greengrass stops components with SIGTERM, then SIGKILL after ~5 s)."""
    stop = threading.Event()
    received: list[str] = []

    def handle(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    component.start()
    stop.wait()
    log.info("received %s, shutting down", received[0] if received else "stop")
    component.stop("signal " + (received[0] if received else ""))
    return 0
