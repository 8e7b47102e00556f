"""Ultralytics export metadata (ONNX custom metadata, TensorRT engine header, sidecar JSON)."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

TASKS = ("detect", "segment", "classify", "pose", "obb")
SUPPORTED_TASKS = ("detect", "segment", "classify")


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


def infer_task(output_shapes: list[tuple], num_classes: int | None) -> str:
    """Guess the task from output shapes when a model carries no metadata."""
    if len(output_shapes) >= 2 and len(output_shapes[1]) == 4:
        return "segment"
    if len(output_shapes[0]) == 2:
        return "classify"
    return "detect"


def resolve_task(path: str, model_task: str | None, wanted: str) -> str:
    """Pick the task: the model's own wins; a configured task that disagrees is an error."""
    from .base import ModelLoadError

    if model_task and model_task not in SUPPORTED_TASKS:
        raise ModelLoadError(path, f"task {model_task!r} is not supported (supported: {', '.join(SUPPORTED_TASKS)})")
    if wanted != "auto" and model_task and wanted != model_task:
        raise ModelLoadError(path, f"the model is a {model_task!r} model but config key 'task' asks for {wanted!r}")
    return model_task or (wanted if wanted != "auto" else "detect")
