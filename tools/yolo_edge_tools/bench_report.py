"""What `yolo-edge bench` writes: the environment, Markdown tables, target checks, JSON and a chart."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

LIBRARIES = ("numpy", "opencv-python", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "openvino",
             "torch", "torchvision", "ultralytics", "tensorrt", "matplotlib", "yolo-edge")
STAGES = ("preprocess", "inference", "postprocess", "total")
STAGE_COLORS = {"preprocess": "#4c72b0", "inference": "#dd8452", "postprocess": "#55a868"}
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")
# The targets a CPU ONNX run is held to (see benchmarks/README.md).
FRAME_VS_BARE_MAX = 1.05
RSS_VS_ULTRALYTICS_MAX = 0.4
FIRST_RESULT_MAX_S = 1.0
# PyTorch on a CUDA GPU (the GPU frame path) must beat Ultralytics' predictor on the same .pt by this much.
GPU_FPS_VS_ULTRALYTICS_MIN = 3.0
# Ours on OpenVINO (what runtime auto picks on x86) vs Ultralytics' predictor on the same .onnx (issue 14),
# and vs Ultralytics' predictor on its own OpenVINO export of the same weights.
OPENVINO_FPS_VS_ULTRALYTICS_ONNX_MIN = 1.5
FPS_VS_ULTRALYTICS_OPENVINO_MIN = 1.0


def environment() -> dict[str, Any]:
    """The machine and library versions, for the report's header and JSON."""
    env: dict[str, Any] = {
        "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(), "machine": platform.machine(), "os": platform.platform(),
        "python": platform.python_version(), "gpu": _gpu(), "libraries": _libraries(),
        "loadavg": [round(v, 2) for v in os.getloadavg()]}
    board = _read("/proc/device-tree/model")
    if board:
        env["board"] = board.strip("\x00 \n")
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    return env


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _gpu() -> str | None:
    tegra = _read("/etc/nv_tegra_release").splitlines()
    if tegra:
        return f"NVIDIA Jetson ({tegra[0].lstrip('# ').strip()})"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip()) or None
    return None


def _libraries() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if importlib.util.find_spec("cv2"):
        import cv2

        versions["cv2"] = cv2.__version__
    return versions


def size_label(size: list[int] | tuple[int, int]) -> str:
    """H×W as the README's tables write it (bench.size_slug is the ASCII one for file names)."""
    return f"{size[0]}×{size[1]}"


def _ok(config: dict[str, Any]) -> bool:
    return "error" not in config["summary"]


def check_targets(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every pipeline row: frame time vs bare at the same threads, FPS and memory vs Ultralytics
    on the same file and size, and start-up; each check only where its reference was measured."""
    checks: list[dict[str, Any]] = []
    for ours in (c for c in configs if c["mode"] == "pipeline" and _ok(c)):
        same = [c for c in configs if c["path"] == ours["path"] and c["size"] == ours["size"] and _ok(c)]
        bare = next((c for c in same if c["mode"] == "bare" and c["threads"] == ours["threads"]
                     and c.get("runtime") == ours.get("runtime")), None)
        ultra = next((c for c in same if c["mode"] == "ultralytics"), None)
        s = ours["summary"]
        base = {"column": ours["column"], "size": ours["size"], "threads": ours["threads"]}
        if bare is not None and bare["summary"].get("frame_ms"):
            ratio = s["frame_ms"] / bare["summary"]["frame_ms"]
            checks.append({**base, "check": "end-to-end frame time / bare session.run (same threads)",
                           "target": f"<= {FRAME_VS_BARE_MAX}x", "ours": s["frame_ms"],
                           "reference": bare["summary"]["frame_ms"], "value": round(ratio, 3),
                           "met": ratio <= FRAME_VS_BARE_MAX})
        if ultra is not None and ultra["summary"].get("fps") and ultra["summary"].get("peak_rss_mb"):
            u = ultra["summary"]
            minimum = GPU_FPS_VS_ULTRALYTICS_MIN if _pytorch_on_gpu(ours) else \
                OPENVINO_FPS_VS_ULTRALYTICS_ONNX_MIN if _on_openvino(ours) and ours["format"] == "onnx" else 1.0
            ratio = s["fps"] / u["fps"]
            checks.append({**base, "check": "end-to-end FPS vs Ultralytics' predictor", "target": f">= {minimum}x",
                           "ours": s["fps"], "reference": u["fps"], "value": round(ratio, 3),
                           "met": ratio >= minimum})
            ratio = s["peak_rss_mb"] / u["peak_rss_mb"]
            checks.append({**base, "check": "peak RSS / Ultralytics' process",
                           "target": f"<= {RSS_VS_ULTRALYTICS_MAX}x",
                           "ours": s["peak_rss_mb"], "reference": u["peak_rss_mb"], "value": round(ratio, 3),
                           "met": ratio <= RSS_VS_ULTRALYTICS_MAX})
        checks.extend(_openvino_peer_checks(ours, configs, base))
        checks.append({**base, "check": "process start to first result (s)", "target": f"< {FIRST_RESULT_MAX_S} s",
                       "ours": s["first_result_s"], "reference": None, "value": s["first_result_s"],
                       "met": s["first_result_s"] < FIRST_RESULT_MAX_S})
    return checks


def _on_openvino(config: dict[str, Any]) -> bool:
    return str((config["summary"].get("info") or {}).get("runtime", "")).startswith("openvino")


def precision_of(config: dict[str, Any]) -> str:
    """A row's precision: the worker's (ModelInfo or Ultralytics' compiled model), else what our
    OpenVINO runtime text names ("openvino 2026.4.1 (CPU, f32)"), else '?'."""
    info = config["summary"].get("info") or {}
    if info.get("precision"):
        return _short_precision(str(info["precision"]))
    runtime = str(info.get("runtime", ""))
    if runtime.endswith(")") and ", " in runtime:
        return _short_precision(runtime.rsplit(", ", 1)[1].rstrip(")"))
    return "?"


def _short_precision(text: str) -> str:
    """<Type: 'bfloat16'> / bfloat16 / BF16 -> bf16; f32, float32 -> f32."""
    lowered = text.lower()
    for long, short in (("bfloat16", "bf16"), ("float32", "f32"), ("float16", "f16"), ("bf16", "bf16"),
                        ("fp32", "f32"), ("f32", "f32"), ("fp16", "f16"), ("f16", "f16"), ("int8", "int8"),
                        ("i8", "int8")):
        if long in lowered:
            return short
    return text


def _openvino_peer_checks(ours: dict[str, Any], configs: list[dict[str, Any]], base: dict[str, Any]
                          ) -> list[dict[str, Any]]:
    """Ours on OpenVINO vs Ultralytics' predictor on its own OpenVINO export of the same weights and size,
    one check per Ultralytics precision measured; the check names both precisions."""
    if not _on_openvino(ours):
        return []
    checks = []
    for peer in (c for c in configs if c["mode"] == "ultralytics" and c["format"] == "openvino" and _ok(c)
                 and c["model"] == ours["model"] and c["size"] == ours["size"] and c["summary"].get("fps")):
        ratio = ours["summary"]["fps"] / peer["summary"]["fps"]
        checks.append({**base, "check": f"end-to-end FPS vs Ultralytics' OpenVINO export (ours "
                                        f"{precision_of(ours)}, theirs {precision_of(peer)})",
                       "target": f">= {FPS_VS_ULTRALYTICS_OPENVINO_MIN}x", "ours": ours["summary"]["fps"],
                       "reference": peer["summary"]["fps"], "value": round(ratio, 3),
                       "met": ratio >= FPS_VS_ULTRALYTICS_OPENVINO_MIN})
    return checks


def _pytorch_on_gpu(config: dict[str, Any]) -> bool:
    info = config["summary"].get("info") or {}
    return info.get("format") == "pytorch" and str(info.get("device", "")).startswith("cuda")


def gpu_path_notes(configs: list[dict[str, Any]]) -> list[str]:
    """One line per row that ran the PyTorch GPU frame path: CUDA graphs, capture failures, where it decoded."""
    notes = []
    for config in configs:
        path = config["summary"].get("device_frames")
        if path:
            notes.append(f"- {config['column']} {size_label(config['size'])}: CUDA graphs "
                         f"{'on' if path['cuda_graphs'] else 'off'}, {path['graph_failures']} capture failure(s), "
                         f"decoding on the {path['decode']}")
    return notes


def _sizes(configs: list[dict[str, Any]]) -> list[list[int]]:
    sizes: list[list[int]] = []
    for config in configs:
        if config["size"] not in sizes:
            sizes.append(config["size"])
    return sizes


def _columns(configs: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(c["column"] for c in configs))


def _grid(configs: list[dict[str, Any]], value) -> list[str]:
    """A table shaped like the sample's: rows = input size, columns = model × format × runner."""
    columns = _columns(configs)
    lines = ["| input H×W | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for size in _sizes(configs):
        cells = []
        for column in columns:
            config = next((c for c in configs if c["column"] == column and c["size"] == size), None)
            cells.append("" if config is None else "error" if not _ok(config) else value(config["summary"]))
        lines.append(f"| {size_label(size)} | " + " | ".join(cells) + " |")
    return lines


def summary_table(report: dict[str, Any]) -> str:
    return "\n".join(_grid(report["configurations"], lambda s: f"{s['latency_ms']['total']['p50']:.2f}"))


def _triple(stats: dict[str, float] | None) -> str:
    if not stats:
        return "–"
    return f"{stats['p50']:.1f} / {stats['p90']:.1f} / {stats['p99']:.1f}"


def detailed_table(configs: list[dict[str, Any]]) -> list[str]:
    lines = ["| model | runner | runtime (precision) | threads | input H×W | preprocess | inference | postprocess | "
             "total | "
             "message p50 | frame ms | FPS | first result s | peak RSS MB | CPU ms/frame | dets/frame | runs | "
             "others' CPU % |",
             "|---|---|---|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for config in configs:
        threads = "–" if config["threads"] is None else str(config["threads"] or "default")
        s = config["summary"]
        head = (f"| {config['model']} {config['format']} | {config['runner']} | {runtime_cell(config)} | "
                f"{threads} | {size_label(config['size'])} |")
        if not _ok(config):
            lines.append(head + f" error: {s['error']} |" + " |" * 12)
            continue
        latency = s["latency_ms"]
        stages = " | ".join(_triple(latency.get(stage)) for stage in STAGES)
        message = f"{latency['message']['p50']:.2f}" if "message" in latency else "–"
        lines.append(f"{head} {stages} | {message} | {s['frame_ms']:.1f} | {s['fps']:.2f} | "
                     f"{s['first_result_s']:.2f} | {s['peak_rss_mb']:.0f} | {s['cpu_ms_per_frame']:.0f} | "
                     f"{s['detections_per_frame']:.0f} | {s['runs']} | {_number(s.get('other_cpu_percent'))} |")
    return lines


def runtime_cell(config: dict[str, Any]) -> str:
    """What ran the row, its precision and how many frames it ran side by side where more than one:
    "openvino 2026.4.1 (CPU, f32) · 2 frames at once (asked: auto)", "ultralytics 8.4.190 · openvino
    2026.4.1 (CPU) · bf16"."""
    info = config["summary"].get("info") or {}
    if not info.get("runtime"):
        return "–"
    text = str(info["runtime"])
    precision = precision_of(config)
    if precision != "?" and precision not in text:
        text += f" · {precision}"
    concurrency = int(info.get("concurrency") or 1)
    if concurrency > 1:
        text += f" · {concurrency} frames at once"
    asked = config.get("runtime")
    return f"{text} (asked: {asked})" if asked == "auto" else text


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def targets_table(checks: list[dict[str, Any]]) -> list[str]:
    lines = ["| configuration | input H×W | check | target | ours | reference | ratio / value | met |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for c in checks:
        reference = "–" if c["reference"] is None else f"{c['reference']:g}"
        lines.append(f"| {c['column']} | {size_label(c['size'])} | {c['check']} | {c['target']} | {c['ours']:g} | "
                     f"{reference} | {c['value']:g} | {'yes' if c['met'] else '**no**'} |")
    return lines


def machine_line(env: dict[str, Any]) -> str:
    libs = env.get("libraries", {})
    wanted = ("onnxruntime", "onnxruntime-gpu", "torch", "ultralytics", "tensorrt", "numpy", "cv2")
    versions = ", ".join(f"{name} {libs[name]}" for name in wanted if name in libs)
    gpu = env.get("gpu") or "no GPU"
    board = f"{env['board']}, " if env.get("board") else ""
    return (f"{board}{env['cpu']}, {env['cpus_usable']} usable CPU cores, {env.get('memory_gib')} GiB, {gpu}; "
            f"{env['os']}; Python {env['python']}; {versions}")


def markdown(report: dict[str, Any]) -> str:
    configs = report["configurations"]
    settings = report["settings"]
    source_text = describe_source(settings["source"])
    lines = [f"# yolo-edge bench — {report['created']}", "",
             f"Machine: {machine_line(report['environment'])}.", "",
             f"Command: `{report['command']}`", "",
             f"Each configuration ran in its own process: {settings['warmup']} warm-up frames (left out), then "
             f"{settings['frames']} measured frames from {source_text}; "
             f"{settings['repeat']} run(s) each, interleaved, medians reported. The yolo-edge rows are the "
             "component's own path (frame feeder thread + predictor"
             f"{', + building and encoding the frame message' if settings['messages'] else ''}). "
             "*bare* rows: the runtime's bare call (ONNX Runtime session.run; backend.infer for OpenVINO and "
             "other formats) on one frame preprocessed as the pipeline does it (the same tensor shape), with the "
             "same thread settings and runtime. *Ultralytics* "
             "rows: `YOLO(model).predict(source=video, stream=True, imgsz=...)` on the same file and video, its "
             "own `Results.speed` per stage; *OpenVINO IR · Ultralytics* rows run Ultralytics' own OpenVINO "
             "export of the same weights. The details table names the runtime and precision each row ran on.",
             ""]
    lines += random_weights_lines(configs, settings)
    lines += ["## Total latency per frame, ms (p50 of preprocess + inference + postprocess)", "",
              *_grid(configs, lambda s: f"{s['latency_ms']['total']['p50']:.2f}"), "",
              "## End-to-end time per frame, ms (1000 / FPS over the measured frames)", "",
              *_grid(configs, lambda s: f"{s['frame_ms']:.2f}"), "",
              "## Details", "",
              "Stage columns are p50 / p90 / p99 ms. *frame ms* is wall time per frame end to end; with the "
              "feeder thread, preprocessing overlaps inference, so it can be less than *total*. *first result* "
              "is from process start (interpreter, imports, model load) to the first frame's result. "
              "*CPU ms/frame* is the process' CPU time (all threads) per measured frame. *others' CPU %* is the "
              "CPU other processes used meanwhile, in % of all cores: how noisy the machine was.", "",
              *detailed_table(configs), ""]
    if gpu_path_notes(configs):
        lines += ["## GPU frame path", "", *gpu_path_notes(configs), ""]
    if report.get("targets"):
        lines += ["## Targets", "", *targets_table(report["targets"]), ""]
    notes = [f"- {c['column']} {size_label(c['size'])}: {c['summary'].get('error') or c['summary'].get('note')}"
             for c in configs if "error" in c["summary"] or c["summary"].get("note")]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def describe_source(source: dict[str, Any]) -> str:
    """The report's words for the video read: generated (its size and length) or a file."""
    if source.get("generated"):
        return f"a generated {source['size'][0]}×{source['size'][1]} MJPG video of {source['frames']} frames"
    return f"`{source['path']}`"


def random_weights_lines(configs: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """The paragraph (and blank line) that says which models have random weights, or none."""
    if not any(c["random_weights"] for c in configs):
        return []
    return ["Models named by architecture (`.yaml`) were built with **random weights** and exported at each "
            f"size: their timings are real, their boxes are not. {_head_note(settings.get('class_bias'))}", ""]


def _head_note(class_bias: float | None) -> str:
    if class_bias is None:
        return ("The class head keeps Ultralytics' initialisation (`--class-bias none`): a few boxes per frame, "
                "so postprocessing is light, as with a trained model on an ordinary scene.")
    score = 1 / (1 + math.exp(-class_bias))
    if score > 0.25:
        return (f"The class head's bias is {class_bias:g} (`--class-bias`): every anchor scores about {score:.2f}, "
                "above the 0.25 threshold, so NMS sees every anchor and keeps max_det boxes: the heaviest "
                "postprocessing possible, far above a trained model's.")
    return f"The class head's bias is {class_bias:g} (`--class-bias`): anchors score about {score:.2f}."


def chart(report: dict[str, Any], path: Path) -> Path | None:
    """Latency by input size, stacked by stage, one bar per model × format × runner; None without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.patches import Patch

    configs = [c for c in report["configurations"] if _ok(c)]
    if not configs:
        return None
    models = list(dict.fromkeys(c["model"] for c in configs))
    sizes = _sizes(configs)
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [c for c in configs if c["model"] == model]
        columns = _columns(rows)
        width = 0.8 / len(columns)
        for i, column in enumerate(columns):
            for j, size in enumerate(sizes):
                config = next((c for c in rows if c["column"] == column and c["size"] == size), None)
                if config is None:
                    continue
                x = j - 0.4 + width * (i + 0.5)
                bottom = 0.0
                latency = config["summary"]["latency_ms"]
                for stage, color in STAGE_COLORS.items():
                    value = latency.get(stage, {}).get("p50", 0.0)
                    ax.bar(x, value, width, bottom=bottom, color=color, hatch=HATCHES[i % len(HATCHES)],
                           edgecolor="black", linewidth=0.5)
                    bottom += value
                ax.plot([x - width / 2, x + width / 2], [config["summary"]["frame_ms"]] * 2, color="black",
                        linewidth=1.5)
        ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
        ax.set_xlabel("input H×W")
        ax.set_ylabel("ms per frame (p50)")
        ax.set_title(model)
        ax.grid(axis="y", alpha=0.3)
        handles: list[Artist] = [Patch(facecolor=color, label=stage) for stage, color in STAGE_COLORS.items()]
        handles += [Patch(facecolor="white", edgecolor="black", hatch=HATCHES[i % len(HATCHES)],
                          label=column.replace(f"{model} ", "", 1)) for i, column in enumerate(columns)]
        handles.append(plt.Line2D([], [], color="black", label="end-to-end ms/frame"))
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3,
                  frameon=False)
    fig.suptitle(f"yolo-edge bench: {report['environment']['cpu']}, {report['environment']['cpus_usable']} cores",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_all(report: dict[str, Any], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    json_path = folder / "bench.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    written.append(json_path)
    md_path = folder / "bench.md"
    md_path.write_text(markdown(report))
    written.append(md_path)
    png = chart(report, folder / "bench.png")
    if png is None:
        print("note: no chart (install matplotlib: pip install 'yolo-edge[bench]')")
    else:
        written.append(png)
    return written
