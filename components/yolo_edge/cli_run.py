"""`yolo-edge run`: the component itself, under Greengrass (IPC) or against an MQTT broker."""

from __future__ import annotations

import argparse
import logging
import sys

from .app import Component, ShutdownRequest, run_until_signalled
from .config import Config, ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from .cli_args import add_broker_arguments, add_config_arguments

    parser = subparsers.add_parser(
        "run", help="run the inference component until SIGTERM",
        description="Run the inference component. Under Greengrass (nucleus IPC environment present, or "
                    "--greengrass) it reads its configuration over IPC and uses IoT Core topics; otherwise "
                    "it connects to the MQTT broker given by --broker. Commands: "
                    '{"status": "start" | "pause" | "stop"} on event_topic.')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--greengrass", action="store_true", default=None,
                      help="use Greengrass IPC (default: when the nucleus' IPC variables are set)")
    mode.add_argument("--mqtt", dest="greengrass", action="store_false",
                      help="use a direct MQTT connection even under Greengrass")
    add_config_arguments(parser)
    add_broker_arguments(parser)
    parser.set_defaults(handler=run)


def _greengrass_wanted(args: argparse.Namespace) -> bool:
    if args.greengrass is not None:
        return bool(args.greengrass)
    try:
        from .transport.greengrass import greengrass_available
    except ImportError:
        return False
    return greengrass_available()


def run(args: argparse.Namespace) -> int:
    from .allocator import keep_freed_memory
    from .cli_args import build_config, mqtt_settings

    keep_freed_memory()  # the frame loop's large arrays are reused instead of faulted in again each frame
    shutdown = ShutdownRequest()
    if _greengrass_wanted(args):
        from .transport import TransportError
        from .transport.greengrass import GreengrassTransport

        # A nucleus that restarted may no longer know this process' IPC token: exiting non-zero lets it
        # start the component again with a fresh one (Java nucleus: ERRORED, restart; lite: systemd).
        transport = GreengrassTransport(
            on_gave_up=lambda why: shutdown.request(f"IPC connection to the nucleus lost ({why})", exit_code=1))
        try:
            base = transport.read_configuration()
        except TransportError as exc:
            print(f"error: cannot reach the Greengrass nucleus over IPC: {exc}", file=sys.stderr)
            return 1
        try:
            config = build_config(args, base=base)
        except ConfigError as exc:
            log.error("invalid component configuration: %s", exc)
            transport.report_error()
            print(f"error: {exc}", file=sys.stderr)
            return 2
        component = Component(config, transport)
        transport.watch_configuration(component.submit_config)
    else:
        from .transport.mqtt import MqttTransport

        config = build_config(args)
        component = Component(config, MqttTransport(mqtt_settings(args)))
    log.info("yolo-edge: model %s, source %s, commands on %s, results on %s", config.model_loc,
             config.camera_id, config.event_topic, config.output_topic)
    return run_until_signalled(component, shutdown)


__all__ = ["Config", "add_parser", "run"]
