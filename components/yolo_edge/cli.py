"""`yolo-edge` command line: run | demo | send | export | bench | ..."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from typing import Any

from . import __version__
from .config import Config, ConfigError, load_config_file

# Each module exposes add_parser(subparsers); its parser sets `handler=run` with run(args) -> int.
# Keyed by command name so a module that cannot be imported still has its command, which reports why.
COMMAND_MODULES = {
    "run": "yolo_edge.cli_run",
    "demo": "yolo_edge.demo",
    "export": "yolo_edge.export",
    "bench": "yolo_edge.bench",
}

log = logging.getLogger("yolo_edge")


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


def mqtt_settings(args: argparse.Namespace):
    from .transport.mqtt import MqttSettings

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolo-edge",
        description="Run YOLO models on edge devices as an AWS IoT Greengrass v2 component, "
                    "controlled over MQTT.")
    parser.add_argument("--version", action="version", version=f"yolo-edge {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("YOLO_EDGE_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, module_name in COMMAND_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure must reach the user, not hide the command
            add_unavailable_parser(subparsers, command, module_name, exc)
            continue
        module.add_parser(subparsers)
    add_send_parser(subparsers)
    return parser


def add_unavailable_parser(subparsers: argparse._SubParsersAction, command: str, module_name: str,
                           error: Exception) -> None:
    """A command whose module failed to import: it stays listed and, when run, prints the import error."""
    reason = f"{type(error).__name__}: {error}"
    # No option prefix: every word after the command, flags included, is taken and ignored.
    parser = subparsers.add_parser(command, help=f"unavailable ({reason})", add_help=False, prefix_chars="\0",
                                   description=f"`yolo-edge {command}` cannot run here: importing {module_name} "
                                               f"failed with {reason}")
    parser.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=lambda _args: report_unavailable(command, module_name, error))


def report_unavailable(command: str, module_name: str, error: Exception) -> int:
    hint = " (a missing optional dependency: see the README's pip extras)" if isinstance(error, ImportError) else ""
    print(f"error: `yolo-edge {command}` is unavailable: importing {module_name} failed with "
          f"{type(error).__name__}: {error}{hint}", file=sys.stderr)
    return 1


def add_send_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("send", help="publish a start/pause/stop command to a broker",
                                   description="Publish {\"status\": ACTION} on the command topic, and "
                                               "optionally print the replies on the output topic.")
    parser.add_argument("action", choices=["start", "pause", "stop"])
    parser.add_argument("--topic", default=Config().event_topic, help="command topic (default: %(default)s)")
    parser.add_argument("--output-topic", default=Config().output_topic,
                        help="topic to read replies from with --wait (default: %(default)s)")
    parser.add_argument("--request-id", help="echoed back in the reply")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="print state/error replies for up to SECONDS (default: 0, do not wait)")
    add_broker_arguments(parser)
    parser.set_defaults(handler=run_send)


def run_send(args: argparse.Namespace) -> int:
    import threading

    import paho.mqtt.client as mqtt

    settings = mqtt_settings(args)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id or "")
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.ca_file:
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
    replies: list[dict] = []
    got_reply = threading.Event()
    subscribed = threading.Event()

    def on_message(_c, _u, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if body.get("type") in ("state", "error") and (not args.request_id or
                                                        body.get("request_id") == args.request_id):
            replies.append(body)
            got_reply.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    try:
        client.connect(settings.host, settings.port, 30)
    except OSError as exc:
        print(f"error: cannot connect to broker {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    client.loop_start()
    try:
        if args.wait > 0:
            client.subscribe(args.output_topic, qos=1)
            subscribed.wait(5)
        body: dict[str, Any] = {"status": args.action}
        if args.request_id:
            body["request_id"] = args.request_id
        client.publish(args.topic, json.dumps(body), qos=1).wait_for_publish(10)
        print(f"sent {json.dumps(body)} to {args.topic}")
        if args.wait > 0:
            if got_reply.wait(args.wait):
                time.sleep(0.2)
                for reply in replies:
                    print(json.dumps(reply))
            else:
                print(f"no reply on {args.output_topic} within {args.wait:g} s", file=sys.stderr)
                return 1
    finally:
        client.loop_stop()
        client.disconnect()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
