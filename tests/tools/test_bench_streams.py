"""`yolo-edge bench --streams`: real tiny runs (several cameras through one Controller, each in its own
process), the collector's batch and window arithmetic, the derived figures and targets, and bad options."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mjpeg_server import MjpegServer

from yolo_edge.cli import main
from yolo_edge_tools import bench_streams
from yolo_edge_tools.bench_streams import StreamCollector

TINY = ["--sizes", "64", "--video-size", "64x64", "--frames", "6", "--warmup", "2", "--device", "cpu"]
NUMBER = r"\d+(\.\d+)?"


def _bench(model: Path, output: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    code = main(["bench", str(model), *TINY, *extra, "--output", str(output)])
    report = json.loads((output / "bench-streams.json").read_text())
    return code, report, (output / "bench-streams.md").read_text()


@pytest.fixture(scope="module")
def dynamic_run(random_model, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    """1 and 2 streams of a dynamic-batch model (exported at 320, run at 64×64), batched and unbatched, one
    call at a time (`performance: latency`: side by side, two cameras would run in two calls of one)."""
    model = random_model("detect", imgsz=320, dynamic=True)
    return _bench(model, tmp_path_factory.mktemp("streams"), "--streams", "2,1", "--performance", "latency")


def _config(report: dict[str, Any], streams: int, batching: str) -> dict[str, Any]:
    return next(c for c in report["configurations"] if c["streams"] == streams and c["batching"] == batching)


def test_every_stream_count_runs_batched_and_unbatched_in_its_own_process(dynamic_run) -> None:
    code, report, _ = dynamic_run
    assert code == 0
    assert [(c["streams"], c["batching"], c["batch_size"]) for c in report["configurations"]] == [
        (1, "batched", 0), (1, "unbatched", 1), (2, "batched", 0), (2, "unbatched", 1)]
    for config in report["configurations"]:
        summary = config["summary"]
        assert "error" not in summary, summary
        streams = config["streams"]
        assert summary["streams"] == streams and summary["frames"] == 6 * streams
        assert set(summary["cameras"]) == set(bench_streams.camera_names(streams))
        assert all(camera["frames"] > 0 for camera in summary["cameras"].values())
        assert sum(camera["frames"] for camera in summary["cameras"].values()) == summary["frames"]
        assert 0 < summary["stream_fps"]["min"] <= summary["stream_fps"]["mean"] <= summary["stream_fps"]["max"]
        assert summary["fps"] == pytest.approx(streams * summary["stream_fps"]["mean"], rel=0.01)
        frame = summary["latency_ms"]["frame"]
        assert 0 < frame["p50"] <= frame["p90"]
        assert summary["latency_ms"]["inference"]["p50"] > 0 and "age" not in summary["latency_ms"]  # files
        assert summary["peak_rss_mb"] > 20 and summary["startup"]["load_s"] > 0
        assert summary["info"]["input_shape"] == [64, 64] and summary["info"]["max_batch"] > 1
        assert 0 <= summary["other_cpu_percent"] <= 100
    assert _config(report, 2, "batched")["summary"]["mean_batch"] > 1, "a dynamic batch must batch two cameras"
    assert _config(report, 2, "unbatched")["summary"]["mean_batch"] == 1
    assert _config(report, 1, "batched")["summary"]["mean_batch"] == 1
    assert report["settings"]["streams"] == [1, 2] and "--streams 2,1" in report["command"]


def test_derived_figures_compare_with_one_stream_of_the_same_batching(dynamic_run) -> None:
    _, report, _ = dynamic_run
    for batching in bench_streams.BATCHINGS:
        one, two = _config(report, 1, batching), _config(report, 2, batching)
        assert one["derived"] == {"vs_one_stream": 1.0, "mib_per_extra_camera": None}
        assert two["derived"]["vs_one_stream"] == pytest.approx(two["summary"]["fps"] / one["summary"]["fps"],
                                                                abs=0.001)
        assert two["derived"]["mib_per_extra_camera"] == pytest.approx(
            two["summary"]["peak_rss_mb"] - one["summary"]["peak_rss_mb"], abs=0.1)
    assert {(c["streams"], c["check"]) for c in report["targets"]} == {
        (2, "aggregate FPS / one stream's"), (2, "peak RSS per extra camera (MiB)")}


def test_the_table_has_a_row_per_configuration(dynamic_run) -> None:
    _, report, table = dynamic_run
    label = _config(report, 1, "batched")["column"]
    for streams in (1, 2):
        for batching in ("batched", "unbatched"):
            summary = _config(report, streams, batching)["summary"]
            row = re.search(rf"^\| {re.escape(label)} \| 64×64 \| {streams} \| {batching} \| ({NUMBER}) \| .*$",
                            table, re.MULTILINE)
            assert row is not None, (streams, batching)
            assert float(row.group(1)) == pytest.approx(summary["fps"], abs=0.06)
            assert f"| {summary['mean_batch']:.2f} |" in row.group(0)
    assert re.search(rf"^\| {re.escape(label)} \| 64×64 \| 2 \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$", table,
                     re.MULTILINE), "the batched vs unbatched row of 2 streams"
    for heading in ("## Aggregate frames/s, batched vs unbatched", "## Per configuration",
                    "## Where a frame's time goes (p50 ms)", "## Targets"):
        assert heading in table


def test_a_fixed_batch_model_runs_unbatched_and_the_report_says_so(random_model, tmp_path: Path) -> None:
    model = random_model("detect", imgsz=320)
    code = main(["bench", str(model), "--streams", "2", "--sizes", "320", "--video-size", "64x64", "--frames", "2",
                 "--warmup", "1", "--device", "cpu", "--output", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "bench-streams.json").read_text())
    batched = _config(report, 2, "batched")["summary"]
    assert batched["info"]["max_batch"] == 1 and batched["mean_batch"] == 1
    assert _config(report, 2, "batched")["derived"] == {"vs_one_stream": None, "mib_per_extra_camera": None}
    assert "a fixed batch of 1" in (tmp_path / "bench-streams.md").read_text()


def test_a_live_source_reports_frame_age(random_model, tmp_path: Path) -> None:
    model = random_model("detect", imgsz=320, dynamic=True)
    with MjpegServer(fps=30, size=(64, 64)) as server:
        code, report, table = _bench(model, tmp_path, "--streams", "2", "--source", server.url)
    assert code == 0
    summary = _config(report, 2, "batched")["summary"]
    assert 0 <= summary["latency_ms"]["age"]["p50"] <= summary["latency_ms"]["age"]["p90"]
    assert report["settings"]["source"] == {"path": server.url}
    row = next(line for line in table.splitlines() if "| 2 | batched |" in line and "/" in line)
    assert row.split("|")[9].strip() == f"{summary['latency_ms']['age']['p90']:.1f}"


def _frame(camera: str, batch: int, inference: float = 10.0, age: float | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "frame", "camera": camera, "batch_size": batch, "gather_wait_ms": 1.0,
                               "latency_ms": {"preprocess": 2.0, "inference": inference, "postprocess": 3.0,
                                              "total": 5.0 + inference}}
    if age is not None:
        message["frame_age_ms"] = age
    return message


def test_the_collector_counts_batches_and_leaves_the_warm_up_out() -> None:
    encoded: list[dict[str, Any]] = []
    collector = StreamCollector(["a", "b"], warmup=1, frames=2, encode=encoded.append, spawned_at=0.0)
    collector.emit({"type": "status", "event": "model_loaded", "load_s": 0.25})
    for camera in ("a", "b"):  # the warm-up: one frame per camera
        collector.emit(_frame(camera, 2, inference=99.0))
    assert not collector.window and collector.batches == 0
    collector.emit(_frame("a", 1, age=4.0))  # a batch of one
    for camera in ("b", "a"):
        collector.emit(_frame(camera, 2, age=6.0))
    assert not collector.finished.is_set()
    collector.emit(_frame("b", 1, age=8.0))
    assert collector.finished.is_set()
    collector.emit(_frame("a", 1))  # after the window: left out
    summary = collector.summary()
    assert summary["frames"] == 4 and collector.batches == 3
    assert summary["mean_batch"] == pytest.approx(4 / 3, abs=1e-3)
    assert {name: c["frames"] for name, c in summary["cameras"].items()} == {"a": 2, "b": 2}
    assert summary["latency_ms"]["frame"]["p50"] == 16.0  # 2 + 10 + 3 + 1: the warm-up's 99 ms calls are out
    assert summary["latency_ms"]["inference"]["p90"] == 10.0
    assert summary["latency_ms"]["age"]["p50"] == 6.0
    assert collector.load_s == 0.25 and len(encoded) == 6  # every frame up to the window's end, as published


def test_an_error_message_ends_the_measurement_with_its_reason() -> None:
    collector = StreamCollector(["a"], warmup=1, frames=5, encode=None, spawned_at=0.0)
    collector.emit({"type": "error", "code": "source_open_failed", "message": "cannot open x"})
    with pytest.raises(RuntimeError, match="source_open_failed: cannot open x"):
        collector.wait(lambda timeout: False)
    stopped = StreamCollector(["a"], warmup=1, frames=5, encode=None, spawned_at=0.0)
    with pytest.raises(RuntimeError, match="controller stopped"):
        stopped.wait(lambda timeout: True)


def _result(streams: int, batching: str, fps: float, rss: float, device: str = "cpu",
            live: bool = False) -> dict[str, Any]:
    latency = {"frame": {"p50": 10.0}, **({"age": {"p50": 5.0}} if live else {})}
    return {"column": "m ONNX", "path": "m.onnx", "size": [320, 320], "threads": 0, "streams": streams,
            "batching": batching, "summary": {"fps": fps, "peak_rss_mb": rss, "info": {"device": device},
                                              "latency_ms": latency}}


def test_targets_hold_batched_rows_to_one_streams_figures() -> None:
    configs = [_result(1, "batched", 50.0, 150.0), _result(4, "batched", 46.0, 240.0),
               _result(1, "unbatched", 50.0, 150.0), _result(4, "unbatched", 40.0, 180.0)]
    bench_streams.derive(configs)
    assert configs[1]["derived"] == {"vs_one_stream": 0.92, "mib_per_extra_camera": 30.0}
    assert configs[3]["derived"] == {"vs_one_stream": 0.8, "mib_per_extra_camera": 10.0}
    checks = bench_streams.check_targets(configs)
    assert [(c["check"], c["value"], c["met"]) for c in checks] == [
        ("aggregate FPS / one stream's", 0.92, False), ("peak RSS per extra camera (MiB)", 30.0, False)]
    # One live stream runs at its camera's frame rate, so N live streams are not held to its FPS.
    live = [_result(1, "batched", 15.0, 150.0, live=True), _result(4, "batched", 44.0, 220.0, live=True)]
    bench_streams.derive(live)
    assert [c["check"] for c in bench_streams.check_targets(live)] == ["peak RSS per extra camera (MiB)"]


def test_on_a_gpu_eight_batched_streams_must_beat_unbatched_by_two_and_a_half() -> None:
    configs = [_result(8, "batched", 2600.0, 900.0, "cuda:0"), _result(8, "unbatched", 1000.0, 900.0, "cuda:0")]
    bench_streams.derive(configs)
    assert [(c["check"], c["value"], c["met"]) for c in bench_streams.check_targets(configs)] == [
        ("aggregate FPS batched / unbatched", 2.6, True)]


@pytest.mark.parametrize(("argv", "needle"), [
    (["--streams", "0"], "--streams"),
    (["--streams", "1,x"], "--streams"),
    (["--streams", "65"], "--streams"),
    (["--streams", "2", "--bare"], "--bare"),
    (["--streams", "2", "--compare-ultralytics"], "--compare-ultralytics"),
    (["--streams", "2", "--repeat", "3"], "--repeat"),
    (["--streams", "2", "--source", "missing.avi"], "--source"),
])
def test_bad_options_name_the_flag(argv: list[str], needle: str, tmp_path: Path, capsys) -> None:
    assert main(["bench", "yolov8n.yaml", *argv, "--output", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err
