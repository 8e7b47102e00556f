"""The one interface the component talks through, whatever carries the messages."""

from __future__ import annotations

from typing import Callable, Protocol

CommandHandler = Callable[[bytes], None]
"""Called with each raw payload that arrives on the input topic. Must only enqueue work."""


class TransportError(RuntimeError):
    """A publish or subscribe that did not go through (disconnected, rejected, too large)."""

    retryable: bool = True
    """False when sending the same message again cannot succeed (the transport refused the message itself)."""


class Transport(Protocol):
    name: str
    max_payload_bytes: int
    """The largest payload this transport can carry; messages are fitted under it."""
    reconnects: int
    """Times the connection was made again after it was lost, since start-up."""

    def start(self, input_topic: str, on_command: CommandHandler) -> None:
        """Connect and subscribe to `input_topic`; commands are handed to `on_command`."""

    def set_input_topic(self, topic: str) -> None:
        """Move the subscription to another topic (configuration change)."""

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish one message; raises TransportError when it cannot be handed over."""

    def connected(self) -> bool: ...

    def close(self) -> None: ...
