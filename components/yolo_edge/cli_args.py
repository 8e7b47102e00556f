"""Command-line arguments shared by the commands: broker connection and configuration overrides."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .config import Config, ConfigError, load_config_file
from .transport.mqtt import MqttSettings


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MQTT broker (when not running under Greengrass)")
    group.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT",
                       help="MQTT broker address (default: %(default)s)")
    group.add_argument("--username", help="MQTT user name")
    group.add_argument("--password", default=os.environ.get("YOLO_EDGE_MQTT_PASSWORD"),
                       help="MQTT password (default: $YOLO_EDGE_MQTT_PASSWORD)")
    group.add_argument("--ca-file", help="CA certificate: enables TLS (port defaults to 8883)")
    group.add_argument("--cert-file", help="client certificate for TLS (AWS IoT Core: the device certificate)")
    group.add_argument("--key-file", help="client private key for TLS")
    group.add_argument("--client-id", default="", help="MQTT client id (default: random)")


def mqtt_settings(args: argparse.Namespace) -> MqttSettings:
    return MqttSettings.from_address(args.broker, username=args.username, password=args.password,
                                     ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                                     client_id=args.client_id)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--set", pair, "KEY=VALUE, e.g. --set conf_threshold=0.4")
        values[key.strip()] = value
    return values


def build_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Config:
    """Config from (in rising priority) `base`, --config FILE, shortcut flags, --set KEY=VALUE."""
    values: dict[str, Any] = dict(base or {})
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    for flag, key in (("model", "model_loc"), ("source", "camera_id"), ("event_topic", "event_topic"),
                      ("output_topic", "output_topic")):
        if getattr(args, flag, None) is not None:
            values[key] = getattr(args, flag)
    values.update(parse_overrides(getattr(args, "set", None) or []))
    return Config.from_mapping(values)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (same keys as the recipe's configuration)")
    group.add_argument("--config", metavar="FILE", help="JSON or YAML file of configuration keys")
    group.add_argument("--model", help="model file (config key model_loc)")
    group.add_argument("--source", help="camera index, video file, image folder or stream URL (camera_id)")
    group.add_argument("--event-topic", help="command topic (event_topic)")
    group.add_argument("--output-topic", help="results topic (output_topic)")
    group.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any configuration key, repeatable: --set MODEL_HEIGHT=480 --set conf_threshold=0.4")
