"""Every message the component publishes on `output_topic`, in one place.

Types: `frame` (one inferred frame), `frames` (a batch of frame messages), `state` (a state change
or command acknowledgement), `error` (a bad command, a model or source failure), `summary` (counts and
latency percentiles of the current run), `status` (source or connection events), and with events on
`event` (a tracked object appeared, changed or ended), `line_crossed` and `counts`. Every message has
`type`, `timestamp` (ISO-8601 UTC), and `thing` (the Greengrass thing name, when known).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np

from .backends import ModelInfo
from .codes import ErrorCode, StatusEvent
from .config import MAX_PAYLOAD_BYTES
from .processing import Classification, Detections
from .scene.events import ObjectEvent
from .scene.lines import Crossing

SCHEMA_VERSION = 1


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def utc_time(seconds: float) -> str:
    """time.time() seconds as ISO-8601 UTC, as `timestamp` is written."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _envelope(kind: str, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": kind, "schema": SCHEMA_VERSION, "timestamp": utc_now()}
    thing = os.environ.get("AWS_IOT_THING_NAME")
    if thing:
        message["thing"] = thing
    message.update(fields)
    return message


def model_block(info: ModelInfo) -> dict[str, Any]:
    return {"name": info.name, "format": info.format, "task": info.task,
            "input_size": list(info.input_shape), "runtime": info.runtime, "precision": info.precision,
            "concurrency": info.concurrency, "device": info.device}


def _r(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def detections_list(result: Detections, info: ModelInfo, track_ids: Mapping[int, int] | None = None
                    ) -> list[dict[str, Any]]:
    boxes = np.round(result.boxes.astype(np.float64), 1).tolist()
    scores = np.round(result.scores.astype(np.float64), 4).tolist()
    out = []
    for i, (box, score, class_id) in enumerate(zip(boxes, scores, result.class_ids.tolist())):
        item: dict[str, Any] = {"class_id": class_id, "label": info.label(class_id), "score": score, "box": box}
        if track_ids and i in track_ids:
            item["track_id"] = track_ids[i]
        if result.masks is not None:
            item["polygon"] = np.round(np.asarray(result.masks[i], np.float64), 1).tolist()
        out.append(item)
    return out


def classes_list(result: Classification, info: ModelInfo) -> list[dict[str, Any]]:
    return [{"class_id": c, "label": info.label(c), "score": round(s, 5)}
            for c, s in zip(result.class_ids.tolist(), result.scores.astype(np.float64).tolist())]


def frame_message(*, seq: int, info: ModelInfo, source: str, frame_shape: tuple[int, int],
                  result: Detections | Classification, preprocess_ms: float, inference_ms: float,
                  postprocess_ms: float, fps: float, frame_age_ms: float | None = None,
                  include_detections: bool = True, camera: str | None = None, batch_size: int = 1,
                  gather_wait_ms: float | None = None, track_ids: Mapping[int, int] | None = None
                  ) -> dict[str, Any]:
    """One inferred frame. A segmentation result whose detections are included must be finished
    (`Prediction.finish()` makes its polygons), so none is ever published unfinished."""
    if include_detections and isinstance(result, Detections) and not result.finished:
        raise ValueError("a frame message with detections needs the segmentation polygons made first "
                         "(Prediction.finish())")
    named = {"camera": camera} if camera is not None else {}
    message = _envelope(
        "frame", seq=seq, **named, source=source, frame_shape=list(frame_shape), model=model_block(info),
        latency_ms={"preprocess": _r(preprocess_ms), "inference": _r(inference_ms),
                    "postprocess": _r(postprocess_ms),
                    "total": _r(preprocess_ms + inference_ms + postprocess_ms)},
        fps=_r(fps, 2), batch_size=batch_size)
    if gather_wait_ms is not None:
        message["gather_wait_ms"] = _r(gather_wait_ms, 2)
    if frame_age_ms is not None:
        message["frame_age_ms"] = _r(frame_age_ms, 1)
    if isinstance(result, Classification):
        message["classes"] = classes_list(result, info) if include_detections else []
    else:
        message["detection_count"] = len(result)
        message["detections"] = detections_list(result, info, track_ids) if include_detections else []
    message["truncated"] = False
    return message


def frames_message(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Several frame messages in one publish (config `frames_per_message`)."""
    return _envelope("frames", count=len(frames), frames=frames)


def state_message(state: str, previous: str, reason: str, request_id: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    message = _envelope("state", state=state, previous=previous, reason=reason)
    if request_id is not None:
        message["request_id"] = request_id
    message.update(extra)
    return message


def error_message(code: ErrorCode, message: str, request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body = _envelope("error", code=ErrorCode(code).value, message=message)
    if request_id is not None:
        body["request_id"] = request_id
    body.update(extra)
    return body


def status_message(event: StatusEvent, message: str, **extra: Any) -> dict[str, Any]:
    return _envelope("status", event=StatusEvent(event).value, message=message, **extra)


def summary_message(*, state: str, info: ModelInfo | None, source: str, frames: int, published: int,
                    not_published: int, fps: float, latency: dict[str, dict[str, float]],
                    elapsed_s: float, final: bool, **extra: Any) -> dict[str, Any]:
    return _envelope("summary", state=state, final=final, model=model_block(info) if info else None,
                     source=source, frames=frames, frames_published=published,
                     frames_not_published=not_published, fps=_r(fps, 2), elapsed_s=_r(elapsed_s, 2),
                     latency_ms=latency, **extra)


EVENT_TYPES = ("event", "line_crossed", "counts")  # published on event_topic_out when it is set


def _box(box: tuple[float, float, float, float]) -> list[float]:
    return [round(float(v), 1) for v in box]


def event_message(camera: str, event: ObjectEvent, snapshot: str | None = None) -> dict[str, Any]:
    """A tracked object appeared (`new`), changed in a way worth telling (`update`, with `reasons`) or ended."""
    message = _envelope(
        "event", event=event.kind.value, camera=camera, track_id=event.track_id, label=event.label,
        class_id=event.class_id, score=_r(event.score, 4), top_score=_r(event.top_score, 4), box=_box(event.box),
        zones=list(event.zones), entered_zones=list(event.entered_zones),
        loitering_zones=list(event.loitering_zones), start_time=utc_time(event.start_time),
        end_time=None if event.end_time is None else utc_time(event.end_time))
    if event.reasons:
        message["reasons"] = [reason.value for reason in event.reasons]
    if event.zones_entered_now:
        message["zones_entered_now"] = list(event.zones_entered_now)
    if event.zones_left_now:
        message["zones_left_now"] = list(event.zones_left_now)
    if snapshot is not None:
        message["snapshot"] = snapshot
    return message


def line_crossed_message(camera: str, crossing: Crossing, label: str,
                         line_counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """A tracked object crossed a line; `counts` is that line's in/out per label so far."""
    return _envelope("line_crossed", camera=camera, line=crossing.line, track_id=crossing.track_id, label=label,
                     class_id=crossing.class_id, direction=crossing.direction.value, counts=line_counts)


def counts_message(camera: str, counts: dict[str, Any], since: float, final: bool) -> dict[str, Any]:
    """Per zone (objects in it now, entries) and per line (in/out), per label, since the run started."""
    return _envelope("counts", camera=camera, since=utc_time(since), final=final, **counts)


def encode(message: dict[str, Any], limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """JSON bytes under `limit`. Oversized frame messages drop detections from the end (lowest scores)
    and set `truncated: true` with the count kept; other messages must never be that large."""
    payload = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(payload) <= limit:
        return payload
    if message.get("type") == "frames":
        frames = message["frames"]
        return encode({**message, "frames": [_fit(f, limit // max(len(frames), 1)) for f in frames]}, limit)
    if message.get("type") == "frame":
        return json.dumps(_fit(message, limit), separators=(",", ":")).encode()
    raise ValueError(f"{message.get('type')} message is {len(payload)} bytes, over the {limit}-byte limit")


def _fit(frame: dict[str, Any], limit: int) -> dict[str, Any]:
    key = "classes" if "classes" in frame else "detections"
    items = frame.get(key, [])
    low, high = 0, len(items)
    trimmed = {**frame, "truncated": True}
    # Binary search for the most items that fit; items are sorted best score first.
    while low < high:
        mid = (low + high + 1) // 2
        trimmed[key] = items[:mid]
        if len(json.dumps(trimmed, separators=(",", ":")).encode()) <= limit:
            low = mid
        else:
            high = mid - 1
    trimmed[key] = items[:low]
    if len(items) > low:
        return trimmed
    return frame
