"""The component's one configuration object.

Keys keep the public sample's names (`event_topic`, `output_topic`, `camera_id`, `model_loc`,
`MODEL_HEIGHT`, `MODEL_WIDTH`) so its users can migrate. Greengrass stores numbers as strings (and
sometimes hands back floats), so every numeric or boolean field accepts both.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from .config_values import (
    ConfigError,
    _as_bool,
    _as_number,
    _as_str,
    _as_topic,
    _non_empty,
    _ranged,
    as_short_name,
    decoded_json,
    reject_unknown_keys,
)
from .scene.filters import DetectionFilter
from .scene.lines import LineSpec, parse_lines
from .scene.tracking import TrackerSettings
from .scene.zones import ZoneSpec, parse_zones
from .snapshots import SnapshotSettings

TASKS = ("auto", "detect", "segment", "classify")
RUNTIMES = ("auto", "onnxruntime", "openvino", "tensorrt")  # as yolo_edge.backends.RUNTIMES (no backend import)
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # as yolo_edge.backends.base.PRECISIONS
PERFORMANCES = ("auto", "latency", "throughput")  # as yolo_edge.backends.base.PERFORMANCES
MAX_PAYLOAD_BYTES = 128 * 1024  # AWS IoT Core's message size limit
MIN_MESSAGE_BYTES = 1024  # room for a state, error or summary message


def _as_input_size(key: str, value: Any) -> int:
    size = _ranged(int, 32, 4096)(key, value)
    if size % 32:
        raise ConfigError(key, value, "a multiple of 32 (the YOLO stride) from 32 to 4096")
    return int(size)


def _as_device(key: str, value: Any) -> str:
    device = _as_str(key, value).lower()
    if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ConfigError(key, value, "'auto', 'cpu', 'cuda' or 'cuda:N'")


def _one_of(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    """A parser for a key whose value is one of `choices`, matched case-insensitively."""
    def parse(key: str, value: Any) -> str:
        text = _as_str(key, value).lower()
        if text not in choices:
            raise ConfigError(key, value, " | ".join(choices))
        return text

    return parse


_as_model_loc = _non_empty("a path to a .pt, .onnx, .engine or .trt model file")
_as_source = _non_empty("a camera index, a video file, an image folder or a stream URL")


def _as_message_bytes(key: str, value: Any) -> int:
    size = int(_as_number(key, value, int))
    if size != 0 and not MIN_MESSAGE_BYTES <= size <= MAX_PAYLOAD_BYTES:
        raise ConfigError(key, value, f"0 (the transport's own limit) or a number of bytes from "
                                      f"{MIN_MESSAGE_BYTES} to {MAX_PAYLOAD_BYTES}")
    return size


DEFAULT_CAMERA = "default"  # the one camera `camera_id` names when `cameras` is empty
MAX_CAMERAS = 64
MAX_BATCH_SIZE = 64
CAMERA_KEYS = ("source", "loop_source", "max_fps", "filters", "zones", "lines")


class PublishFrames(Enum):
    """Which inferred frames get a `frame` message (config `publish_frames`)."""

    ALL = "all"
    DETECTIONS = "detections"  # only frames with at least one detection (after the filters)
    NONE = "none"


@dataclass(frozen=True)
class CameraSpec:
    """One camera of `cameras`: a short name, a source (anything `camera_id` accepts) and its overrides.
    `filters`, `zones` and `lines` of None take the component's own (top-level) keys."""

    name: str
    source: str
    loop_source: bool | None = None  # None: the component's `loop_source`
    max_fps: float = 0.0  # frames taken from the source per second at most; 0 = as fast as it delivers
    filters: DetectionFilter | None = None
    zones: tuple[ZoneSpec, ...] | None = None
    lines: tuple[LineSpec, ...] | None = None

    def to_mapping(self) -> dict[str, Any]:
        values: dict[str, Any] = {"source": self.source}
        if self.loop_source is not None:
            values["loop_source"] = self.loop_source
        if self.max_fps:
            values["max_fps"] = self.max_fps
        for key in ("filters", "zones", "lines"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return values

    @property
    def reading(self) -> tuple[str, bool | None, float]:
        """What decides how the source is read: a change here reopens it; a scene change does not."""
        return self.source, self.loop_source, self.max_fps


def _as_camera_name(key: str, name: Any) -> str:
    return as_short_name(key, name, "camera names")


def _as_camera(name: str, value: Any) -> CameraSpec:
    key = f"cameras.{name}"
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return CameraSpec(name, _as_source(key, value))
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "a source (as camera_id takes) or an object with 'source' and optional "
                                      "'loop_source', 'max_fps'")
    reject_unknown_keys(key, value, CAMERA_KEYS)
    if "source" not in value:
        raise ConfigError(f"{key}.source", None, "a camera index, a video file, an image folder or a stream URL")
    loop = value.get("loop_source")
    filters = value.get("filters")
    zones = value.get("zones")
    lines = value.get("lines")
    return CameraSpec(name, _as_source(f"{key}.source", value["source"]),
                      None if loop is None else _as_bool(f"{key}.loop_source", loop),
                      float(_ranged(float, 0.0, 1000.0)(f"{key}.max_fps", value.get("max_fps", 0.0))),
                      None if filters is None else _as_filters(f"{key}.filters", filters),
                      None if zones is None else _as_zones(f"{key}.zones", zones),
                      None if lines is None else _as_lines(f"{key}.lines", lines))


def _as_cameras(key: str, value: Any) -> tuple[CameraSpec, ...]:
    # Text from --set cameras='{...}', or a deployment that stored it as text.
    value = decoded_json(key, value, "a JSON object of camera name -> source")
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "an object of camera name -> source, e.g. {\"dock-1\": \"rtsp://...\"}")
    if len(value) > MAX_CAMERAS:
        raise ConfigError(key, f"{len(value)} cameras", f"at most {MAX_CAMERAS} cameras")
    return tuple(_as_camera(_as_camera_name(key, name), spec) for name, spec in value.items())


def _as_object(key: str, value: Any, example: str) -> Any:
    """A configuration object: a mapping, or its JSON text (as `--set` and recipes hold it); "" = {}."""
    decoded = decoded_json(key, value, f"a JSON object, e.g. {example}")
    return {} if decoded is None else decoded


def _as_filters(key: str, value: Any) -> DetectionFilter:
    if isinstance(value, DetectionFilter):
        return value
    return DetectionFilter.from_mapping(key, _as_object(key, value, '{"classes": ["person"], "min_score": 0.5}'))


def _as_zones(key: str, value: Any) -> tuple[ZoneSpec, ...]:
    if isinstance(value, tuple) and all(isinstance(item, ZoneSpec) for item in value):
        return value
    return parse_zones(key, _as_object(key, value, '{"press": {"points": [[0, 0], [0.5, 0], [0.5, 1]]}}'))


def _as_lines(key: str, value: Any) -> tuple[LineSpec, ...]:
    if isinstance(value, tuple) and all(isinstance(item, LineSpec) for item in value):
        return value
    return parse_lines(key, _as_object(key, value, '{"door": {"points": [[0.5, 0], [0.5, 1]]}}'))


def _as_tracking(key: str, value: Any) -> TrackerSettings:
    if isinstance(value, TrackerSettings):
        return value
    return TrackerSettings.from_mapping(key, _as_object(key, value, '{"track_buffer": 30}'))


def _as_snapshots(key: str, value: Any) -> SnapshotSettings:
    if isinstance(value, SnapshotSettings):
        return value
    return SnapshotSettings.from_mapping(key, _as_object(key, value, '{"events": ["new", "end"]}'))


def _as_publish_frames(key: str, value: Any) -> PublishFrames:
    if isinstance(value, PublishFrames):
        return value
    text = _as_str(key, value).lower()
    try:
        return PublishFrames(text)
    except ValueError:
        raise ConfigError(key, value, " | ".join(mode.value for mode in PublishFrames)) from None


def _as_optional_topic(key: str, value: Any) -> str:
    return _as_topic(key, value) if _as_str(key, value) else ""


def _as_batch_size(key: str, value: Any) -> int:
    return int(_ranged(int, 0, MAX_BATCH_SIZE)(key, value))


def _key(name: str, parse: Callable[[str, Any], Any], doc: str) -> dict[str, Any]:
    return {"key": name, "parse": parse, "doc": doc}


@dataclass(frozen=True)
class Config:
    """Validated configuration. Build it with `Config.from_mapping`; field metadata documents each key."""

    event_topic: str = field(default="inference/input", metadata=_key(
        "event_topic", _as_topic, "MQTT topic the component listens on for start/pause/stop commands"))
    output_topic: str = field(default="inference/output", metadata=_key(
        "output_topic", _as_topic, "MQTT topic for frame, state, error and summary messages"))
    camera_id: str = field(default="0", metadata=_key(
        "camera_id", _as_source, "camera index (\"0\"), video file, image folder, or rtsp/http(s) URL"))
    model_loc: str = field(default="models/yolov8n.onnx", metadata=_key(
        "model_loc", _as_model_loc, "model file: .onnx, .pt, .engine or .trt; relative paths are taken "
        "from the working directory"))
    model_height: int = field(default=640, metadata=_key(
        "MODEL_HEIGHT", _as_input_size, "model input height in pixels (multiple of 32); a fixed-shape "
        "model's own size wins"))
    model_width: int = field(default=640, metadata=_key(
        "MODEL_WIDTH", _as_input_size, "model input width in pixels (multiple of 32)"))
    conf_threshold: float = field(default=0.25, metadata=_key(
        "conf_threshold", _ranged(float, 0.0, 1.0), "minimum detection score, 0..1"))
    iou_threshold: float = field(default=0.7, metadata=_key(
        "iou_threshold", _ranged(float, 0.0, 1.0), "IoU above which NMS suppresses a box of the same class"))
    max_det: int = field(default=300, metadata=_key(
        "max_det", _ranged(int, 1, 1000), "most detections kept per frame"))
    task: str = field(default="auto", metadata=_key(
        "task", _one_of(TASKS), "expected task; 'auto' takes it from the model metadata, anything else must match"))
    device: str = field(default="auto", metadata=_key(
        "device", _as_device, "'auto' (GPU when present), 'cpu', 'cuda' or 'cuda:N'"))
    runtime: str = field(default="auto", metadata=_key(
        "runtime", _one_of(RUNTIMES), "what runs an .onnx model: 'auto' (ONNX Runtime's GPU providers on an "
        "NVIDIA GPU, else OpenVINO when installed on an x86_64 CPU, else ONNX Runtime), 'onnxruntime', 'openvino' or "
        "'tensorrt' (ONNX Runtime's TensorRT provider)"))
    precision: str = field(default="auto", metadata=_key(
        "precision", _one_of(PRECISIONS), "what the model computes in: 'auto' (fp32, or the precision an .onnx/"
        "engine was exported in), 'fp32', 'fp16', 'bf16' (OpenVINO) or 'int8' (a quantized model); a "
        "runtime that cannot run it refuses to load"))
    performance: str = field(default="auto", metadata=_key(
        "performance", _one_of(PERFORMANCES), "'latency' (one frame at a time on all cores), 'throughput' (several "
        "frames side by side, each on a share of the cores: as fast on an idle CPU, faster when other processes "
        "use it, each result later) or 'auto' (throughput where the runtime can: OpenVINO; else latency); other "
        "runtimes refuse 'throughput'"))
    half: bool = field(default=False, metadata=_key(
        "half", _as_bool, "FP16 inference where the backend supports it (PyTorch on CUDA)"))
    max_publish_rate: float = field(default=20.0, metadata=_key(
        "max_publish_rate", _ranged(float, 0.0, 1000.0), "most frame messages published per second; "
        "0 = no cap. Frames not published still count in FPS and summaries"))
    max_message_bytes: int = field(default=0, metadata=_key(
        "max_message_bytes", _as_message_bytes, "largest message published, in bytes; frame messages over it "
        "drop their lowest-scoring detections. 0 = the transport's limit (IoT Core's 128 KB; about 7 KB "
        "under Greengrass nucleus lite)"))
    frames_per_message: int = field(default=1, metadata=_key(
        "frames_per_message", _ranged(int, 1, 100), "frames batched into one published message"))
    summary_interval_s: float = field(default=10.0, metadata=_key(
        "summary_interval_s", _ranged(float, 0.0, 86400.0), "seconds between summary messages while "
        "running; 0 = only at stop"))
    loop_source: bool = field(default=False, metadata=_key(
        "loop_source", _as_bool, "restart a video file or image folder at its end instead of going idle"))
    publish_detections: bool = field(default=True, metadata=_key(
        "publish_detections", _as_bool, "include the detections list in frame messages"))
    threads: int = field(default=0, metadata=_key(
        "threads", _ranged(int, 0, 256), "CPU threads for the runtime; 0 = runtime default"))
    cameras: tuple[CameraSpec, ...] = field(default=(), metadata=_key(
        "cameras", _as_cameras, "camera name -> source (or {source, loop_source, max_fps}); empty: the one "
        "camera camera_id names, called 'default'"))
    batch_size: int = field(default=0, metadata=_key(
        "batch_size", _as_batch_size, "frames inferred in one call, at most; 0 = one per running camera, "
        "capped by what the model takes; 1 = no batching"))
    batch_timeout_ms: float = field(default=0.0, metadata=_key(
        "batch_timeout_ms", _ranged(float, 0.0, 1000.0), "how long a batch waits for more cameras' frames "
        "after its first; 0 = one frame interval of the fastest camera"))
    publish_frames: PublishFrames = field(default=PublishFrames.ALL, metadata=_key(
        "publish_frames", _as_publish_frames, "which frames get a frame message: 'all', 'detections' (frames "
        "with at least one detection) or 'none'"))
    publish_events: bool = field(default=False, metadata=_key(
        "publish_events", _as_bool, "track objects and publish event, line_crossed and counts messages"))
    event_topic_out: str = field(default="", metadata=_key(
        "event_topic_out", _as_optional_topic, "MQTT topic for event, line_crossed and counts messages; "
        "empty = output_topic"))
    counts_interval_s: float = field(default=60.0, metadata=_key(
        "counts_interval_s", _ranged(float, 0.0, 86400.0), "a counts message when the counts changed, at "
        "most this often (seconds), and at the end of a run; 0 = only at the end"))
    tracking: TrackerSettings = field(default=TrackerSettings(), metadata=_key(
        "tracking", _as_tracking, "tracker settings: track_buffer, high_threshold, low_threshold, "
        "new_track_threshold, match_iou, min_hits"))
    filters: DetectionFilter = field(default=DetectionFilter(), metadata=_key(
        "filters", _as_filters, "detections kept, for every camera without filters of its own: classes, "
        "min_score, min_area, max_area"))
    zones: tuple[ZoneSpec, ...] = field(default=(), metadata=_key(
        "zones", _as_zones, "zone name -> polygon (and inertia, loitering_s, classes, ...), for every "
        "camera without zones of its own"))
    lines: tuple[LineSpec, ...] = field(default=(), metadata=_key(
        "lines", _as_lines, "line name -> two points (and in, min_distance, classes, ...), for every camera "
        "without lines of its own"))
    snapshots: SnapshotSettings = field(default=SnapshotSettings(), metadata=_key(
        "snapshots", _as_snapshots, "JPEG snapshots of object events: events, crop, folder, max_files, "
        "max_mb, jpeg_quality, s3_bucket, s3_prefix, stream_name"))

    @classmethod
    def keys(cls) -> dict[str, dataclasses.Field]:
        """Public key name -> dataclass field."""
        return {f.metadata["key"]: f for f in fields(cls)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Config | None = None) -> Config:
        """Validate `values` (public key names) over `base` (defaults when None).

        Unknown keys raise, except `accessControl` and other Greengrass-owned keys, which are ignored.
        """
        if not isinstance(values, Mapping):
            raise ConfigError("<root>", values, "an object of configuration keys")
        known = cls.keys()
        lowered = {name.lower(): name for name in known}
        parsed: dict[str, Any] = {}
        for raw_key, value in values.items():
            if raw_key in IGNORED_KEYS:
                continue
            name = raw_key if raw_key in known else lowered.get(str(raw_key).lower())
            if name is None:
                raise ConfigError(raw_key, value, "one of " + ", ".join(sorted(known)))
            spec = known[name]
            parsed[spec.name] = spec.metadata["parse"](name, value)
        return dataclasses.replace(base or cls(), **parsed)

    def to_mapping(self) -> dict[str, Any]:
        """Public key name -> value, as a recipe's DefaultConfiguration holds it."""
        values = {f.metadata["key"]: getattr(self, f.name) for f in fields(self)}
        values["cameras"] = {camera.name: camera.to_mapping() for camera in self.cameras}
        values["publish_frames"] = self.publish_frames.value
        for key in OBJECT_KEYS:
            if values[key] in ((), getattr(Config(), key)):
                values[key] = {}  # the default
        return values

    def camera_specs(self) -> dict[str, CameraSpec]:
        """Every camera by name, each with its `loop_source` resolved: `cameras`, or when that is empty
        the one camera `camera_id` names (called DEFAULT_CAMERA)."""
        cameras = self.cameras or (CameraSpec(DEFAULT_CAMERA, self.camera_id),)
        return {camera.name: self._resolved(camera) for camera in cameras}

    def _resolved(self, camera: CameraSpec) -> CameraSpec:
        """`camera` with the component's own loop_source, filters, zones and lines where it has none."""
        return dataclasses.replace(
            camera, loop_source=self.loop_source if camera.loop_source is None else camera.loop_source,
            filters=self.filters if camera.filters is None else camera.filters,
            zones=self.zones if camera.zones is None else camera.zones,
            lines=self.lines if camera.lines is None else camera.lines)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) asked for by the configuration."""
        return self.model_height, self.model_width


# Keys whose values are objects: "" (text, as recipes hold them) means the default.
OBJECT_KEYS = ("tracking", "filters", "zones", "lines", "snapshots")
# Greengrass-owned keys, and recipe keys used only by the Install step (install_extras).
IGNORED_KEYS = frozenset({"accessControl", "install_extras"})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML file of configuration keys. Accepts a recipe-style wrapper too."""
    import yaml  # only config files need it: keeps it off the component's start-up path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--config", str(path), f"a readable JSON or YAML file ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError("--config", str(path), f"valid JSON or YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", str(path), "a mapping of configuration keys")
    keys: dict[str, Any] = data
    # Allow pasting the recipe's ComponentConfiguration.DefaultConfiguration block as it is.
    for wrapper in ("ComponentConfiguration", "DefaultConfiguration"):
        if set(keys) == {wrapper}:
            keys = keys[wrapper]
    return keys
