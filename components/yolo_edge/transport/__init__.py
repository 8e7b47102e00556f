"""Message transports: a direct MQTT client for local runs, Greengrass IPC on a device."""

from .base import CommandHandler, Transport, TransportError

__all__ = ["CommandHandler", "Transport", "TransportError"]
