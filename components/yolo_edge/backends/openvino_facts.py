"""What the OpenVINO backend learns from reading a model (its metadata, input and output shapes, whether
it is quantized, its input type), kept beside the compiled-model cache. A later start of the same file
then compiles it from the cache without reading it first: read_model costs YOLOv8n 640 35 ms and 8 MB
of peak memory. A fact file belongs to one model file as it was (path, size, modification time, as for
Python's .pyc files) and one OpenVINO version; any change makes a new one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FOLDER = "facts"  # under the compiled-model cache
SCHEMA = 1


@dataclass(frozen=True)
class ModelFacts:
    framework: dict[str, str]  # an ONNX file's metadata_props (rt_info 'framework'); {} for an IR folder's
    input_dims: list[int | None]  # None for a dynamic dimension
    output_dims: list[list[int | None]]
    quantized: bool
    input_type: str  # OpenVINO's element type name, e.g. 'f32'

    @property
    def fixed_size(self) -> bool:
        """An input of (N, C, H, W) with H and W fixed: it compiles without a reshape, straight from the file."""
        return len(self.input_dims) == 4 and self.input_dims[2] is not None and self.input_dims[3] is not None


def model_key(model_file: Path, version: str) -> list[Any] | None:
    """What a fact file belongs to; None when the model file cannot be looked at."""
    key: list[Any] = [SCHEMA, version]
    try:
        for part in (model_file, model_file.with_suffix(".bin")) if model_file.suffix == ".xml" else (model_file,):
            stat = part.stat()
            key += [str(part.resolve()), stat.st_size, stat.st_mtime_ns]
    except OSError:
        return None
    return key


def key_name(key: list[Any]) -> str:
    """The name of the files kept for `key` (without a suffix)."""
    # crc32, not hashlib: hashlib loads OpenSSL (3.6 MB). A fact file holds its key, so a clash only costs a read.
    return f"{zlib.crc32(json.dumps(key).encode()):08x}"


def _fact_file(cache: Path, key: list[Any]) -> Path:
    return cache / FOLDER / f"{key_name(key)}.json"


def load_facts(cache: Path, model_file: Path, version: str) -> ModelFacts | None:
    """The facts kept for this model file and OpenVINO version, None when there are none (or unreadable)."""
    key = model_key(model_file, version)
    if key is None:
        return None
    path = _fact_file(cache, key)
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        return ModelFacts(**kept["facts"]) if kept.get("key") == key else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.info("ignoring the OpenVINO model facts in %s (%s)", path, exc)
        return None


def save_facts(cache: Path, model_file: Path, version: str, facts: ModelFacts) -> None:
    """Keep `facts` for this model file; a cache that cannot be written only costs later starts a read."""
    key = model_key(model_file, version)
    if key is None:
        return
    path = _fact_file(cache, key)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        partial.write_text(json.dumps({"key": key, "facts": asdict(facts)}), encoding="utf-8")
        os.replace(partial, path)  # whole or not at all, also with starts side by side
    except OSError as exc:
        log.info("cannot keep the OpenVINO model facts in %s (%s)", path, exc)
        with contextlib.suppress(OSError):
            partial.unlink()
