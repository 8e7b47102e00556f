"""A private Mosquitto on a free 127.0.0.1 port: for `yolo-edge demo`, the tests and the soak script."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # an (address, port) pair for AF_INET
        return port


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
    if found is None:
        raise BrokerError("mosquitto is not installed (sudo apt-get install -y mosquitto)")
    return found


class LocalBroker:
    """Mosquitto 2.x listening on 127.0.0.1 only; can be stopped, killed and restarted on the same port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = mosquitto_binary()
        self.port = port or free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.log = workdir / "mosquitto.log"
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalBroker:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not start on port {self.port}: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        """Terminate gracefully."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)

    def kill(self) -> None:
        """Die abruptly, as a crashed broker would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
