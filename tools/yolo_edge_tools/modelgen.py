"""Build YOLO models from Ultralytics' bundled architectures (random weights) and export them.

Used by `yolo-edge demo`, the export command and the tests: no weights are ever downloaded.

Straight from its architecture a YOLO network's activations shrink layer after layer until every
output is the same whatever the image (scores differ by ~1e-7), which makes detections meaningless
and comparisons between runtimes fragile. So the batch-norm statistics are first calibrated on real
images (Ultralytics' packaged bus.jpg and zidane.jpg): each layer then sees unit-variance inputs and
the outputs depend on the image, like a trained model's do. `class_bias` then sets how many boxes
pass the usual thresholds (-3: hundreds of candidates and up to max_det boxes on bus.jpg).
Imports Ultralytics (and so torch) lazily.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import BaseModel

ARCHITECTURES = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "classify": "yolov8n-cls.yaml"}


def offline_guards() -> None:
    """Keep Ultralytics from reaching the network (downloads, update checks, telemetry)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("ULTRALYTICS_SYNC", "False")


def _calibration_batch(size: int = 320) -> torch.Tensor:
    """Real images (letterboxed, plus mirrored copies) as a float tensor batch."""
    import cv2
    import numpy as np
    import torch

    from yolo_edge.processing import letterbox

    from .samples import packaged_images

    images = [im for im in (cv2.imread(str(p)) for p in packaged_images()) if im is not None]
    if not images:  # no packaged images: smooth random scenes still calibrate the statistics
        rng = np.random.default_rng(0)
        images = [cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), np.uint8), (0, 0), 8) for _ in range(2)]
    images += [im[:, ::-1] for im in images]
    boxed = [letterbox(np.ascontiguousarray(im), (size, size))[0][..., ::-1] for im in images]
    return torch.from_numpy(np.stack(boxed).transpose(0, 3, 1, 2).copy()).float() / 255


def calibrate_batchnorm(model: torch.nn.Module, batch: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of `batch` (one forward in train mode)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics exactly
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()


def build_model(architecture: str = "yolov8n.yaml", seed: int = 0, class_bias: float | None = -3.0,
                calibrate: bool = True) -> YOLO:
    """An Ultralytics YOLO object with random weights from a bundled architecture YAML.

    `calibrate` sets batch-norm statistics from real images so outputs depend on the image;
    `class_bias` (detect/segment heads) then sets every class-logit bias; None keeps Ultralytics'
    initialisation (which detects nothing).
    """
    offline_guards()
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        yolo = YOLO(architecture)
    network = _network(yolo)
    if calibrate:
        calibrate_batchnorm(network, _calibration_batch())
    layers: Any = network.model  # an nn.Sequential: torch types a submodule reached by name as Tensor | Module
    head = layers[-1]
    if class_bias is not None and hasattr(head, "cv3"):
        with torch.no_grad():
            for branch in head.cv3:
                last = branch[-1]
                # End2end heads (v10/YOLO26) wrap the conv; plain v8 heads end in a Conv2d.
                conv = last if isinstance(last, torch.nn.Conv2d) else getattr(last, "conv", last)
                if conv.bias is None:
                    raise ValueError(f"{architecture}: a class branch ends in a convolution without a bias")
                conv.bias.fill_(class_bias)
    network.eval()
    return yolo


def _network(yolo: YOLO) -> BaseModel:
    """The network of a YOLO built from an architecture (Ultralytics types `YOLO.model` as a path or None)."""
    from ultralytics.nn.tasks import BaseModel

    network: object = yolo.model
    if not isinstance(network, BaseModel):
        raise TypeError(f"expected a built YOLO network, got {type(network).__name__}")
    return network


def save_checkpoint(yolo: YOLO, path: str | Path) -> Path:
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
    size = list(imgsz) if isinstance(imgsz, (tuple, list)) else imgsz
    written = Path(YOLO(str(checkpoint)).export(format=fmt, imgsz=size, **kwargs))
    if output is not None and Path(output) != written:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written), str(output))
        written = Path(output)
    return written


def make_random_model(directory: str | Path, task: str = "detect", imgsz: int | tuple[int, int] = 640,
                      fmt: str = "onnx", seed: int = 0, class_bias: float | None = -3.0,
                      dynamic: bool = False) -> Path:
    """Build, save and export a random-weights YOLOv8n for `task`; returns the exported file.

    `dynamic` exports with a symbolic batch, height and width (Ultralytics' dynamic=True): the model
    takes batches of any size and other input sizes; `imgsz` is then the size it records as exported.
    """
    if dynamic and fmt == "pt":
        raise ValueError("dynamic applies to an export; a .pt checkpoint takes any batch and size anyway")
    directory = Path(directory)
    stem = Path(ARCHITECTURES[task]).stem
    checkpoint = save_checkpoint(build_model(ARCHITECTURES[task], seed, class_bias), directory / f"{stem}.pt")
    if fmt == "pt":
        return checkpoint
    size = imgsz if isinstance(imgsz, int) else (imgsz[0], imgsz[1])
    suffix = f"{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"
    if dynamic:
        return export_model(checkpoint, fmt, size, directory / f"{stem}-{suffix}-dynamic.{fmt}", dynamic=True)
    return export_model(checkpoint, fmt, size, directory / f"{stem}-{suffix}.{fmt}")
