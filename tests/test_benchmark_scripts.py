"""Every script under benchmarks/ runs end to end in its --smoke mode and prints its table.

A script added to benchmarks/ without an entry in SMOKE_CHECKS fails test_every_script_has_a_smoke_test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
NUMBER = r"\d+(\.\d+)?"


@dataclass(frozen=True)
class SmokeCheck:
    """How to run one script's smoke mode and what its output must show."""

    interpreter: str  # "python" (this interpreter) or "bash"
    extra_args: tuple[str, ...]  # after --smoke; "{tmp}" stands for the test's temporary folder
    expected: tuple[str, ...]  # regular expressions, each searched in stdout


SMOKE_CHECKS = {
    "soak.py": SmokeCheck("python", (), (
        r"t \(s\)\s+RSS MiB\s+threads\s+frames\s+errors",
        rf"\n\s+0\s+{NUMBER}\s+\d+\s+\d+",  # the first sample row
        rf"RSS: start {NUMBER} MiB, after 6 s {NUMBER} MiB, end {NUMBER} MiB",
        r"broker restarts: [1-9]\d*; component reconnects: [1-9]",
        r"frames published: [1-9]\d*",
        r"exit after SIGTERM: code 0",
        r"\nPASS\n",
    )),
    "ort_threads.py": SmokeCheck("python", ("--output", "{tmp}"), (
        r"\| input H×W \| threads \| spinning \| pipeline ms \| serial ms \| bare ms \|",
        rf"\| 64×64 \| default \| on \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|",
        rf"\| 64×64 \| default \| off \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|",
    )),
    "int8_compare.py": SmokeCheck("python", (), (
        r"\| input \| model \| size MB \| run median ms \| run p90 ms \| run min ms \| FP32 boxes found",
        *(rf"\| 64x64 \| {variant} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER}%"
          for variant in ("fp32", "qdq-u8", "qop-u8", "dynamic")),
        rf"\| 64x64 \| fp32, input \+-1/255 noise \| {NUMBER} \| - \| - \| - \| {NUMBER}%",
    )),
    "openvino_performance.py": SmokeCheck("python", ("--output", "{tmp}"), (
        r"\| input H×W \| busy processes \| latency ms/frame \| throughput ms/frame \| requests \| throughput gain \|",
        rf"\| 64×64 \| 0 \| {NUMBER} \| {NUMBER} \| \d+ \| {NUMBER}× \|",
        rf"\| 64×64 \| 1 \| {NUMBER} \| {NUMBER} \| \d+ \| {NUMBER}× \|",
    )),
    "tracker_bench.py": SmokeCheck("python", (), (
        r"\| tracker \| objects \| frames \| p50 ms \| p99 ms \| max ms \| objects tracked \| id switches \|",
        rf"\| yolo-edge Tracker \| 10 \| 60 \| {NUMBER} \| {NUMBER} \| {NUMBER} \| 10 \| \d+ \|",
    )),
    "scene_bench.py": SmokeCheck("python", (), (
        r"\| step \| objects \| zones \| lines \| frames \| p50 ms \| p99 ms \| max ms \| events \| crossings \|",
        rf"\| tracking \+ zones \+ lines \+ events \| 10 \| 4 \| 2 \| 45 \| {NUMBER} \| {NUMBER} \| {NUMBER} \| "
        r"[1-9]\d* \| \d+ \|",
    )),
    # Without a GPU: the two target runs on the CPU; with one: every run on the GPU. Either way each
    # run's table, with a 64×64 row.
    "gpu.sh": SmokeCheck("bash", ("--output", "{tmp}"), (
        r"== (light-cpu|light-fp16)\n",
        r"\| input H×W \| yolov8n PyTorch \| yolov8n PyTorch · Ultralytics \|",
        rf"\| 64×64 \| {NUMBER} \| {NUMBER} \|",
        r"results in ",
    )),
}


def benchmark_scripts() -> set[str]:
    """The runnable files in benchmarks/ (results and the README are not scripts)."""
    return {path.name for path in BENCHMARKS.iterdir()
            if path.is_file() and (path.suffix in (".py", ".sh") or os.access(path, os.X_OK))}


def test_every_script_has_a_smoke_test():
    assert benchmark_scripts() == set(SMOKE_CHECKS), (
        "every script in benchmarks/ needs a --smoke mode and an entry in SMOKE_CHECKS")


def run_smoke(name: str, tmp_path: Path) -> subprocess.CompletedProcess:
    check = SMOKE_CHECKS[name]
    interpreter = sys.executable if check.interpreter == "python" else "bash"
    args = [arg.replace("{tmp}", str(tmp_path / "out")) for arg in check.extra_args]
    env = dict(os.environ, YOLO_OFFLINE="1")
    # This checkout's code, whatever the installed package points at.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "components"), str(REPO / "tools"),
                                                      env.get("PYTHONPATH")]))
    return subprocess.run([interpreter, str(BENCHMARKS / name), "--smoke", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.integration] if name == "soak.py" else [])
                                  for name in sorted(SMOKE_CHECKS)])
def test_smoke_mode_runs_and_prints_its_table(name, tmp_path):
    done = run_smoke(name, tmp_path)
    assert done.returncode == 0, (f"{name} --smoke exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    for pattern in SMOKE_CHECKS[name].expected:
        assert re.search(pattern, done.stdout), f"{name} --smoke printed no match for {pattern!r}:\n{done.stdout}"
