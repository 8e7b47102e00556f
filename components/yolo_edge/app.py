"""Wires configuration, transport, controller and publisher into the running component."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from .config import Config
from .controller import Controller
from .predictor import Predictor, load_predictor
from .publisher import Publisher
from .sources import FrameSource, open_source
from .transport import Transport

log = logging.getLogger(__name__)


class Component:
    """One running inference component. `start()` returns at once; `stop()` shuts it down."""

    def __init__(self, config: Config, transport: Transport,
                 predictor_factory: Callable[[Config], Predictor] = load_predictor,
                 source_factory: Callable[[str, bool], FrameSource] = open_source) -> None:
        self.transport = transport
        self.publisher = Publisher(transport, topic=lambda: self.controller.config.output_topic)
        self.controller = Controller(config, self.publisher.submit, predictor_factory, source_factory,
                                     on_input_topic=transport.set_input_topic)
        self._thread = threading.Thread(target=self.controller.run, name="controller", daemon=True)

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

    def stop(self, reason: str = "shutdown", timeout: float = 4.0) -> None:
        """Stop the run (final summary), flush messages, disconnect. Fits Greengrass' 5 s grace."""
        self.controller.request_shutdown(reason)
        if not self.controller.wait_done(timeout * 0.6):
            log.warning("controller did not finish within %.1f s", timeout * 0.6)
        self.publisher.close(flush_timeout=timeout * 0.3)
        self.transport.close()

    def wait(self) -> None:
        self.controller.wait_done()


def run_until_signalled(component: Component) -> int:
    """Run until SIGTERM/SIGINT (Greengrass stops components with SIGTERM, then SIGKILL after ~5 s)."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    component.start()
    while not stop.wait(1.0):
        pass
    component.stop("signal")
    return 0
