"""Frame sources behind one interface: `read()` returns a BGR frame, or None at the end.

`camera_id` picks the kind: digits → camera index; csi://N → a Jetson CSI camera (an nvarguscamerasrc
GStreamer pipeline, see `CsiCamera`); rtsp://, http(s)://, udp:// … → network stream; a folder → its
images in sorted order; anything else → a video file.

Files and folders lose no frame: `read()` returns every frame in order. Live sources (cameras,
streams) are read by their own thread, which keeps only the newest frame: `read()` hands out the
latest frame not handed out before, and frames that were overwritten unread are counted in
`frames_skipped`. When a live source stops delivering, the thread closes it and reopens it with
capped exponential backoff, reporting `SourceEvent`s ("lost", "restored") to `on_event`.
A paused live source is idle: its reader releases the device or stream (nothing is read, nothing
decoded) and opens it again on resume, so the first frame after a pause is a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Protocol, Union
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")
CSI_SCHEME = "csi://"

# Reconnect schedule of live sources: RECONNECT_INITIAL_S, doubling, at most RECONNECT_MAX_S apart.
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0
# FFmpeg waits this long to open a stream, and for the next packet of an open one, before giving up.
STREAM_OPEN_TIMEOUT_S = 5.0
STREAM_READ_TIMEOUT_S = 5.0
# How long close() waits for the reader thread (blocked in a read or an open) before leaving it.
READER_JOIN_TIMEOUT_S = 1.0


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names it and says why."""


class SourceEventKind(str, Enum):
    LOST = "lost"
    RESTORED = "restored"


@dataclass(frozen=True)
class SourceEvent:
    """A change in a live source's connection."""

    kind: SourceEventKind
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class FrameSource(Protocol):
    """Everything the frame feeder calls on a source. Live sources (cameras, streams) are read by a
    thread of their own and implement all of it; finite ones (files, folders) inherit the do-nothing
    parts from `FiniteSource`."""

    description: str
    live: bool  # frames arrive on the source's clock (latest frame wins), not on demand
    on_event: Callable[[SourceEvent], None] | None  # set by the feeder: hears "lost" / "restored"
    connected: bool
    frames_skipped: int  # frames the source replaced with newer ones before anyone read them
    last_captured_at: float | None  # monotonic time the last frame handed out was captured

    def read(self) -> np.ndarray | None:
        """Next BGR frame, or None when a finite source has ended (or a live one was closed)."""

    def close(self) -> None: ...

    def pause(self) -> None:
        """Stop reading until `resume()`; a live source lets go of its device or stream."""

    def resume(self) -> None: ...

    def interrupt(self) -> None:
        """Make a blocked `read()` return None (a live read can block for as long as the source is down)."""


class FiniteSource:
    """The parts of `FrameSource` that a file or folder, read on demand, has nothing to do for."""

    live = False
    on_event: Callable[[SourceEvent], None] | None = None
    connected = True
    frames_skipped = 0
    last_captured_at: float | None = None

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def interrupt(self) -> None:
        pass


def backoff_delay(attempt: int, initial: float = RECONNECT_INITIAL_S, maximum: float = RECONNECT_MAX_S) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0-based): initial, 2×, 4× … capped."""
    return min(initial * (2.0 ** min(attempt, 64)), maximum)


class VideoFileSource(FiniteSource):

    def __init__(self, path: Path, loop: bool = False) -> None:
        self.path = path
        self.description = str(path)
        self.loop = loop
        self._capture = _open_capture(str(path), f"video file {path}")
        self.loops = 0

    def read(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        if ok:
            return frame
        if not self.loop:
            return None
        self._capture.release()
        self._capture = _open_capture(str(self.path), f"video file {self.path}")
        self.loops += 1
        ok, frame = self._capture.read()
        return frame if ok else None

    def close(self) -> None:
        self._capture.release()


class ImageFolderSource(FiniteSource):

    def __init__(self, folder: Path, loop: bool = False) -> None:
        self.description = str(folder)
        self.loop = loop
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"camera_id {str(folder)!r}: the folder has no images "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        self._next = 0
        self.skipped = 0

    def read(self) -> np.ndarray | None:
        unreadable_in_a_row = 0
        while True:
            if self._next >= len(self.files):
                if not self.loop:
                    return None
                self._next = 0
            path = self.files[self._next]
            self._next += 1
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is not None:
                return frame
            self.skipped += 1
            unreadable_in_a_row += 1
            log.warning("skipping unreadable image %s (%d skipped so far)", path, self.skipped)
            if unreadable_in_a_row >= len(self.files):
                raise SourceError(f"camera_id {self.description!r}: none of the images can be read")

    def close(self) -> None:
        pass


Opener = Callable[[Union[int, str], str], cv2.VideoCapture]


class LiveSource:
    """A camera index or a network stream, read continuously by its own thread (latest frame wins).

    The first open happens in the constructor, so a wrong URL or a missing camera fails `start` at
    once with a SourceError. After that, a failed read closes the capture and the thread reopens it
    with backoff (`backoff_delay`) until it works or the source is closed; `on_event` (set by the
    frame feeder) hears "lost" once per outage and "restored" when frames flow again.

    `pause()` makes the source idle: the reader releases the capture and waits, so nothing is read
    or decoded; `resume()` has it opened again (a failing reopen is an outage like any other).
    """

    live = True

    def __init__(self, target: int | str, description: str, *, opener: Opener | None = None,
                 reconnect_initial_s: float = RECONNECT_INITIAL_S, reconnect_max_s: float = RECONNECT_MAX_S) -> None:
        self.target = target
        self.description = description
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self._opener = opener or _open_live_capture
        self._capture: cv2.VideoCapture | None = self._opener(target, description)
        self.on_event: Callable[[SourceEvent], None] | None = None
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._frame: np.ndarray | None = None
        self._frame_at = 0.0
        self._fresh = False
        self._paused = False
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None
        self.connected = True
        self.last_captured_at: float | None = None  # monotonic time the last frame handed out was read
        self.frames_captured = 0
        self.frames_skipped = 0  # captured, then replaced by a newer frame before anyone read it
        self.outages = 0
        self.reconnect_attempts = 0
        self.opens = 1  # successful opens: the first, one per resume, one per reconnect
        self.pauses = 0  # times the reader released the capture for a pause

    # ---- consumer side (the frame feeder's thread) ----
    def read(self) -> np.ndarray | None:
        """The newest frame not handed out yet; waits for one (also through an outage or a pause).

        Returns None once the source is closed or interrupted; raises SourceError if the reader failed."""
        self._start_reader()
        with self._cond:
            self._cond.wait_for(lambda: (self._fresh and not self._paused) or self._closed.is_set())
            if self._failure is not None:
                raise SourceError(f"{self.description}: reader failed ({self._failure})")
            if self._closed.is_set():
                return None
            self._fresh = False
            self.last_captured_at = self._frame_at
            frame, self._frame = self._frame, None
            return frame

    def pause(self) -> None:
        """Stop reading: the reader releases the device or stream until `resume()`, so a paused
        source neither decodes nor holds a connection that fills with stale frames."""
        with self._cond:
            self._paused = True
            self._cond.notify_all()
        self._start_reader()  # the reader owns the capture: it is the one that releases it

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._drop_unread()  # a frame from before the pause is stale
            self._cond.notify_all()

    def interrupt(self) -> None:
        """Wake a blocked `read()` (it returns None) and stop the reader; `close()` releases."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.interrupt()
        with self._cond:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(READER_JOIN_TIMEOUT_S)
            if thread.is_alive():
                # Releasing a capture while another thread reads it can crash OpenCV; the reader
                # releases it itself when its blocked call returns (bounded by the read/open timeouts).
                log.warning("%s: reader still blocked in a read; it will release the device when the "
                            "read returns", self.description)
                return
        if thread is None and self._capture is not None:
            self._capture.release()
            self._capture = None
        log.info("closed %s", self.description)

    # ---- the reader thread ----
    def _start_reader(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="live-source-reader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                if self._is_paused():
                    self._idle_while_paused()
                elif self._capture is None:  # resumed after a pause
                    if not self._open_after_pause() and not self._closed.is_set():
                        self._reconnect()
                elif not self._read_one():
                    if self._closed.is_set():
                        return
                    self._reconnect()
        except Exception as exc:  # noqa: BLE001 - a reader crash must surface as a source failure
            log.exception("%s: reader thread failed", self.description)
            with self._cond:
                self._failure = exc
                self._closed.set()
                self._cond.notify_all()
        finally:
            self._release()

    def _is_paused(self) -> bool:
        with self._cond:
            return self._paused

    def _wait_unpaused(self) -> bool:
        """Block while paused; False once the source is closed."""
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or self._closed.is_set())
        return not self._closed.is_set()

    def _idle_while_paused(self) -> None:
        if self._capture is not None:
            self._release()
            self.pauses += 1
            log.info("%s: paused; released until resumed", self.description)
        self._wait_unpaused()

    def _open_after_pause(self) -> bool:
        frame, failure = self._reopen()
        if frame is None:
            if not self._closed.is_set():
                log.warning("%s: cannot reopen after the pause (%s)", self.description, failure)
            return False
        log.info("%s: reopened after the pause", self.description)
        self._store(frame)
        return True

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            capture.release()

    def _read_one(self) -> bool:
        capture = self._capture
        assert capture is not None
        ok, frame = capture.read()
        if not ok or frame is None:
            return False
        self._store(frame)
        return True

    def _store(self, frame: np.ndarray) -> None:
        now = time.monotonic()
        with self._cond:
            if self._fresh:
                self.frames_skipped += 1
            self._frame, self._frame_at, self._fresh = frame, now, True
            self.frames_captured += 1
            self._cond.notify_all()

    def _drop_unread(self) -> None:
        """Forget the frame nobody read (caller holds `_cond`); it counts as skipped."""
        if self._fresh:
            self.frames_skipped += 1
        self._fresh, self._frame = False, None

    def _reconnect(self) -> None:
        """Close the dead capture and reopen it with backoff; returns when reopened or closed.
        No attempt is made while the source is paused."""
        self._release()
        with self._cond:
            self._drop_unread()  # by the end of the outage it would be stale
        self.connected = False
        self.outages += 1
        lost_at = time.monotonic()
        attempt = 0
        delay = backoff_delay(attempt, self.reconnect_initial_s, self.reconnect_max_s)
        log.warning("%s: no frame (disconnected or stream ended); reconnecting in %.1f s", self.description, delay)
        self._announce(SourceEvent(SourceEventKind.LOST, f"{self.description}: no frame (device disconnected or "
                                   "stream ended); reconnecting with backoff", {"retry_in_s": delay}))
        first_frame = None
        while not self._closed.wait(delay) and self._wait_unpaused():
            attempt += 1
            self.reconnect_attempts += 1
            first_frame, failure = self._reopen()
            if first_frame is not None:
                break
            delay = backoff_delay(attempt, self.reconnect_initial_s, self.reconnect_max_s)
            log.info("%s: reconnect attempt %d failed (%s); next in %.1f s", self.description, attempt, failure,
                     delay)
        if first_frame is None:
            return  # closed during the outage
        self.connected = True
        outage = time.monotonic() - lost_at
        log.info("%s: reconnected after %.1f s (%d attempts)", self.description, outage, attempt)
        self._announce(SourceEvent(SourceEventKind.RESTORED,
                                   f"{self.description}: frames flowing again after {outage:.1f} s",
                                   {"outage_s": round(outage, 2), "attempts": attempt}))
        self._store(first_frame)  # after the announcement, so no result of the new connection precedes it

    def _reopen(self) -> tuple[np.ndarray | None, str]:
        """Open the source again and read one frame: (the frame, "") or (None, why not).

        Counting a reconnect only once a frame arrives keeps a device that opens but delivers
        nothing from flapping between lost and restored."""
        try:
            capture = self._opener(self.target, self.description)
        except SourceError as exc:
            return None, str(exc)
        if self._closed.is_set():
            capture.release()
            return None, "closed"
        ok, frame = capture.read()
        if ok and frame is not None:
            self._capture = capture
            self.opens += 1
            return frame, ""
        capture.release()
        return None, "opened, but no frame came"

    def _announce(self, event: SourceEvent) -> None:
        callback = self.on_event
        if callback is None:
            return
        try:
            callback(event)
        except Exception:  # noqa: BLE001 - a listener must not stop the reconnect loop
            log.exception("source event listener failed")


# Kept for callers that know the old name.
CaptureSource = LiveSource


def _open_capture(target: int | str, description: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(target)
    return _checked(capture, target, description)


def _open_live_capture(target: int | str, description: str) -> cv2.VideoCapture:
    """Cameras through OpenCV's default backend; streams through FFmpeg with open/read timeouts, so
    a stream that hangs is detected as lost instead of blocking the reader for minutes."""
    if isinstance(target, str) and cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(STREAM_OPEN_TIMEOUT_S * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(STREAM_READ_TIMEOUT_S * 1000)]
        capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    else:
        capture = cv2.VideoCapture(target)
    return _checked(capture, target, description)


def _checked(capture: cv2.VideoCapture, target: int | str, description: str) -> cv2.VideoCapture:
    if not capture.isOpened():
        capture.release()
        hint = (" (is the camera connected, and is the component's user in the 'video' group?)"
                if isinstance(target, int) else "")
        raise SourceError(f"cannot open {description}{hint}")
    return capture


# ---- Jetson CSI cameras (camera_id "csi://N?width=..&height=..&framerate=..&flip=..") ----

CSI_MAX_SENSOR_ID = 255  # nvarguscamerasrc's sensor-id range
# option → (default, lowest, highest)
CSI_OPTIONS: dict[str, tuple[int, int, int]] = {
    "width": (1280, 16, 8192),
    "height": (720, 16, 8192),
    "framerate": (30, 1, 240),
    # nvvidconv flip-method: 0 none, 1 90° counter-clockwise, 2 180°, 3 90° clockwise, 4 horizontal flip,
    # 5 upper-right diagonal, 6 vertical flip, 7 upper-left diagonal
    "flip": (0, 0, 7),
}


@dataclass(frozen=True)
class CsiCamera:
    """A CSI camera on a Jetson, read through NVIDIA's Argus (nvarguscamerasrc) and GStreamer."""

    sensor_id: int = 0
    width: int = CSI_OPTIONS["width"][0]
    height: int = CSI_OPTIONS["height"][0]
    framerate: int = CSI_OPTIONS["framerate"][0]
    flip: int = CSI_OPTIONS["flip"][0]

    @classmethod
    def parse(cls, camera_id: str) -> CsiCamera:
        """`csi://0`, `csi://1?width=1920&height=1080&framerate=30&flip=2`; SourceError names a bad part."""
        parts = urlsplit(camera_id)
        if parts.path or parts.fragment:
            raise SourceError(f"camera_id {camera_id!r}: expected csi://SENSOR_ID?option=value&... (options: "
                              f"{', '.join(CSI_OPTIONS)}), nothing after the sensor id but the options")
        sensor_id = _bounded_int(camera_id, "sensor id (after csi://)", parts.netloc, 0, CSI_MAX_SENSOR_ID)
        values: dict[str, int] = {}
        for key, text in parse_qsl(parts.query, keep_blank_values=True):
            if key not in CSI_OPTIONS:
                raise SourceError(f"camera_id {camera_id!r}: unknown option {key!r} (csi:// takes "
                                  f"{', '.join(CSI_OPTIONS)})")
            if key in values:
                raise SourceError(f"camera_id {camera_id!r}: option {key!r} is given twice")
            _, lowest, highest = CSI_OPTIONS[key]
            values[key] = _bounded_int(camera_id, key, text, lowest, highest)
        return cls(sensor_id, **values)

    @property
    def description(self) -> str:
        flip = f", flip-method {self.flip}" if self.flip else ""
        return f"CSI camera {self.sensor_id} ({self.width}x{self.height} at {self.framerate} FPS{flip})"

    def pipeline(self) -> str:
        """The GStreamer pipeline for cv2.VideoCapture(..., cv2.CAP_GSTREAMER): the sensor's NV12 frames
        in NVMM memory, converted by nvvidconv (hardware) to BGRx, then to the BGR OpenCV needs; the
        appsink keeps only the newest frame."""
        return (f"nvarguscamerasrc sensor-id={self.sensor_id} ! "
                f"video/x-raw(memory:NVMM),width={self.width},height={self.height},format=NV12,"
                f"framerate={self.framerate}/1 ! "
                f"nvvidconv flip-method={self.flip} ! video/x-raw,format=BGRx ! "
                "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")


def _bounded_int(camera_id: str, name: str, text: str, lowest: int, highest: int) -> int:
    value = int(text) if text.isascii() and text.isdigit() else None
    if value is None or not lowest <= value <= highest:
        raise SourceError(f"camera_id {camera_id!r}: {name} {text!r} must be a whole number from {lowest} "
                          f"to {highest}")
    return value


def opencv_build_line(name: str) -> str:
    """The line of cv2.getBuildInformation() about `name` (e.g. "GStreamer: NO"), or "" if none."""
    for line in cv2.getBuildInformation().splitlines():
        label, _, value = line.strip().partition(":")
        if label.strip() == name:
            return f"{name}: {value.strip()}"
    return ""


def opencv_has_gstreamer() -> bool:
    """Whether this cv2 can open GStreamer pipelines (built in, or as a plugin that loads)."""
    registry = getattr(cv2, "videoio_registry", None)
    if registry is not None:
        return bool(registry.hasBackend(cv2.CAP_GSTREAMER))
    return opencv_build_line("GStreamer").split(":")[-1].strip().upper().startswith("YES")


def no_gstreamer_message(description: str) -> str:
    build = opencv_build_line("GStreamer") or "no GStreamer line"
    return (f"cannot open {description}: this OpenCV ({cv2.__version__} from {cv2.__file__}) has no GStreamer "
            f"support (cv2.getBuildInformation(): {build}), and CSI cameras are read through GStreamer. On a "
            "Jetson use JetPack's OpenCV, which has it: the component's venv sees the system packages, so remove "
            "pip's OpenCV from the venv (run the venv's pip: pip uninstall -y opencv-python "
            "opencv-python-headless) and check that python3 -c \"import cv2; print(cv2.getBuildInformation())\" "
            "shows GStreamer: YES")


def _open_gstreamer(target: int | str, description: str,
                    has_gstreamer: Callable[[], bool] | None = None) -> cv2.VideoCapture:
    if not (has_gstreamer or opencv_has_gstreamer)():
        raise SourceError(no_gstreamer_message(description))
    capture = cv2.VideoCapture(str(target), cv2.CAP_GSTREAMER)
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"cannot open {description} (GStreamer pipeline: {target}): is the camera connected and "
                          "nvargus-daemon running (sudo systemctl restart nvargus-daemon), and is the component's "
                          "user in the 'video' group? Try the camera by hand: gst-launch-1.0 nvarguscamerasrc "
                          "num-buffers=30 ! fakesink")
    return capture


def open_csi_camera(camera_id: str, has_gstreamer: Callable[[], bool] | None = None) -> LiveSource:
    """A live source for `csi://...`; SourceError for bad options, a cv2 without GStreamer, or no camera."""
    camera = CsiCamera.parse(camera_id)

    def opener(target: int | str, description: str) -> cv2.VideoCapture:
        return _open_gstreamer(target, description, has_gstreamer)

    return LiveSource(camera.pipeline(), camera.description, opener=opener)


def describe(camera_id: str) -> str:
    if camera_id.isdigit():
        return f"camera {camera_id}"
    return camera_id


def open_source(camera_id: str, loop: bool = False) -> FrameSource:
    """Open the source `camera_id` names; raises SourceError with the reason."""
    if camera_id.isdigit():
        return LiveSource(int(camera_id), f"camera index {camera_id}")
    if camera_id.lower().startswith(CSI_SCHEME):
        return open_csi_camera(camera_id)
    if camera_id.lower().startswith(STREAM_SCHEMES):
        return LiveSource(camera_id, f"stream {camera_id}")
    path = Path(camera_id).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, loop)
    if path.is_file():
        return VideoFileSource(path, loop)
    raise SourceError(f"camera_id {camera_id!r}: no such file or folder, and not a camera index, csi:// camera "
                      "or stream URL")
