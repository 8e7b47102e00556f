"""`yolo-edge bench`: a real run on a tiny configuration, and its bad-input errors."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from yolo_edge.backends import choose_runtime
from yolo_edge.cli import main
from yolo_edge_tools import bench, bench_report, bench_worker

STAGES = ("preprocess", "inference", "postprocess", "total", "message", "frame")


@pytest.fixture(scope="module")
def bench_run(random_model, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    model = random_model("detect", imgsz=320)
    output = tmp_path_factory.mktemp("bench")
    code = main(["bench", str(model), "--sizes", "320", "--frames", "8", "--warmup", "2", "--bare",
                 "--compare-ultralytics", "--device", "cpu", "--output", str(output)])
    return code, output


def _config(report: dict, mode: str) -> dict:
    return next(c for c in report["configurations"] if c["mode"] == mode)


def test_bench_writes_table_json_and_chart(bench_run) -> None:
    code, output = bench_run
    assert code == 0
    report = json.loads((output / "bench.json").read_text())
    assert [c["mode"] for c in report["configurations"]] == ["pipeline", "bare", "ultralytics"]
    for config in report["configurations"]:
        summary = config["summary"]
        assert "error" not in summary, summary
        assert summary["frames"] == 8 and summary["runs"] == 1
        assert summary["fps"] > 0 and summary["frame_ms"] > 0
        assert 0 < summary["first_result_s"] < 120
        assert summary["peak_rss_mb"] > 20
        assert summary["fps"] == pytest.approx(1000 / summary["frame_ms"], rel=0.01)
        assert 0 <= summary["other_cpu_percent"] <= 100
        for stats in summary["latency_ms"].values():
            assert 0 <= stats["p50"] <= stats["p90"] <= stats["p99"]
    ours = _config(report, "pipeline")["summary"]
    assert set(ours["latency_ms"]) == set(STAGES)
    for stage in ("preprocess", "inference", "postprocess", "total", "frame"):
        assert ours["latency_ms"][stage]["p50"] > 0, stage
    assert ours["latency_ms"]["total"]["p50"] >= ours["latency_ms"]["inference"]["p50"]
    assert ours["info"]["format"] == "onnx" and ours["info"]["input_shape"] == [320, 320]
    ultralytics = _config(report, "ultralytics")["summary"]
    assert {"preprocess", "inference", "postprocess", "total"} <= set(ultralytics["latency_ms"])
    assert ultralytics["detections_per_frame"] > 0 and ours["detections_per_frame"] > 0
    # Each configuration has its own process: the ONNX-only worker stays far below this test process
    # (which holds torch) and below Ultralytics' worker, which imports torch too.
    assert ours["peak_rss_mb"] < ultralytics["peak_rss_mb"]
    assert ours["startup"]["load_s"] > 0
    env = report["environment"]
    assert env["cpu"] and env["cpu_count"] >= 1 and "onnxruntime" in env["libraries"]
    assert report["settings"]["source"]["generated"] is True
    assert {check["check"] for check in report["targets"]} >= {
        "end-to-end frame time / bare session.run (same threads)", "end-to-end FPS vs Ultralytics' predictor",
        "peak RSS / Ultralytics' process", "process start to first result (s)"}

    table = (output / "bench.md").read_text()
    label = Path(_config(report, "pipeline")["path"]).stem
    assert f"| input H×W | {label} ONNX | {label} ONNX · bare | {label} ONNX · Ultralytics |" in table
    row = next(line for line in table.splitlines() if line.startswith("| 320×320 |"))
    assert float(row.split("|")[2]) == pytest.approx(ours["latency_ms"]["total"]["p50"], abs=0.01)
    assert "## Details" in table and "## Targets" in table

    png = (output / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_worker_percentiles_match_numpy() -> None:
    values = list(np.random.default_rng(1).gamma(2.0, 10.0, 501))
    stats = bench_worker.percentiles(values)
    expected = np.percentile(values, (50, 90, 99))
    assert [stats["p50"], stats["p90"], stats["p99"]] == pytest.approx(expected, abs=1e-3)


def test_repeats_report_medians() -> None:
    def run(fps: float) -> dict:
        return {"fps": fps, "frame_ms": 1000 / fps, "first_result_s": 0.5, "peak_rss_mb": 100.0,
                "cpu_ms_per_frame": 10.0, "detections_per_frame": 3.0, "frames": 10,
                "startup": {"imports_s": 0.1, "load_s": 0.2},
                "latency_ms": {"total": {"p50": 1000 / fps, "p90": 2000 / fps, "p99": 3000 / fps}}}

    summary = bench.median_summary([run(10.0), {"error": "boom"}, run(30.0), run(20.0)])
    assert summary["fps"] == 20.0 and summary["runs"] == 3 and summary["failed_runs"] == 1
    assert summary["latency_ms"]["total"]["p50"] == 50.0
    assert bench.median_summary([{"error": "boom"}]) == {"error": "boom"}


def test_quiet_reruns_noisy_runs_and_keeps_the_quietest(monkeypatch, tmp_path: Path) -> None:
    noise = iter([60.0, 40.0, 50.0, 5.0])
    waits: list[float] = []
    monkeypatch.setattr(bench, "wait_for_quiet", lambda limit, max_wait: waits.append(limit))
    monkeypatch.setattr(bench, "run_worker", lambda *args, **kwargs: {"other_cpu_percent": next(noise)})
    job = bench.Job(bench.ModelFile("m", tmp_path / "m.onnx", "onnx"), (320, 320), "pipeline", 0)
    kept = bench.run_quietly(job, {}, tmp_path, 1, 60, quiet=10, quiet_wait=1)
    assert kept == {"other_cpu_percent": 40.0, "attempts": 3} and waits == [10, 10, 10]
    assert bench.run_quietly(job, {}, tmp_path, 2, 60, quiet=10, quiet_wait=1) == {"other_cpu_percent": 5.0}
    assert bench.others_cpu_percent(0.05) is not None


@pytest.mark.parametrize(("argv", "needle"), [
    (["--sizes", "300"], "--sizes"),
    (["--sizes", "640x"], "--sizes"),
    (["--threads", "two"], "--threads"),
    (["--modes", "fast"], "--modes"),
    (["--frames", "0"], "--frames"),
    (["--formats", "tflite"], "--formats"),
    (["--runtimes", "tvm"], "--runtimes"),
    (["--runtimes", "onnxruntime,openvin"], "--runtimes"),
    (["--ultralytics-openvino-precision", "bf16"], "--ultralytics-openvino-precision"),
    (["--precision", "fp64"], "--precision"),
])
def test_bad_options_name_the_flag(argv: list[str], needle: str, tmp_path: Path, capsys) -> None:
    assert main(["bench", "yolov8n.yaml", *argv, "--output", str(tmp_path)]) == 2
    assert needle in capsys.readouterr().err


def test_unknown_model_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"x")
    assert main(["bench", str(model), "--output", str(tmp_path)]) == 2
    assert "model.tflite" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.onnx"), "--output", str(tmp_path)]) == 2
    assert "file not found" in capsys.readouterr().err


def _target_configs(device: str, fmt: str, ours_fps: float, gpu_path: dict | None = None) -> list[dict]:
    def config(mode: str, fps: float, info: dict | None) -> dict:
        summary = {"fps": fps, "frame_ms": 1000 / fps, "first_result_s": 0.5, "peak_rss_mb": 100.0}
        if info is not None:
            summary["info"] = info
        if gpu_path is not None and mode == "pipeline":
            summary["device_frames"] = gpu_path
        return {"column": f"yolov8n {fmt}", "mode": mode, "path": "m", "size": [640, 640], "threads": 0,
                "summary": summary}

    return [config("pipeline", ours_fps, {"format": fmt, "device": device}),
            config("ultralytics", 100.0, None)]


@pytest.mark.parametrize(("device", "fmt", "ours_fps", "target", "met"), [
    ("cpu", "onnx", 101.0, ">= 1.0x", True),
    ("cpu", "pytorch", 150.0, ">= 1.0x", True),
    ("cuda:0", "pytorch", 250.0, ">= 3.0x", False),  # the GPU frame path must triple Ultralytics' FPS
    ("cuda:0", "pytorch", 310.0, ">= 3.0x", True),
    ("cuda:0", "onnx", 150.0, ">= 1.0x", True),
])
def test_fps_target_is_three_times_ultralytics_for_pytorch_on_a_gpu(device, fmt, ours_fps, target, met) -> None:
    from yolo_edge_tools import bench_report

    fps_check = next(c for c in bench_report.check_targets(_target_configs(device, fmt, ours_fps))
                     if c["check"].startswith("end-to-end FPS"))
    assert fps_check["target"] == target and fps_check["met"] is met


def test_gpu_path_details_reach_the_summary_and_the_report() -> None:
    from yolo_edge_tools import bench_report

    run = {"fps": 300.0, "frame_ms": 3.3, "first_result_s": 2.0, "peak_rss_mb": 900.0, "frames": 10,
           "startup": {"imports_s": 1.0, "load_s": 1.0}, "latency_ms": {"total": {"p50": 3.0, "p90": 3.5, "p99": 4.0}},
           "device_frames": {"cuda_graphs": True, "graph_failures": 0, "decode": "device"}}
    summary = bench.median_summary([run, run])
    assert summary["device_frames"] == run["device_frames"]
    configs = _target_configs("cuda:0", "pytorch", 300.0, run["device_frames"])
    assert bench_report.gpu_path_notes(configs) == [
        "- yolov8n pytorch 640×640: CUDA graphs on, 0 capture failure(s), decoding on the device"]


def test_bad_runtimes_message_lists_the_allowed_runtimes(tmp_path: Path, capsys) -> None:
    assert main(["bench", "yolov8n.yaml", "--runtimes", "onnxruntime,gpu", "--output", str(tmp_path)]) == 2
    assert ("config key '--runtimes': invalid value 'onnxruntime,gpu'; allowed: a comma-separated list of "
            "auto, onnxruntime, openvino") in capsys.readouterr().err


# --- runtimes and Ultralytics' own OpenVINO export (real 64x64 runs) -------------------------------------

RUNTIME_ARGS = ["--sizes", "64", "--frames", "3", "--warmup", "1", "--class-bias", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def runtimes_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    pytest.importorskip("openvino")
    output = tmp_path_factory.mktemp("bench-runtimes")
    code = main(["bench", "yolov8n.yaml", *RUNTIME_ARGS, "--runtimes", "onnxruntime,openvino,auto", "--bare",
                 "--compare-ultralytics", "--ultralytics-openvino-precision", "default,f32", "--output", str(output)])
    return code, json.loads((output / "bench.json").read_text()), (output / "bench.md").read_text()


def _openvino_default_precision() -> str:
    import openvino as ov

    return str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name())


def test_one_row_per_runtime_each_naming_the_runtime_it_ran_on(runtimes_run) -> None:
    code, report, _ = runtimes_run
    assert code == 0
    configs = report["configurations"]
    assert [(c["mode"], c["runtime"], c["format"], c["openvino_precision"]) for c in configs] == [
        ("pipeline", "onnxruntime", "onnx", None), ("bare", "onnxruntime", "onnx", None),
        ("pipeline", "openvino", "onnx", None), ("bare", "openvino", "onnx", None),
        ("pipeline", "auto", "onnx", None), ("bare", "auto", "onnx", None),
        ("ultralytics", None, "onnx", None),
        ("ultralytics", None, "openvino", "default"), ("ultralytics", None, "openvino", "f32")]
    auto_picks = choose_runtime("auto", "cpu", True, platform.machine())[0]
    expected = {"onnxruntime": "onnxruntime ", "openvino": "openvino ", "auto": f"{auto_picks} "}
    for config in configs[:6]:
        summary = config["summary"]
        assert "error" not in summary, summary
        assert summary["frames"] == 3
        assert summary["info"]["runtime"].startswith(expected[config["runtime"]]), (config["runtime"], summary)
        assert summary["info"]["format"] == "onnx" and summary["info"]["input_shape"] == [64, 64]
    openvino_bare = next(c for c in configs if c["mode"] == "bare" and c["runtime"] == "openvino")
    concurrency = openvino_bare["summary"]["info"]["concurrency"]
    assert openvino_bare["summary"]["bare_call"] == (
        "backend.infer" if concurrency == 1 else f"backend.start ({concurrency} frames at once)")
    assert next(c for c in configs if c["mode"] == "bare")["summary"]["bare_call"] == "session.run"
    assert report["settings"]["runtimes"] == ["onnxruntime", "openvino", "auto"]


def test_ultralytics_runs_its_own_openvino_export_at_the_precision_it_reports(runtimes_run) -> None:
    _, report, table = runtimes_run
    onnx_path = report["configurations"][0]["path"]
    ultralytics_onnx, ov_default, ov_f32 = report["configurations"][6:]
    assert ultralytics_onnx["path"] == onnx_path
    assert "onnxruntime" in ultralytics_onnx["summary"]["info"]["runtime"]
    assert ov_default["path"] == ov_f32["path"] and ov_default["path"].endswith("yolov8n-64x64_openvino_model")
    assert Path(ov_default["path"], "metadata.yaml").is_file()
    assert Path(ov_default["path"]).parent == Path(onnx_path).parent  # cached beside the .onnx export
    for config, precision in ((ov_default, _openvino_default_precision()), (ov_f32, "f32")):
        summary = config["summary"]
        assert "error" not in summary, summary
        assert summary["frames"] == 3
        assert summary["info"]["runtime"].startswith("ultralytics ") and " · openvino " in summary["info"]["runtime"]
        assert summary["info"]["precision"] == precision
    columns = ("yolov8n ONNX · onnxruntime", "yolov8n ONNX · openvino · bare", "yolov8n ONNX · auto",
               "yolov8n ONNX · Ultralytics", "yolov8n OpenVINO IR · Ultralytics · default",
               "yolov8n OpenVINO IR · Ultralytics · f32")
    header = next(line for line in table.splitlines() if line.startswith("| input H×W |"))
    assert all(f" {column} |" in header for column in columns), header
    assert f"· {_openvino_default_precision()} |" in table and "openvino" in table and "(asked: auto)" in table
    peer_checks = [c for c in report["targets"] if "Ultralytics' OpenVINO export" in c["check"]]
    assert sorted((c["column"], c["check"]) for c in peer_checks) == sorted(
        (column, f"end-to-end FPS vs Ultralytics' OpenVINO export (ours f32, theirs {theirs})")
        for column in ("yolov8n ONNX · openvino", "yolov8n ONNX · auto")
        for theirs in (bench_report._short_precision(_openvino_default_precision()), "f32"))


def test_our_rows_run_on_the_ultralytics_openvino_folder_itself(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    code = main(["bench", "yolov8n.yaml", *RUNTIME_ARGS, "--formats", "openvino", "--runtimes", "onnxruntime",
                 "--bare", "--compare-ultralytics", "--output", str(tmp_path)])
    assert code == 0
    configs = json.loads((tmp_path / "bench.json").read_text())["configurations"]
    assert [(c["mode"], c["runtime"], c["openvino_precision"]) for c in configs] == [
        ("pipeline", None, None), ("bare", None, None), ("ultralytics", None, "default")]
    assert len({c["path"] for c in configs}) == 1 and configs[0]["path"].endswith("_openvino_model")
    for config in configs:
        assert "error" not in config["summary"], config["summary"]
    assert configs[0]["summary"]["info"]["format"] == "openvino"
    assert configs[0]["summary"]["info"]["runtime"].startswith("openvino ")
    assert [c["column"] for c in configs] == ["yolov8n OpenVINO IR", "yolov8n OpenVINO IR · bare",
                                              "yolov8n OpenVINO IR · Ultralytics"]


def test_the_report_names_the_command_that_makes_it_again() -> None:
    import argparse
    import shlex

    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    given = ["bench", "yolov8n.yaml", "--sizes", "640,480x640", "--frames", "100", "--warmup", "10", "--class-bias",
             "none", "--repeat", "2", "--runtimes", "auto", "--performance", "latency", "--precision", "fp32",
             "--ultralytics-openvino-precision", "default,f32", "--quiet", "10", "--device", "cpu", "--bare",
             "--compare-ultralytics"]
    args = parser.parse_args(given)
    rebuilt = shlex.split(bench.command_line(args))
    assert rebuilt[:2] == ["yolo-edge", "bench"]
    assert parser.parse_args(rebuilt[1:]) == args  # every option given comes back, with its value
