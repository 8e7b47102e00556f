"""Model facts every backend reads the same way: Ultralytics export metadata (ONNX custom metadata,
TensorRT engine header, sidecar JSON), and, for models without it, the task and class names their
output shapes show."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any, Sequence, Union

import numpy as np

from .base import SUPPORTED_TASKS, ModelLoadError

__all__ = ["BOX_CHANNELS", "SUPPORTED_TASKS", "TASKS", "class_count", "classes_from_channels", "classes_from_output",
           "infer_task", "model_task", "numbered_names", "parse_metadata", "resolve_task"]

TASKS = ("detect", "segment", "classify", "pose", "obb")  # Ultralytics' tasks; SUPPORTED_TASKS are ours
BOX_CHANNELS = 4  # x, y, w, h rows before the class scores in a head output

# An output's shape as a runtime reports it: ints, or names/None for dynamic dimensions (ONNX).
Shape = Sequence[Union[int, str, None]]


def _literal(value: Any) -> Any:
    """Ultralytics writes ONNX metadata values with str(): python literals, not JSON."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value


def parse_metadata(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise metadata to {task, names: {int: str}, stride: int, imgsz: (h, w) | None}."""
    out: dict[str, Any] = {}
    task = raw.get("task")
    if isinstance(task, str) and task:
        out["task"] = task.strip().lower()
    names = _literal(raw.get("names"))
    if isinstance(names, Mapping):
        out["names"] = {int(k): str(v) for k, v in names.items()}
    elif isinstance(names, (list, tuple)):
        out["names"] = {i: str(v) for i, v in enumerate(names)}
    stride = _literal(raw.get("stride"))
    if isinstance(stride, (int, float)) and stride > 0:
        out["stride"] = int(stride)
    imgsz = _literal(raw.get("imgsz"))
    if isinstance(imgsz, int):
        out["imgsz"] = (imgsz, imgsz)
    elif isinstance(imgsz, (list, tuple)) and len(imgsz) == 2:
        out["imgsz"] = (int(imgsz[0]), int(imgsz[1]))
    for key in ("dynamic", "half", "batch"):
        if key in raw:
            out[key] = _literal(raw[key])
    return out


def infer_task(output_shapes: Sequence[Shape]) -> str:
    """Guess the task from output shapes when a model carries no metadata."""
    if len(output_shapes) >= 2 and len(output_shapes[1]) == 4:
        return "segment"
    if len(output_shapes[0]) == 2:
        return "classify"
    return "detect"


def resolve_task(path: str, model_task: str | None, wanted: str) -> str:
    """Pick the task: the model's own wins; a configured task that disagrees is an error."""
    if model_task and model_task not in SUPPORTED_TASKS:
        raise ModelLoadError(path, f"task {model_task!r} is not supported (supported: {', '.join(SUPPORTED_TASKS)})")
    if wanted != "auto" and model_task and wanted != model_task:
        raise ModelLoadError(path, f"the model is a {model_task!r} model but config key 'task' asks for {wanted!r}")
    return model_task or (wanted if wanted != "auto" else "detect")


def model_task(path: str, metadata_task: str | None, wanted: str, output_shapes: Sequence[Shape] | None) -> str:
    """The task to run: the model's metadata wins (a configured task must agree), then the configured
    one; with neither, the task its output shapes show (detect when there are none to read)."""
    task = resolve_task(path, metadata_task, wanted)
    if not metadata_task and wanted == "auto" and output_shapes is not None:
        return infer_task(output_shapes)
    return task


def classes_from_channels(channels: int, num_masks: int) -> int:
    """Classes in a YOLOv8-style head output of `channels` rows: 4 box rows, the class scores, then
    `num_masks` mask coefficients."""
    return channels - BOX_CHANNELS - num_masks


def classes_from_output(output: np.ndarray | Sequence[int], num_masks: int) -> int:
    """Classes in a head output (1, 4 + nc + nm, anchors), given as the array or its shape."""
    shape = output.shape if isinstance(output, np.ndarray) else output
    return classes_from_channels(int(shape[-2]), num_masks)


def class_count(output_shapes: Sequence[Shape], task: str) -> int | None:
    """How many classes a model's outputs hold; None when the dimension that says is dynamic (ONNX
    gives a dynamic dimension as a name)."""
    first = output_shapes[0]
    channels = first[-1] if task == "classify" else first[-2]
    if not isinstance(channels, int):
        return None
    if task == "classify":
        return channels
    masks = output_shapes[1][1] if task == "segment" and len(output_shapes) > 1 else 0
    return classes_from_channels(channels, masks if isinstance(masks, int) else 0)


def numbered_names(output_shapes: Sequence[Shape], task: str) -> dict[int, str]:
    """Class names "0".."nc-1" for a model without metadata ({} when its class count is not readable)."""
    return {i: str(i) for i in range(max(class_count(output_shapes, task) or 0, 0))}
