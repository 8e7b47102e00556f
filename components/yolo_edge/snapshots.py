"""Event snapshots: JPEG pictures of tracked objects, kept in a local folder or exported to S3.

An event (`new`, `end`) names its snapshot up front (`snapshot_name`), so the event can carry the
snapshot's path or S3 URI at once while a `SnapshotWriter` thread encodes and saves the picture.

Stores:
  * `FolderStore`: files under a local folder, written atomically, the oldest removed beyond a count and a
    size limit;
  * `StreamManagerStore` (under Greengrass, `s3_bucket` set): the file is written to the local folder as
    above, then an S3 export task for it is appended to a Stream Manager message stream whose export
    definition uploads it (component aws.greengrass.StreamManager, SDK `stream-manager` from PyPI: the
    `s3` extra). Stream Manager reads the file when it uploads it, so the folder's retention must keep
    files longer than uploads take (the defaults keep 1000 pictures).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import cv2
import numpy as np

from .config_values import ConfigError, _as_bool, _as_str, _non_empty, _ranged, decoded_json, reject_unknown_keys

log = logging.getLogger(__name__)

QUEUE_SIZE = 16
DROP_LOG_EVERY = 100  # log the first dropped snapshot, then every this many
CLOSE_TIMEOUT_S = 5.0
BYTES_PER_MB = 1_000_000
SNAPSHOT_SUFFIX = ".jpg"
EXPORT_IDENTIFIER_PREFIX = "S3TaskExecutor-"
STREAM_MAX_BYTES = 16 * 1024 * 1024  # the stream holds export tasks (small JSON), not pictures
# A Stream Manager that stops answering holds up the writer thread (its queue then drops pictures), not the
# frame loop; the SDK's own default is 60 s.
STREAM_MANAGER_TIMEOUT_S = 10.0
# What Stream Manager accepts (its SDK's validations): S3 bucket names and stream names; object keys
# may not hold these characters.
_BUCKET = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_STREAM_NAME = re.compile(r"^[\w ,.\-]{1,255}$")
_KEY_FORBIDDEN = set("\\{} %`[]\"'><~#^?|")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SnapshotEvent(Enum):
    NEW = "new"
    END = "end"


def _parse_events(key: str, value: Any) -> tuple[SnapshotEvent, ...]:
    allowed = "a list of " + ", ".join(e.value for e in SnapshotEvent) + " (or a comma-separated string); "\
              "empty: no snapshots"
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(key, value, allowed)
    events: list[SnapshotEvent] = []
    for item in items:
        text = item.strip().lower() if isinstance(item, str) else item
        if text == "":
            continue
        try:
            event = SnapshotEvent(text)
        except ValueError:
            raise ConfigError(key, value, allowed) from None
        if event not in events:
            events.append(event)
    return tuple(events)


_parse_folder = _non_empty("a non-empty folder path (relative paths are taken from the working directory)")


def _parse_bucket(key: str, value: Any) -> str:
    text = _as_str(key, value)
    if text and not _BUCKET.match(text):
        raise ConfigError(key, value, "an S3 bucket name (3-63 lowercase letters, digits, '.' and '-'), or '' for no "
                                "S3 export")
    return text


def _parse_prefix(key: str, value: Any) -> str:
    text = _as_str(key, value)
    if text.startswith("/") or len(text) > 512 or _KEY_FORBIDDEN & set(text):
        raise ConfigError(key, value, "an S3 key prefix of at most 512 characters, not starting with '/', without "
                                "spaces or any of " + "".join(sorted(_KEY_FORBIDDEN - {" "})))
    return text


def _parse_stream_name(key: str, value: Any) -> str:
    text = _as_str(key, value)
    if not _STREAM_NAME.match(text):
        raise ConfigError(key, value, "a Stream Manager stream name: 1-255 letters, digits, spaces, ',', '.', '-', '_'")
    return text


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "events": _parse_events,
    "crop": _as_bool,
    "folder": _parse_folder,
    "max_files": _ranged(int, 0, 10_000_000),
    "max_mb": _ranged(float, 0.0, 10_000_000.0),
    "jpeg_quality": _ranged(int, 1, 100),
    "s3_bucket": _parse_bucket,
    "s3_prefix": _parse_prefix,
    "stream_name": _parse_stream_name,
}


@dataclass(frozen=True)
class SnapshotSettings:
    events: tuple[SnapshotEvent, ...] = ()  # which object events get a snapshot; () = snapshots off
    crop: bool = True  # crop around the box, else the whole frame
    folder: str = "snapshots"  # local folder (relative to the working directory)
    max_files: int = 1000  # retention: the oldest files removed beyond this many (0 = no limit)
    max_mb: float = 500.0  # and beyond this many MB (1,000,000 bytes) in the folder (0 = no limit)
    jpeg_quality: int = 85
    s3_bucket: str = ""  # non-empty: export to S3 through Stream Manager (under Greengrass)
    s3_prefix: str = "yolo-edge/"
    stream_name: str = "yolo-edge-snapshots"

    @property
    def enabled(self) -> bool:
        return bool(self.events)

    @classmethod
    def from_mapping(cls, key: str, value: object) -> SnapshotSettings:
        """Validate the configuration object at `key` (a mapping, its JSON text, or null/'' for defaults).
        Errors name `key.<field>` and the value."""
        # Text from --set snapshots='{...}', or a deployment that stored it as text.
        value = decoded_json(key, value, "an object of snapshot settings (or its JSON text)")
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "an object of snapshot settings: " + ", ".join(_PARSERS))
        reject_unknown_keys(key, value, tuple(_PARSERS))
        return cls(**{str(name): _PARSERS[str(name)](f"{key}.{name}", item) for name, item in value.items()})

    def to_mapping(self) -> dict[str, Any]:
        """Field -> plain value, as a recipe's DefaultConfiguration holds it."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["events"] = [event.value for event in self.events]
        return values


def _safe_part(text: str) -> str:
    """A file-name part of letters, digits, '.', '-' and '_' only, never '.' or '..'."""
    return _UNSAFE.sub("_", text).lstrip(".") or "_"


def snapshot_name(camera: str, track_id: int, event: SnapshotEvent, when: datetime) -> str:
    """'<camera>/<UTC time to the millisecond>-<track id>-<event>.jpg', e.g.
    'dock-1/20261126T101502.123Z-17-new.jpg'. A naive `when` is taken as UTC."""
    utc = when.astimezone(timezone.utc) if when.tzinfo is not None else when
    stamp = utc.strftime("%Y%m%dT%H%M%S") + f".{utc.microsecond // 1000:03d}Z"
    return f"{_safe_part(camera)}/{stamp}-{int(track_id)}-{event.value}{SNAPSHOT_SUFFIX}"


class SnapshotStore(Protocol):
    def location(self, name: str) -> str:
        """Where `save(name, ...)` puts the picture, known before it is saved."""

    def save(self, name: str, jpeg: bytes) -> str:
        """Store the picture; returns where it went: a local path, or 's3://bucket/prefix/name'."""

    def close(self) -> None: ...


class FolderStore:
    """Pictures under `folder` (names may hold one sub-folder per camera). Each save writes a temporary
    file and renames it (a reader never sees half a picture), then removes the oldest pictures (by
    modification time) beyond `max_files` files or `max_mb` MB; the newest is always kept. Used from one
    thread (the SnapshotWriter's)."""

    def __init__(self, folder: str | Path, max_files: int = 1000, max_mb: float = 500.0) -> None:
        self.folder = Path(folder)
        self.max_files = max_files
        self.max_bytes = int(max_mb * BYTES_PER_MB)
        self.pruned = 0

    def location(self, name: str) -> str:
        return str(self.folder / name)

    def save(self, name: str, jpeg: bytes) -> str:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(jpeg)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.prune(keep=path)
        return str(path)

    def prune(self, keep: Path | None = None) -> int:
        """Remove the oldest pictures beyond the limits; returns how many were removed."""
        if self.max_files <= 0 and self.max_bytes <= 0:
            return 0
        pictures = []
        for path in self.folder.rglob(f"*{SNAPSHOT_SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            pictures.append((stat.st_mtime_ns, str(path), stat.st_size))
        pictures.sort()
        count, total = len(pictures), sum(size for _, _, size in pictures)
        removed = 0
        for _, name, size in pictures:
            if not (0 < self.max_files < count or 0 < self.max_bytes < total):
                break
            if keep is not None and name == str(keep):
                continue
            try:
                os.remove(name)
                removed += 1
            except FileNotFoundError:
                pass
            count, total = count - 1, total - size
        self.pruned += removed
        return removed

    def close(self) -> None:
        pass


class StreamManagerStore:
    """Saves the picture in the local folder (retention as FolderStore), then appends an
    S3ExportTaskDefinition for it to `stream_name`, a message stream whose export definition has an S3
    task executor: Stream Manager uploads the file to s3://<bucket>/<prefix><name>.

    The client connects on the first save (to 127.0.0.1, port $STREAM_MANAGER_SERVER_PORT, token
    $AWS_CONTAINER_AUTHORIZATION_TOKEN, both set by Greengrass for components that depend on Stream
    Manager) and is made again on the next save after a failure."""

    def __init__(self, settings: SnapshotSettings, client_factory: Callable[[], Any] | None = None) -> None:
        try:
            import stream_manager  # the s3 extra; only this store needs it
        except ImportError as exc:
            raise ImportError(f"snapshots.s3_bucket {settings.s3_bucket!r} needs the stream-manager SDK: add 's3' "
                              "to install_extras (pip install 'yolo-edge[s3]')") from exc

        self._sdk = stream_manager
        self._settings = settings
        self._folder = FolderStore(settings.folder, settings.max_files, settings.max_mb)
        self._client_factory = client_factory or (
            lambda: stream_manager.StreamManagerClient(request_timeout=STREAM_MANAGER_TIMEOUT_S))
        self._client: Any = None
        self.exported = 0

    @property
    def pruned(self) -> int:
        return self._folder.pruned

    def key(self, name: str) -> str:
        return self._settings.s3_prefix + name

    def location(self, name: str) -> str:
        return f"s3://{self._settings.s3_bucket}/{self.key(name)}"

    def stream_definition(self) -> Any:
        sdk = self._sdk
        identifier = (EXPORT_IDENTIFIER_PREFIX + self._settings.stream_name)[:255]
        executor = sdk.S3ExportTaskExecutorConfig(identifier=identifier)
        return sdk.MessageStreamDefinition(
            name=self._settings.stream_name, max_size=STREAM_MAX_BYTES,
            strategy_on_full=sdk.StrategyOnFull.OverwriteOldestData, persistence=sdk.Persistence.File,
            export_definition=sdk.ExportDefinition(s3_task_executor=[executor]))

    def _connected(self) -> Any:
        if self._client is None:
            client = self._client_factory()
            try:
                self._ensure_stream(client)
            except BaseException:
                client.close()
                raise
            self._client = client
        return self._client

    def _ensure_stream(self, client: Any) -> None:
        """Create the stream, or update one left by an earlier run to this export definition."""
        definition = self.stream_definition()
        try:
            client.describe_message_stream(self._settings.stream_name)
        except self._sdk.ResourceNotFoundException:
            client.create_message_stream(definition)
            log.info("created Stream Manager stream %r exporting to s3://%s/%s", self._settings.stream_name,
                     self._settings.s3_bucket, self._settings.s3_prefix)
            return
        client.update_message_stream(definition)

    def save(self, name: str, jpeg: bytes) -> str:
        path = Path(self._folder.save(name, jpeg)).resolve()
        task = self._sdk.S3ExportTaskDefinition(input_url=path.as_uri(), bucket=self._settings.s3_bucket,
                                                key=self.key(name))
        payload = self._sdk.Util.validate_and_serialize_to_json_bytes(task)
        try:
            self._connected().append_message(self._settings.stream_name, payload)
        except Exception:
            self._drop_client()
            raise
        self.exported += 1
        return self.location(name)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a broken connection: nothing more to do
                log.debug("closing the Stream Manager client failed", exc_info=True)

    def close(self) -> None:
        self._drop_client()


def open_store(settings: SnapshotSettings) -> SnapshotStore:
    """The store the settings ask for: S3 export through Stream Manager when `s3_bucket` is set, else the
    local folder."""
    if settings.s3_bucket:
        return StreamManagerStore(settings)
    return FolderStore(settings.folder, settings.max_files, settings.max_mb)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(SNAPSHOT_SUFFIX, image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return bytes(data.tobytes())


_STOP = object()


class SnapshotWriter:
    """Encodes and saves snapshots on a worker thread, so the frame loop never waits for a disk or a socket.

    `submit` queues a picture (at most `queue_size` waiting) and returns where it will be at once; when the
    queue is full the picture is dropped (counted in `dropped`, logged the first time and then every
    DROP_LOG_EVERY drops) and `submit` returns None. `written` and `failed` count saves."""

    def __init__(self, store: SnapshotStore, jpeg_quality: int = 85, queue_size: int = QUEUE_SIZE) -> None:
        self.store = store
        self.jpeg_quality = jpeg_quality
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def submit(self, name: str, image: np.ndarray) -> str | None:
        if self._closed:
            raise RuntimeError("SnapshotWriter is closed")
        try:
            self._queue.put_nowait((name, image))
        except queue.Full:
            self.dropped += 1
            if self.dropped % DROP_LOG_EVERY == 1:
                log.warning("snapshot queue full (%d waiting): dropped %s (%d dropped so far)",
                            self._queue.maxsize, name, self.dropped)
            return None
        return self.store.location(name)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            name, image = item
            try:
                self.store.save(name, encode_jpeg(image, self.jpeg_quality))
                self.written += 1
            except Exception:
                self.failed += 1
                log.exception("snapshot %s not saved", name)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Save what is queued (waiting at most `timeout` seconds), then close the store. Returns True when
        everything queued was handled."""
        if self._closed:
            return not self._thread.is_alive()
        self._closed = True
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if self._thread.is_alive():
            log.warning("snapshot writer still busy after %.1f s; %d snapshots not saved", timeout, self.pending)
            return False
        self.store.close()
        return True


def open_writer(settings: SnapshotSettings) -> SnapshotWriter | None:
    """The writer for these settings, or None when no event asks for a snapshot."""
    if not settings.enabled:
        return None
    return SnapshotWriter(open_store(settings), settings.jpeg_quality)
