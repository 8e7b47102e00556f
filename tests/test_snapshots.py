"""Event snapshots: drawing (yolo_edge.scene.draw), names, the local folder store and its retention, the
writer thread, the settings, and the S3 export through Stream Manager.

The export is checked at the SDK boundary: the real `stream_manager.StreamManagerClient` (PyPI's
stream-manager) talks to `StreamManagerDouble`, a small server on 127.0.0.1 speaking the SDK's wire
protocol, which records the requests it receives."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from yolo_edge.config import ConfigError
from yolo_edge.scene.draw import (
    LINE_COLOR,
    PALETTE,
    ZONE_COLOR,
    class_color,
    crop_around,
    crop_bounds,
    draw_boxes,
    draw_lines,
    draw_zones,
    in_arrow,
    render_snapshot,
)
from yolo_edge.snapshots import (
    FolderStore,
    SnapshotEvent,
    SnapshotSettings,
    SnapshotWriter,
    StreamManagerStore,
    open_store,
    open_writer,
    snapshot_name,
)

try:
    import cbor2  # comes with stream-manager (the s3 extra)
except ImportError:  # a device's runtime venv without the s3 extra: the Stream Manager tests skip
    cbor2 = None

pytestmark = pytest.mark.runtime
BLACK = (0, 0, 0)


def blank(rows: int = 100, cols: int = 200) -> np.ndarray:
    return np.zeros((rows, cols, 3), dtype=np.uint8)


def pixel(image: np.ndarray, x: int, y: int) -> tuple[int, int, int]:
    b, g, r = image[y, x]
    return int(b), int(g), int(r)


def has_white_text(region: np.ndarray) -> bool:
    """Near-white pixels (anti-aliased text never reaches 255 in every channel on older OpenCVs)."""
    return bool((region.min(axis=2) >= 200).sum() >= 10)


# -- drawing ---------------------------------------------------------------------------------------------


def test_draw_boxes_draws_the_outline_and_the_label_on_a_copy() -> None:
    frame = blank()
    out = draw_boxes(frame, np.array([[20, 40, 80, 90]]), ["person 0.91"])
    assert not frame.any(), "the frame passed in is never drawn on"
    color = class_color(0)
    assert pixel(out, 20, 70) == color and pixel(out, 80, 70) == color  # left and right edges
    assert pixel(out, 50, 90) == color  # bottom edge
    assert pixel(out, 50, 70) == BLACK and pixel(out, 10, 70) == BLACK  # inside and outside
    label = out[20:40, 20:100]
    assert color in {tuple(int(v) for v in p) for p in label.reshape(-1, 3)}, "a filled label background"
    assert has_white_text(label)


def test_box_colors_follow_the_class_id_and_labels_must_match_the_boxes() -> None:
    out = draw_boxes(blank(), np.array([[10, 50, 60, 90], [100, 50, 150, 90]]), ["", ""], class_ids=[1, 19])
    assert pixel(out, 10, 70) == PALETTE[1]
    assert pixel(out, 100, 70) == PALETTE[19 % len(PALETTE)]
    assert not out[:49].any(), "an empty label draws no text"
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        draw_boxes(blank(), np.array([[0, 0, 1, 1], [0, 0, 2, 2]]), ["a"])


def test_draw_zones_fills_translucently_outlines_and_names() -> None:
    frame = blank()
    out = draw_zones(frame, {"press": np.array([[100, 20], [180, 20], [180, 90], [100, 90]])})
    assert not frame.any()
    blended = tuple(int(round(c * 0.25)) for c in ZONE_COLOR)
    assert pixel(out, 150, 60) == blended, "fill: 25% zone colour over the frame"
    assert pixel(out, 180, 60) == ZONE_COLOR  # the outline
    assert pixel(out, 50, 60) == BLACK  # outside
    assert has_white_text(out[0:20, 100:160]), "the zone's name is written at its first vertex"


def test_in_arrow_points_to_the_in_side() -> None:
    # Walking right along y = 50 (y grows downwards), the left-hand side is up on the screen.
    assert in_arrow((20, 50), (180, 50), True) == ((100.0, 50.0), (100.0, 20.0))
    assert in_arrow((20, 50), (180, 50), False) == ((100.0, 50.0), (100.0, 80.0))
    assert in_arrow((10, 10), (10, 90), True, length=10) == ((10.0, 50.0), (20.0, 50.0))


@pytest.mark.parametrize(("in_side_left", "arrow_row", "empty_row"), [(True, 35, 65), (False, 65, 35)])
def test_draw_lines_draws_the_line_and_an_arrow_to_the_in_side(in_side_left: bool, arrow_row: int,
                                                               empty_row: int) -> None:
    out = draw_lines(blank(), {"door": ((20, 50), (180, 50))}, {"door": in_side_left})
    assert pixel(out, 150, 50) == LINE_COLOR
    assert pixel(out, 100, arrow_row) == LINE_COLOR
    assert pixel(out, 100, empty_row) == BLACK


def test_crop_bounds_are_the_box_grown_by_the_margin_and_clipped() -> None:
    shape = (100, 200, 3)
    assert crop_bounds(shape, (50, 40, 90, 60)) == (40, 35, 100, 65)
    assert crop_bounds(shape, (50, 40, 90, 60), margin=0.0) == (50, 40, 90, 60)
    assert crop_bounds(shape, (0, 0, 20, 10)) == (0, 0, 25, 13)  # floor/ceil to whole pixels
    assert crop_bounds(shape, (190, 90, 200, 100)) == (187, 87, 200, 100)
    assert crop_bounds(shape, (-50, -50, 400, 300)) == (0, 0, 200, 100)
    assert crop_bounds(shape, (250, 150, 260, 160)) == (199, 99, 200, 100)  # outside: still one pixel
    with pytest.raises(ValueError, match="margin must be >= 0"):
        crop_bounds(shape, (0, 0, 1, 1), margin=-0.1)


def test_crop_around_copies_that_part_of_the_image() -> None:
    image = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3)
    crop = crop_around(image, (50, 40, 90, 60))
    assert crop.shape == (30, 60, 3)
    assert np.array_equal(crop, image[35:65, 40:100])
    crop[:] = 0
    assert image[35, 40, 0] != 0, "a copy, not a view"


def test_render_snapshot_draws_everything_then_crops() -> None:
    frame = blank(200, 300)
    zones = {"z": np.array([[0, 0], [300, 0], [300, 200], [0, 200]])}
    lines = {"l": ((0, 120), (300, 120))}
    whole = render_snapshot(frame, (100, 60, 180, 140), "car 0.80", zones, lines, crop=False, class_id=2)
    assert whole.shape == frame.shape and not frame.any()
    assert pixel(whole, 100, 100) == PALETTE[2]
    assert pixel(whole, 250, 120) == LINE_COLOR
    cropped = render_snapshot(frame, (100, 60, 180, 140), "car 0.80", zones, lines, crop=True, class_id=2)
    assert cropped.shape == (120, 120, 3)  # (80, 40, 200, 160): 20 px more on each side
    assert np.array_equal(cropped, whole[40:160, 80:200])


# -- names -----------------------------------------------------------------------------------------------


def test_snapshot_name_is_camera_utc_time_track_and_event() -> None:
    when = datetime(2026, 11, 26, 10, 15, 2, 123456, tzinfo=timezone.utc)
    assert snapshot_name("dock-1", 17, SnapshotEvent.NEW, when) == "dock-1/20261126T101502.123Z-17-new.jpg"
    local = when.astimezone(timezone(timedelta(hours=2)))
    assert snapshot_name("dock-1", 17, SnapshotEvent.END, local) == "dock-1/20261126T101502.123Z-17-end.jpg"
    naive = datetime(2026, 1, 2, 3, 4, 5, 6000)
    assert snapshot_name("cam", 0, SnapshotEvent.NEW, naive) == "cam/20260102T030405.006Z-0-new.jpg"


@pytest.mark.parametrize(("camera", "folder"), [
    ("../etc/pass wd", "_etc_pass_wd"), ("..", "_"), ("", "_"), ("Dock 1 (north)", "Dock_1__north_"),
    ("café", "caf_"),
])
def test_snapshot_names_hold_safe_characters_only(camera: str, folder: str) -> None:
    name = snapshot_name(camera, 3, SnapshotEvent.NEW, datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert name == f"{folder}/20260101T000000.000Z-3-new.jpg"


# -- the local folder ------------------------------------------------------------------------------------


def old_pictures(folder: Path, sizes: list[int]) -> list[Path]:
    """Pictures with modification times 1000 s, 2000 s, ... (oldest first)."""
    paths = []
    for index, size in enumerate(sizes):
        path = folder / "cam" / f"old-{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        os.utime(path, ns=((index + 1) * 1000 * 10**9, (index + 1) * 1000 * 10**9))
        paths.append(path)
    return paths


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_folder_store_writes_atomically_where_it_said(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "snaps")
    assert store.location("cam/a.jpg") == str(tmp_path / "snaps" / "cam" / "a.jpg")
    assert store.save("cam/a.jpg", b"jpeg bytes") == str(tmp_path / "snaps" / "cam" / "a.jpg")
    assert files_in(tmp_path / "snaps") == ["cam/a.jpg"], "no temporary file left"
    assert (tmp_path / "snaps" / "cam" / "a.jpg").read_bytes() == b"jpeg bytes"
    assert store.pruned == 0


def test_folder_store_keeps_at_most_max_files(tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    old_pictures(folder, [10] * 5)
    (folder / "cam" / "notes.txt").write_text("not a picture")
    store = FolderStore(folder, max_files=3, max_mb=0)
    store.save("cam/new.jpg", b"new")
    assert files_in(folder) == ["cam/new.jpg", "cam/notes.txt", "cam/old-3.jpg", "cam/old-4.jpg"]
    assert store.pruned == 3


def test_folder_store_keeps_at_most_max_mb(tmp_path: Path) -> None:
    folder = tmp_path / "snaps"
    old_pictures(folder, [400_000] * 3)
    store = FolderStore(folder, max_files=0, max_mb=1.0)
    store.save("cam/new.jpg", b"y" * 400_000)  # 1.6 MB -> 0.8 MB
    assert files_in(folder) == ["cam/new.jpg", "cam/old-2.jpg"]
    assert store.pruned == 2


def test_folder_store_keeps_the_newest_even_over_the_limit_and_no_limits_keep_all(tmp_path: Path) -> None:
    small = FolderStore(tmp_path / "a", max_files=1, max_mb=0.1)
    old_pictures(tmp_path / "a", [10, 10])
    small.save("cam/new.jpg", b"z" * 200_000)
    assert files_in(tmp_path / "a") == ["cam/new.jpg"]
    unlimited = FolderStore(tmp_path / "b", max_files=0, max_mb=0)
    old_pictures(tmp_path / "b", [10] * 4)
    unlimited.save("cam/new.jpg", b"z")
    assert len(files_in(tmp_path / "b")) == 5 and unlimited.pruned == 0


# -- the writer thread -----------------------------------------------------------------------------------


class BlockingStore(FolderStore):
    """A FolderStore whose saves wait until `release` is set; `started` is set when the first save begins."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.started = threading.Event()
        self.release = threading.Event()
        self.closed = False

    def save(self, name: str, jpeg: bytes) -> str:
        self.started.set()
        assert self.release.wait(10), "the test never released the store"
        return super().save(name, jpeg)

    def close(self) -> None:
        self.closed = True


def picture(value: int) -> np.ndarray:
    image = np.full((48, 64, 3), value, dtype=np.uint8)
    cv2.rectangle(image, (10, 10), (40, 30), (0, 0, 255), -1)
    return image


def test_writer_encodes_and_saves_on_its_thread(tmp_path: Path) -> None:
    writer = SnapshotWriter(FolderStore(tmp_path), jpeg_quality=90)
    locations = [writer.submit(f"cam/{i}.jpg", picture(40 * i)) for i in range(3)]
    assert locations == [str(tmp_path / "cam" / f"{i}.jpg") for i in range(3)]
    assert writer.close() is True
    assert (writer.written, writer.failed, writer.dropped) == (3, 0, 0)
    for i in range(3):  # OpenCV's JPEG at the asked quality, byte for byte
        ok, expected = cv2.imencode(".jpg", picture(40 * i), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok and (tmp_path / "cam" / f"{i}.jpg").read_bytes() == expected.tobytes()
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit("cam/late.jpg", picture(0))


def test_a_full_queue_drops_counts_and_logs_once_and_close_drains(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    store = BlockingStore(tmp_path)
    writer = SnapshotWriter(store)
    assert writer.submit("cam/first.jpg", picture(0)) is not None
    assert store.started.wait(5)  # the worker holds the first picture; the queue is empty again
    with caplog.at_level(logging.WARNING, logger="yolo_edge.snapshots"):
        queued = [writer.submit(f"cam/q{i:02d}.jpg", picture(i)) for i in range(16)]
        dropped = [writer.submit(f"cam/d{i}.jpg", picture(i)) for i in range(3)]
    assert None not in queued and dropped == [None, None, None]
    assert writer.dropped == 3 and writer.pending == 16
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert drops == ["snapshot queue full (16 waiting): dropped cam/d0.jpg (1 dropped so far)"]
    store.release.set()
    assert writer.close(timeout=10) is True
    assert (writer.written, writer.failed, writer.dropped) == (17, 0, 3)
    assert len(files_in(tmp_path)) == 17 and store.closed


def test_close_gives_up_after_its_timeout_and_failures_are_counted(tmp_path: Path) -> None:
    store = BlockingStore(tmp_path)
    writer = SnapshotWriter(store)
    writer.submit("cam/a.jpg", picture(0))
    assert store.started.wait(5)
    assert writer.close(timeout=0.2) is False
    assert not store.closed
    store.release.set()

    class FailingStore(FolderStore):
        def save(self, name: str, jpeg: bytes) -> str:
            raise OSError("disk full")

    failing = SnapshotWriter(FailingStore(tmp_path / "f"))
    failing.submit("cam/a.jpg", picture(0))
    failing.submit("cam/b.jpg", np.zeros((0, 0, 3), np.uint8))  # nothing to encode
    assert failing.close() is True
    assert (failing.written, failing.failed) == (0, 2)


# -- settings --------------------------------------------------------------------------------------------


def test_settings_defaults_and_a_full_mapping() -> None:
    assert SnapshotSettings.from_mapping("snapshots", None) == SnapshotSettings()
    assert SnapshotSettings.from_mapping("snapshots", "") == SnapshotSettings()
    assert not SnapshotSettings().enabled and open_writer(SnapshotSettings()) is None
    values = {"events": ["new", "END", "new"], "crop": "false", "folder": "/var/snaps", "max_files": "50",
              "max_mb": 2.5, "jpeg_quality": 70.0, "s3_bucket": "my.bucket-1", "s3_prefix": "site/a/",
              "stream_name": "snaps"}
    settings = SnapshotSettings.from_mapping("snapshots", values)
    assert settings == SnapshotSettings((SnapshotEvent.NEW, SnapshotEvent.END), False, "/var/snaps", 50, 2.5, 70,
                                        "my.bucket-1", "site/a/", "snaps")
    assert SnapshotSettings.from_mapping("snapshots", json.dumps(values)) == settings
    assert SnapshotSettings.from_mapping("snapshots", settings.to_mapping()) == settings
    assert SnapshotSettings.from_mapping("x", {"events": "new, end"}).events == (SnapshotEvent.NEW,
                                                                                 SnapshotEvent.END)


@pytest.mark.parametrize(("value", "key", "bad", "allowed"), [
    ({"events": ["new", "start"]}, "snapshots.events", ["new", "start"], "a list of new, end"),
    ({"events": 3}, "snapshots.events", 3, "a list of new, end"),
    ({"crop": "maybe"}, "snapshots.crop", "maybe", "true or false"),
    ({"folder": " "}, "snapshots.folder", " ", "a non-empty folder path"),
    ({"max_files": -1}, "snapshots.max_files", -1, "a number from 0 to 1e+07"),
    ({"max_mb": "lots"}, "snapshots.max_mb", "lots", "a number"),
    ({"jpeg_quality": 0}, "snapshots.jpeg_quality", 0, "a number from 1 to 100"),
    ({"jpeg_quality": 85.5}, "snapshots.jpeg_quality", 85.5, "a whole number"),
    ({"s3_bucket": "My_Bucket"}, "snapshots.s3_bucket", "My_Bucket", "an S3 bucket name"),
    ({"s3_prefix": "a b/"}, "snapshots.s3_prefix", "a b/", "an S3 key prefix"),
    ({"s3_prefix": "/abs/"}, "snapshots.s3_prefix", "/abs/", "an S3 key prefix"),
    ({"stream_name": "a/b"}, "snapshots.stream_name", "a/b", "a Stream Manager stream name"),
    ({"size": 3}, "snapshots.size", 3, "one of events, crop, folder, max_files, max_mb, jpeg_quality, "
                                       "s3_bucket, s3_prefix, stream_name"),
    (5, "snapshots", 5, "an object of snapshot settings: events, crop"),
    ("{oops", "snapshots", "{oops", "an object of snapshot settings (or its JSON text)"),
])
def test_bad_settings_name_the_key_and_the_value(value: Any, key: str, bad: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SnapshotSettings.from_mapping("snapshots", value)
    assert (caught.value.key, caught.value.value) == (key, bad)
    assert caught.value.allowed.startswith(allowed)
    assert str(caught.value).startswith(f"config key {key!r}: invalid value {bad!r}; allowed: {allowed}")


def test_open_store_is_the_folder_without_a_bucket(tmp_path: Path) -> None:
    store = open_store(SnapshotSettings(folder=str(tmp_path), max_files=7, max_mb=1.5))
    assert isinstance(store, FolderStore)
    assert (store.folder, store.max_files, store.max_bytes) == (tmp_path, 7, 1_500_000)


# -- S3 export through Stream Manager, the real SDK client against a server double -------------------------

CONNECT, CREATE, APPEND, CONNECT_RESPONSE, CREATE_RESPONSE, APPEND_RESPONSE = 1, 2, 4, 6, 7, 9
DESCRIBE, DESCRIBE_RESPONSE, UPDATE, UPDATE_RESPONSE = 13, 14, 15, 16
SUCCESS, UNKNOWN_FAILURE, RESOURCE_NOT_FOUND = 0, 1, 5
OPERATION_NAMES = {CONNECT: "Connect", CREATE: "CreateMessageStream", APPEND: "AppendMessage",
                   DESCRIBE: "DescribeMessageStream", UPDATE: "UpdateMessageStream"}
RESPONSES = {CREATE: CREATE_RESPONSE, APPEND: APPEND_RESPONSE, DESCRIBE: DESCRIBE_RESPONSE, UPDATE: UPDATE_RESPONSE}


def read_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def frame(operation: int, payload: dict[str, Any]) -> bytes:
    """The SDK's frame: a 4-byte big-endian length (operation byte + payload), the operation, CBOR."""
    body = cbor2.dumps(payload)
    return (len(body) + 1).to_bytes(4, "big") + bytes([operation]) + body


class StreamManagerDouble(socketserver.ThreadingTCPServer):
    """Stream Manager's side of the SDK's protocol, for the operations the snapshot store uses. Records
    every request as (operation name, decoded CBOR payload); `fail_appends` answers that many appends
    with UnknownFailure."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, streams: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _StreamManagerHandler)
        self.streams = dict(streams or {})
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.fail_appends = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def answer(self, operation: int, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append((OPERATION_NAMES.get(operation, str(operation)), request))
            reply: dict[str, Any] = {"requestId": request["requestId"], "status": SUCCESS}
            if operation == DESCRIBE:
                definition = self.streams.get(request["name"])
                if definition is None:
                    reply.update(status=RESOURCE_NOT_FOUND, errorMessage="stream not found")
                else:
                    reply["messageStreamInfo"] = {"definition": definition}
            elif operation in (CREATE, UPDATE):
                self.streams[request["definition"]["name"]] = request["definition"]
            elif operation == APPEND:
                if self.fail_appends:
                    self.fail_appends -= 1
                    reply.update(status=UNKNOWN_FAILURE, errorMessage="disk full")
                else:
                    reply["sequenceNumber"] = sum(1 for name, _ in self.requests if name == "AppendMessage") - 1
            return RESPONSES[operation], reply


class _StreamManagerHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, StreamManagerDouble)
        try:
            connect_version = read_exactly(self.request, 1)
            operation, request = self.read_frame()
            assert (connect_version, operation) == (b"\x01", CONNECT)
            with server.lock:
                server.requests.append(("Connect", request))
            self.request.sendall(b"\x01" + frame(CONNECT_RESPONSE, {
                "requestId": request["requestId"], "status": SUCCESS, "protocolVersion": request["protocolVersion"],
                "serverVersion": "test-double"}))
            while True:
                operation, request = self.read_frame()
                self.request.sendall(frame(*server.answer(operation, request)))
        except (EOFError, ConnectionError):
            return

    def read_frame(self) -> tuple[int, dict[str, Any]]:
        length = int.from_bytes(read_exactly(self.request, 4), "big")
        operation = read_exactly(self.request, 1)[0]
        return operation, cbor2.loads(read_exactly(self.request, length - 1))


@pytest.fixture
def stream_manager(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A StreamManagerDouble on the port the SDK reads from the environment, as Greengrass sets it."""
    pytest.importorskip("stream_manager", reason="the s3 extra (stream-manager) is not installed")
    server = StreamManagerDouble()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STREAM_MANAGER_SERVER_PORT", str(server.port))
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "token-123")
    yield server
    server.shutdown()
    server.server_close()


def s3_settings(tmp_path: Path) -> SnapshotSettings:
    return SnapshotSettings(events=(SnapshotEvent.NEW,), folder=str(tmp_path / "snaps"), s3_bucket="my-bucket",
                            s3_prefix="site-a/")


EXPECTED_DEFINITION = {
    "name": "yolo-edge-snapshots", "maxSize": 16 * 1024 * 1024, "streamSegmentSize": 16 * 1024 * 1024,
    "strategyOnFull": 1,  # OverwriteOldestData
    "persistence": 0,  # File
    "exportDefinition": {"s3TaskExecutor": [{"identifier": "S3TaskExecutor-yolo-edge-snapshots"}]},
}


def appended_tasks(server: StreamManagerDouble) -> list[dict[str, Any]]:
    tasks = []
    for name, request in server.requests:
        if name == "AppendMessage":
            assert request["name"] == "yolo-edge-snapshots"
            tasks.append(json.loads(request["payload"]))
    return tasks


def test_snapshots_are_exported_to_s3_through_stream_manager(stream_manager: StreamManagerDouble,
                                                             tmp_path: Path) -> None:
    settings = s3_settings(tmp_path)
    store = open_store(settings)
    assert isinstance(store, StreamManagerStore)
    writer = SnapshotWriter(store)
    names = [snapshot_name("dock-1", track, SnapshotEvent.NEW, datetime(2026, 11, 26, 10, 15, 2, tzinfo=timezone.utc))
             for track in (17, 18)]
    locations = [writer.submit(name, picture(100)) for name in names]
    assert locations == [f"s3://my-bucket/site-a/{name}" for name in names]
    assert writer.close() is True
    assert (writer.written, writer.failed) == (2, 0)

    assert [name for name, _ in stream_manager.requests] == [
        "Connect", "DescribeMessageStream", "CreateMessageStream", "AppendMessage", "AppendMessage"]
    connect = stream_manager.requests[0][1]
    assert connect["authToken"] == "token-123" and connect["protocolVersion"] == "1.1.0"
    assert stream_manager.requests[2][1]["definition"] == EXPECTED_DEFINITION
    local = [(tmp_path / "snaps" / name).resolve() for name in names]
    assert appended_tasks(stream_manager) == [
        {"inputUrl": path.as_uri(), "bucket": "my-bucket", "key": f"site-a/{name}"}
        for path, name in zip(local, names)]
    assert local[0].as_uri().startswith("file:///")
    for path in local:  # Stream Manager uploads from these files: complete JPEGs
        assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert store.exported == 2


def test_a_stream_left_by_an_earlier_run_is_updated_not_created(stream_manager: StreamManagerDouble,
                                                                tmp_path: Path) -> None:
    stream_manager.streams["yolo-edge-snapshots"] = {"name": "yolo-edge-snapshots", "strategyOnFull": 0}
    store = StreamManagerStore(s3_settings(tmp_path))
    assert store.save("cam/a.jpg", b"\xff\xd8jpeg") == "s3://my-bucket/site-a/cam/a.jpg"
    store.close()
    assert [name for name, _ in stream_manager.requests] == [
        "Connect", "DescribeMessageStream", "UpdateMessageStream", "AppendMessage"]
    assert stream_manager.requests[2][1]["definition"] == EXPECTED_DEFINITION


def test_a_failed_append_is_counted_and_the_next_save_reconnects(stream_manager: StreamManagerDouble,
                                                                 tmp_path: Path) -> None:
    stream_manager.fail_appends = 1
    writer = SnapshotWriter(StreamManagerStore(s3_settings(tmp_path)))
    writer.submit("cam/a.jpg", picture(0))
    writer.submit("cam/b.jpg", picture(0))
    assert writer.close() is True
    assert (writer.written, writer.failed) == (1, 1)
    assert [name for name, _ in stream_manager.requests] == [
        "Connect", "DescribeMessageStream", "CreateMessageStream", "AppendMessage",
        "Connect", "DescribeMessageStream", "UpdateMessageStream", "AppendMessage"]
    assert [task["key"] for task in appended_tasks(stream_manager)] == ["site-a/cam/a.jpg", "site-a/cam/b.jpg"]
    assert files_in(tmp_path / "snaps") == ["cam/a.jpg", "cam/b.jpg"], "both kept locally"


def test_no_stream_manager_fails_the_save_but_keeps_the_file(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    pytest.importorskip("stream_manager", reason="the s3 extra (stream-manager) is not installed")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("STREAM_MANAGER_SERVER_PORT", str(port))
    store = StreamManagerStore(s3_settings(tmp_path))
    with pytest.raises(ConnectionError):
        store.save("cam/a.jpg", b"jpeg")
    assert files_in(tmp_path / "snaps") == ["cam/a.jpg"]
    store.close()


def test_without_the_sdk_the_s3_store_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "stream_manager", None)  # what an install without the s3 extra has
    with pytest.raises(ImportError, match=r"snapshots.s3_bucket 'my-bucket' needs the stream-manager SDK: add "
                                          r"'s3' to install_extras \(pip install 'yolo-edge\[s3\]'\)"):
        open_store(s3_settings(tmp_path))
