"""`yolo-edge` command line: run | snapshot | send from the runtime; demo | export | bench from the tools package.

The runtime never imports the tools. They register their commands under the entry-point group
`yolo_edge.commands` (each entry point names a module with `add_parser(subparsers)`); a tool command
whose package is not installed stays listed and says which extra to install.
"""

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
from .cli_args import add_broker_arguments, mqtt_settings
from .config import Config, ConfigError

ENTRY_POINT_GROUP = "yolo_edge.commands"
# Commands of the runtime itself; each module exposes add_parser(subparsers), whose parser sets
# `handler=run` with run(args) -> int.
RUNTIME_COMMANDS = {"run": "yolo_edge.cli_run", "snapshot": "yolo_edge.cli_snapshot"}
# Commands the tools package provides, and the pip extra that installs it.
TOOL_COMMANDS = ("demo", "export", "bench")
TOOLS_EXTRA = "tools"

log = logging.getLogger("yolo_edge")


def command_entry_points() -> dict[str, str]:
    """Command name -> module, as installed packages register them under ENTRY_POINT_GROUP."""
    from importlib import metadata

    if sys.version_info >= (3, 10):
        entries = metadata.entry_points(group=ENTRY_POINT_GROUP)
    else:  # 3.8/3.9: a dict of groups
        entries = metadata.entry_points().get(ENTRY_POINT_GROUP, [])
    return {entry.name: entry.value for entry in entries}


def command_modules() -> dict[str, str]:
    """Every command's module: the runtime's, then the installed tools' (the runtime's win a clash)."""
    modules = dict(RUNTIME_COMMANDS)
    installed = command_entry_points()
    for name in [*(name for name in TOOL_COMMANDS if name in installed), *sorted(installed)]:
        modules.setdefault(name, installed[name])
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolo-edge",
        description="Run YOLO models on edge devices as an AWS IoT Greengrass v2 component, "
                    "controlled over MQTT.")
    parser.add_argument("--version", action="version", version=f"yolo-edge {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("YOLO_EDGE_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = command_modules()
    for command, module_name in modules.items():
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any import failure must reach the user, not hide the command
            add_unavailable_parser(subparsers, command, module_name, exc)
            continue
        module.add_parser(subparsers)
    for command in TOOL_COMMANDS:
        if command not in modules:
            add_not_installed_parser(subparsers, command)
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


def add_not_installed_parser(subparsers: argparse._SubParsersAction, command: str) -> None:
    """A tool command whose package is not installed (a device install): say how to get it."""
    hint = f"needs the tools: pip install 'yolo-edge[{TOOLS_EXTRA}]'"
    parser = subparsers.add_parser(command, help=f"not installed ({hint})", add_help=False, prefix_chars="\0",
                                   description=f"`yolo-edge {command}` {hint}")
    parser.add_argument("ignored", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=lambda _args: report_not_installed(command))


def report_not_installed(command: str) -> int:
    print(f"error: `yolo-edge {command}` is a developer tool and the tools package (yolo-edge-tools) is not "
          f"installed; install it with: pip install 'yolo-edge[{TOOLS_EXTRA}]' (from a clone: "
          "pip install ./tools)", file=sys.stderr)
    return 1


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
    parser.add_argument("--camera", metavar="NAME", help="the one camera the command is for (default: every camera)")
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
    replies: list[dict[str, Any]] = []
    got_reply = threading.Event()
    subscribed = threading.Event()

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
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
        if args.camera:
            body["camera"] = args.camera
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
