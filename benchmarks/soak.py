"""Soak test: `yolo-edge run` as a real process under a stream of random commands for N minutes.

Starts a private Mosquitto, runs the component on a looping video with a random-weights YOLOv8n
ONNX model, sends random commands (start, pause, stop and malformed payloads) at --rate per
second, and (unless --no-broker-restarts) kills and restarts the broker every --interval. Prints the
component's RSS and thread count (from /proc/PID/status) at the start, every --interval seconds
(default: a minute) and at the end, and the counts of frames, errors and reconnects. Exits 1 when RSS
grew by --max-rss-growth or more (measured from the end of the first interval, once buffers and the
runtime's arenas have settled), or the thread count did not return to where it started.

    python benchmarks/soak.py --minutes 10
    python benchmarks/soak.py --smoke      # ~20 s at 64x64, a sample and a broker restart every 6 s

--smoke proves the script end to end (the same component process, commands and broker restarts); it is
too short to judge memory growth, so it allows 50 % (explicit options still win over its values).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from yolo_edge_tools.demo import demo_model
from yolo_edge_tools.local_broker import LocalBroker
from yolo_edge_tools.samples import make_video

IN, OUT = "soak/in", "soak/out"
BAD_PAYLOADS = [b"", b"not json", b"[]", b"null", b"42", b'{"status": 1}', b'{"status": "launch"}',
                b'{"state": "start"}', bytes(range(256)), b'{"status": "start", "pad": "' + b"x" * 5000 + b'"}',
                b"[" * 2000 + b"]" * 2000, '{"status": "stärt"}'.encode()]
ACTIONS = [("start", 0.40), ("pause", 0.15), ("stop", 0.10), ("bad", 0.35)]
# --smoke: short, smallest model, samples and broker restarts often enough to happen several times.
SMOKE = {"minutes": 0.3, "interval": 6.0, "imgsz": 64, "max_rss_growth": 50.0}


class Monitor:
    """Subscribes to the output topic (reconnecting fast) and counts what the component says."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.error_codes: Counter[str] = Counter()
        self.status_events: Counter[str] = Counter()
        self.last_summary: dict[str, Any] = {}
        self.max_reconnects = 0
        self.max_suppressed = 0
        self.model_loaded = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"soak-monitor-{os.getpid()}")
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(OUT, qos=1)
            self.connected.set()

    def _on_message(self, _client, _userdata, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = {"type": "unparsable"}
        kind = body.get("type", "?")
        with self.lock:
            self.counts[kind] += 1
            if kind == "frames":
                self.counts["frame"] += body.get("count", 0)
            elif kind == "error":
                self.error_codes[body.get("code", "?")] += 1
            elif kind == "status":
                self.status_events[body.get("event", "?")] += 1
                if body.get("event") == "model_loaded":
                    self.model_loaded.set()
            elif kind == "summary":
                self.last_summary = body
                self.max_reconnects = max(self.max_reconnects, body.get("transport_reconnects", 0))
                self.max_suppressed = max(self.max_suppressed, body.get("errors_suppressed", 0))

    def send(self, payload: bytes) -> bool:
        if not self.connected.is_set():
            return False
        return self.client.publish(IN, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def proc_status(pid: int) -> tuple[float, int]:
    """(RSS in MiB, thread count) of process `pid`."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def prepare_inputs(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path]:
    model = Path(args.model) if args.model else demo_model(args.imgsz)
    video = Path(args.source) if args.source else make_video(workdir / "soak.avi", 90)
    return model, video


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=f"a short run proving the script works: {SMOKE}")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds between RSS samples and between broker restarts (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=10.0, help="commands per second (default: %(default)s)")
    parser.add_argument("--model", help="model file (default: a random-weights YOLOv8n ONNX, built once)")
    parser.add_argument("--imgsz", type=int, default=320, help="input size of the built model (default: 320)")
    parser.add_argument("--source", help="video file (default: a made 90-frame video, looped)")
    parser.add_argument("--no-broker-restarts", dest="broker_restarts", action="store_false",
                        help="do not kill and restart the broker every --interval")
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="allowed RSS growth in %% (default: 5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", help="write the component's log here (default: a temporary file)")
    args = parser.parse_args(argv)
    if args.smoke:  # the smoke values become the defaults; options given explicitly keep theirs
        parser.set_defaults(**SMOKE)
        args = parser.parse_args(argv)
    if args.interval <= 0 or args.minutes <= 0:
        parser.error("--minutes and --interval must be positive")
    return args


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    os.environ.setdefault("YOLO_OFFLINE", "1")

    workdir = Path(tempfile.mkdtemp(prefix="yolo-edge-soak-"))
    model, video = prepare_inputs(args, workdir)
    broker = LocalBroker(workdir)
    broker.start()
    monitor = Monitor(broker.port)
    log_path = Path(args.log) if args.log else workdir / "component.log"
    command = [sys.executable, "-m", "yolo_edge.cli", "run", "--mqtt", "--broker", f"127.0.0.1:{broker.port}",
               "--model", str(model), "--source", str(video), "--event-topic", IN, "--output-topic", OUT,
               "--set", "loop_source=true", "--set", f"MODEL_HEIGHT={args.imgsz}", "--set", f"MODEL_WIDTH={args.imgsz}",
               "--set", "summary_interval_s=10"]
    with log_path.open("wb") as log:
        component = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    print(f"soak: {args.minutes:g} min, {args.rate:g} commands/s, model {model.name}, broker 127.0.0.1:{broker.port},"
          f" component pid {component.pid}, log {log_path}")
    samples: list[tuple[float, float, int]] = []
    sent: Counter[str] = Counter()
    broker_restarts = 0
    try:
        if not monitor.model_loaded.wait(120):
            raise SystemExit(f"error: the component did not load the model; see {log_path}")
        print(f"{'t (s)':>6} {'RSS MiB':>8} {'threads':>7} {'frames':>7} {'errors':>6} {'suppr.':>6} "
              f"{'reconn.':>7} {'restarts':>8} {'commands':>8}")

        def sample(now: float) -> None:
            rss, threads = proc_status(component.pid)
            samples.append((now, rss, threads))
            with monitor.lock:
                print(f"{now:>6.0f} {rss:>8.1f} {threads:>7} {monitor.counts['frame']:>7} {monitor.counts['error']:>6}"
                      f" {monitor.max_suppressed:>6} {monitor.max_reconnects:>7} {broker_restarts:>8}"
                      f" {sum(sent.values()):>8}", flush=True)

        started = time.monotonic()
        end = started + args.minutes * 60
        next_sample = started
        # 5 s before each sample (mid-interval for short ones): the broker is back when RSS is read
        next_restart = started + args.interval - min(5.0, args.interval / 2)
        tick = 0
        while (now := time.monotonic()) < end:
            if component.poll() is not None:
                raise SystemExit(f"error: the component exited with {component.returncode}; see {log_path}")
            if now >= next_sample:
                sample(now - started)
                next_sample += args.interval
            if args.broker_restarts and now >= next_restart:
                broker.kill()
                time.sleep(2.0)
                broker.start()
                broker_restarts += 1
                next_restart += args.interval
            action = rng.choices([a for a, _ in ACTIONS], [w for _, w in ACTIONS])[0]
            payload = rng.choice(BAD_PAYLOADS) if action == "bad" else json.dumps({"status": action}).encode()
            sent[action if monitor.send(payload) else "not_sent"] += 1
            tick += 1
            time.sleep(max(0.0, started + tick / args.rate - time.monotonic()))
        monitor.send(b'{"status": "stop"}')
        time.sleep(3)  # let the last summary arrive and the run's threads end
        sample(time.monotonic() - started)
        signalled = time.monotonic()
        component.send_signal(signal.SIGTERM)
        component.wait(15)
        exit_s = time.monotonic() - signalled
    finally:
        if component.poll() is None:
            component.kill()
        monitor.close()
        broker.kill()

    start_threads = samples[0][2]
    warm_rss = samples[1][1] if len(samples) > 2 else samples[0][1]  # after the first interval, when there is one
    end_rss, end_threads = samples[-1][1], samples[-1][2]
    growth = (end_rss - warm_rss) / warm_rss * 100
    thread_counts = [s[2] for s in samples]
    print(f"\nRSS: start {samples[0][1]:.1f} MiB, after {args.interval:g} s {warm_rss:.1f} MiB, end {end_rss:.1f} MiB "
          f"({growth:+.2f}% since {args.interval:g} s)")
    print(f"threads: start {start_threads}, end {end_threads}, min {min(thread_counts)}, max {max(thread_counts)}")
    print(f"commands sent: {dict(sent)}")
    print(f"frames published: {monitor.counts['frame']}; messages by type: {dict(monitor.counts)}")
    print(f"errors published: {dict(monitor.error_codes)}; suppressed by the rate limit: {monitor.max_suppressed}")
    print(f"status events: {dict(monitor.status_events)}")
    print(f"broker restarts: {broker_restarts}; component reconnects: {monitor.max_reconnects}")
    print(f"exit after SIGTERM: code {component.returncode} in {exit_s:.2f} s")
    ok = (growth < args.max_rss_growth and end_threads <= start_threads + 1 and component.returncode == 0
          and monitor.counts["frame"] > 0)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
