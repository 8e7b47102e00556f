"""benchmarks/gpu.sh: its options, its refusal without a GPU, and the bench runs it asks for (with
stub `python3` and `yolo-edge` executables first on PATH, since no GPU exists here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"


def run(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False,
                          timeout=60)


def stub_path(tmp_path: Path, cuda: bool, bench_status: int = 0) -> tuple[str, Path]:
    """A PATH whose python3 answers the CUDA check (and prints a GPU name) and whose yolo-edge logs
    the environment switches and arguments of every call, then exits with `bench_status`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "python3").write_text(f"#!/bin/sh\necho GPU: stub\nexit {0 if cuda else 1}\n")
    (bin_dir / "yolo-edge").write_text(
        f'#!/bin/sh\necho "graph=${{YOLO_EDGE_CUDA_GRAPH:-}} decode=${{YOLO_EDGE_DEVICE_DECODE:-}} $*" >> {log}\n'
        f"exit {bench_status}\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin", log


def test_help_and_bad_options():
    done = run("--help")
    assert done.returncode == 0 and "Usage: benchmarks/gpu.sh" in done.stdout
    assert run("--no-such-flag").returncode == 2
    bad = run("--frames", "many")
    assert bad.returncode == 2 and "--frames must be a positive whole number, got 'many'" in bad.stderr


def test_refuses_without_a_gpu(tmp_path):
    path, log = stub_path(tmp_path, cuda=False)
    done = run(path=path)
    assert done.returncode == 1 and "torch sees no CUDA GPU here" in done.stderr
    assert not log.exists()


def test_runs_the_target_and_the_ablations(tmp_path):
    path, log = stub_path(tmp_path, cuda=True)
    done = run("--frames", "50", "--output", str(tmp_path / "out"), path=path)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 6
    common = "bench yolov8n.yaml --formats pt --sizes 640 --device cuda --frames 50 --warmup 30"
    assert all(common in call for call in calls)
    assert calls[0].startswith("graph= decode= ") and "--half --class-bias none --compare-ultralytics" in calls[0]
    assert calls[0].endswith(f"--output {tmp_path}/out/light-fp16")
    assert "--half --compare-ultralytics" in calls[1] and "--class-bias" not in calls[1]
    assert "--half" not in calls[2] and calls[2].endswith("light-fp32")
    assert calls[3].startswith("graph=0 ") and calls[3].endswith("light-fp16-no-graph")
    assert calls[4].startswith("graph= decode=host") and calls[5].startswith("graph= decode=device")
    quick = run("--quick", "--output", str(tmp_path / "q"), path=path)
    assert quick.returncode == 0 and len(log.read_text().splitlines()) == 8


def test_smoke_with_a_gpu_runs_everything_small(tmp_path):
    path, log = stub_path(tmp_path, cuda=True)
    done = run("--smoke", "--output", str(tmp_path / "out"), path=path)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 6
    assert all("bench yolov8n.yaml --formats pt --sizes 64 --device cuda --frames 5 --warmup 2" in call
               for call in calls)
    assert "--half --class-bias none --compare-ultralytics" in calls[0]
    assert calls[3].startswith("graph=0 ") and calls[5].startswith("graph= decode=device")


def test_smoke_without_a_gpu_runs_the_target_on_the_cpu(tmp_path):
    path, log = stub_path(tmp_path, cuda=False)
    done = run("--smoke", "--frames", "3", path=path)
    assert done.returncode == 0, done.stderr
    assert "torch sees no CUDA GPU here: --smoke runs the target's bench calls on the CPU" in done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2
    common = "bench yolov8n.yaml --formats pt --sizes 64 --device cpu --frames 3 --warmup 2"
    assert all(common in call and "--half" not in call and "cuda" not in call for call in calls)
    assert "--class-bias none --compare-ultralytics" in calls[0] and calls[0].endswith("/light-cpu")
    assert "--class-bias" not in calls[1] and calls[1].endswith("/heavy-cpu")
    assert "CPU only: no GPU figures" in done.stdout


def test_a_failed_bench_run_stops_with_status_3(tmp_path):
    path, log = stub_path(tmp_path, cuda=True, bench_status=1)
    done = run("--output", str(tmp_path / "out"), path=path)
    assert done.returncode == 3 and "the bench run 'light-fp16' failed" in done.stderr
    assert len(log.read_text().splitlines()) == 1
