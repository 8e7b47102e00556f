"""Build YOLO models from Ultralytics' bundled architectures (random weights) and export them.

Used by `yolo-edge demo`, the export command and the tests: no weights are ever downloaded. A
random-weights model scores every class near 0.5 or near 0, so `boost_class_bias` shifts the class
head's biases to make it produce dozens of boxes per frame, which is what equivalence tests and
realistic post-processing timings need. Imports Ultralytics (and so torch) lazily.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

ARCHITECTURES = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "classify": "yolov8n-cls.yaml"}


def offline_guards() -> None:
    """Keep Ultralytics from reaching the network (downloads, update checks, telemetry)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("ULTRALYTICS_SYNC", "False")


def build_model(architecture: str = "yolov8n.yaml", seed: int = 0, class_bias: float | None = -1.0):
    """An Ultralytics YOLO object with random weights from a bundled architecture YAML.

    `class_bias` (detect/segment heads) sets every class-logit bias so that random features give
    scores spread around sigmoid(class_bias); None keeps Ultralytics' initialisation.
    """
    offline_guards()
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        yolo = YOLO(architecture)
    head = yolo.model.model[-1]
    if class_bias is not None and hasattr(head, "cv3"):
        with torch.no_grad():
            for branch in head.cv3:
                last = branch[-1]
                # End2end heads (v10/YOLO26) wrap the conv; plain v8 heads end in a Conv2d.
                conv = last if isinstance(last, torch.nn.Conv2d) else getattr(last, "conv", last)
                conv.bias.fill_(class_bias)
    yolo.model.eval()
    return yolo


def save_checkpoint(yolo, path: str | Path) -> Path:
    """Write an Ultralytics-loadable .pt checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    yolo.save(str(path))
    return path


def export_model(checkpoint: str | Path, fmt: str = "onnx", imgsz: int | tuple[int, int] = 640,
                 output: str | Path | None = None, **kwargs) -> Path:
    """Export a .pt checkpoint with Ultralytics (keeps its metadata); returns the written file."""
    offline_guards()
    from ultralytics import YOLO

    checkpoint = Path(checkpoint)
    size = list(imgsz) if isinstance(imgsz, tuple | list) else imgsz
    written = Path(YOLO(str(checkpoint)).export(format=fmt, imgsz=size, **kwargs))
    if output is not None and Path(output) != written:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written), str(output))
        written = Path(output)
    return written


def make_random_model(directory: str | Path, task: str = "detect", imgsz: int | tuple[int, int] = 640,
                      fmt: str = "onnx", seed: int = 0, class_bias: float | None = -1.0) -> Path:
    """Build, save and export a random-weights YOLOv8n for `task`; returns the exported file."""
    directory = Path(directory)
    stem = Path(ARCHITECTURES[task]).stem
    checkpoint = save_checkpoint(build_model(ARCHITECTURES[task], seed, class_bias), directory / f"{stem}.pt")
    if fmt == "pt":
        return checkpoint
    size = imgsz if isinstance(imgsz, int) else tuple(imgsz)
    suffix = f"{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"
    return export_model(checkpoint, fmt, size, directory / f"{stem}-{suffix}.{fmt}")
