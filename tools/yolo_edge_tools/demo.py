"""`yolo-edge demo`: the whole loop on one machine with nothing configured.

Starts a private Mosquitto on a free loopback port, builds a YOLOv8n ONNX model from Ultralytics'
bundled architecture when none is given (random weights: boxes are meaningless, timings are real),
makes a short video, runs the component, sends start, prints frames as a live table, then stop and
the run's summary.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from yolo_edge.app import Component
from yolo_edge.config import Config

from .local_broker import BrokerError, LocalBroker
from .samples import make_video

CACHE = Path.home() / ".cache" / "yolo-edge" / "demo"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the component end to end on this machine (private broker, sample video)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model file to run (default: build a random-weights YOLOv8n ONNX)")
    parser.add_argument("--imgsz", type=int, default=640, help="input size of the built model (default: 640)")
    parser.add_argument("--source", help="video file, image folder or camera index (default: a made video)")
    parser.add_argument("--frames", type=int, default=60, help="frames in the made video (default: 60)")
    parser.add_argument("--broker", help="use this HOST:PORT broker instead of starting a private Mosquitto")
    parser.add_argument("--pause-at", type=int, default=0, metavar="N",
                        help="pause after N frames, resume a second later (shows the state machine)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra configuration keys")
    parser.add_argument("--json", action="store_true", help="print raw messages instead of the table")
    parser.set_defaults(handler=run)


def demo_model(imgsz: int) -> Path:
    target = CACHE / f"yolov8n-random-v2-{imgsz}.onnx"  # v2: batch-norm calibrated (modelgen)
    if target.exists():
        print(f"using cached demo model {target} (random weights)")
        return target
    try:
        from .modelgen import make_random_model
    except ImportError as exc:
        raise SystemExit(f"error: building the demo model needs Ultralytics ({exc}); "
                         "install yolo-edge[export] or pass --model FILE") from exc
    print(f"building YOLOv8n from Ultralytics' architecture and exporting ONNX at {imgsz}x{imgsz} ...")
    print("note: the weights are RANDOM (nothing is downloaded); boxes are meaningless, timings are real")
    with tempfile.TemporaryDirectory() as tmp:
        made = make_random_model(tmp, "detect", imgsz, "onnx")
        CACHE.mkdir(parents=True, exist_ok=True)
        shutil.copy(made, target)
    return target


def _print_row(message: dict[str, Any]) -> None:
    lat = message["latency_ms"]
    count = message.get("detection_count", len(message.get("classes", [])))
    print(f"{message['seq']:>6} {lat['preprocess']:>8.1f} {lat['inference']:>9.1f} {lat['postprocess']:>8.1f} "
          f"{lat['total']:>8.1f} {message['fps']:>7.1f} {count:>6}")


def _print_summary(message: dict[str, Any]) -> None:
    print(f"\nsummary: {message['frames']} frames, {message['fps']:.1f} FPS end to end, "
          f"{message['frames_published']} published, model {message['model']['name'] if message['model'] else '-'}")
    print(f"{'stage':<12} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for stage, values in message["latency_ms"].items():
        print(f"{stage:<12} {values['p50']:>8.2f} {values['p90']:>8.2f} {values['p99']:>8.2f} {values['mean']:>8.2f}")


def run(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt

    from yolo_edge.cli_args import parse_overrides
    from yolo_edge.transport.mqtt import MqttSettings, MqttTransport

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="yolo-edge-demo-")))
        if args.broker:
            settings = MqttSettings.from_address(args.broker)
        else:
            try:
                broker = LocalBroker(workdir).start()
            except BrokerError as exc:
                raise SystemExit(f"error: {exc}, or pass --broker HOST:PORT of a running broker") from exc
            stack.callback(broker.stop)
            settings = MqttSettings(port=broker.port)
            print(f"started a private mosquitto on {broker.address}")
        model = Path(args.model) if args.model else demo_model(args.imgsz)
        source = args.source or str(make_video(workdir / "demo.avi", args.frames))
        values = {"model_loc": str(model), "camera_id": source, "max_publish_rate": "0",
                  "summary_interval_s": "0", "MODEL_HEIGHT": args.imgsz, "MODEL_WIDTH": args.imgsz}
        values.update(parse_overrides(args.set or []))
        config = Config.from_mapping(values)

        inbox: queue.Queue = queue.Queue()
        watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        watcher.on_message = lambda _c, _u, m: inbox.put(json.loads(m.payload))
        watcher.connect(settings.host, settings.port)
        watcher.subscribe(config.output_topic, qos=1)
        watcher.loop_start()
        stack.callback(watcher.loop_stop)

        started = time.monotonic()
        transport = MqttTransport(settings)
        component = Component(config, transport).start()
        stack.callback(component.stop, "demo finished")
        if not transport.wait_connected(10):
            print("error: the component could not connect to the broker", file=sys.stderr)
            return 1
        # Wait for the model to load (status model_loaded) or fail before sending start.
        if not _wait_for(inbox, args, lambda m: m.get("type") == "status" and m["event"] == "model_loaded"
                         or m.get("type") == "error", 120):
            print("error: the model did not load", file=sys.stderr)
            return 1
        watcher.publish(config.event_topic, json.dumps({"status": "start"}), qos=1)
        print(f"sent {{\"status\": \"start\"}} to {config.event_topic}; frames on {config.output_topic}:\n")
        print(f"{'frame':>6} {'pre ms':>8} {'infer ms':>9} {'post ms':>8} {'total ms':>8} {'fps':>7} {'dets':>6}")
        first_frame: float | None = None
        paused = False
        summary = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                message = inbox.get(timeout=1.0)
            except queue.Empty:
                continue
            kind = message.get("type")
            if kind == "frame":
                first_frame = first_frame or time.monotonic()
                if args.json:
                    print(json.dumps(message))
                else:
                    _print_row(message)
                if args.pause_at and message["seq"] == args.pause_at and not paused:
                    paused = True
                    watcher.publish(config.event_topic, json.dumps({"status": "pause"}), qos=1)
                    print("-- sent pause; resuming in 1 s --")
                    time.sleep(1.0)
                    watcher.publish(config.event_topic, json.dumps({"status": "start"}), qos=1)
            elif kind == "summary" and message.get("final"):
                summary = message
            elif kind == "state":
                print(f"-- state {message['previous']} -> {message['state']} ({message['reason']}) --")
                if message["state"] == "idle" and message["previous"] != "idle":
                    break
            elif kind == "error":
                print(f"-- error {message['code']}: {message['message']} --")
                if message["code"] in ("model_load_failed", "source_open_failed"):
                    return 1
        watcher.publish(config.event_topic, json.dumps({"status": "stop"}), qos=1)
        if summary:
            _print_summary(summary)
            if first_frame is not None:
                print(f"time from start of the run to the first frame message: {first_frame - started:.2f} s")
        return 0 if summary and summary["frames"] > 0 else 1


def _wait_for(inbox: queue.Queue, args: argparse.Namespace, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        if predicate(message):
            if message.get("type") == "error":
                print(f"-- error {message['code']}: {message['message']} --")
                return False
            return True
    return False
