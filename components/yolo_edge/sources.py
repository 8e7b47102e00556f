"""Frame sources behind one interface: `read()` returns a BGR frame, or None at the end.

`camera_id` picks the kind: digits → camera index; rtsp://, http(s)://, udp:// … → network stream;
a folder → its images in sorted order; anything else → a video file.

Files and folders lose no frame: `read()` returns every frame in order. Live sources (cameras,
streams) are read by their own thread, which keeps only the newest frame: `read()` hands out the
latest frame not handed out before, and frames that were overwritten unread are counted in
`frames_skipped`. When a live source stops delivering, the thread closes it and reopens it with
capped exponential backoff, reporting `SourceEvent`s ("lost", "restored") to `on_event`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Union

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")

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


class FrameSource(Protocol):
    description: str
    live: bool

    def read(self) -> np.ndarray | None:
        """Next BGR frame, or None when a finite source has ended (or a live one was closed)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceEvent:
    """A change in a live source's connection: kind is "lost" or "restored"."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def backoff_delay(attempt: int, initial: float = RECONNECT_INITIAL_S, maximum: float = RECONNECT_MAX_S) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0-based): initial, 2×, 4× … capped."""
    return min(initial * (2.0 ** min(attempt, 64)), maximum)


class VideoFileSource:
    live = False

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


class ImageFolderSource:
    live = False

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

    # ---- consumer side (the frame feeder's thread) ----
    def read(self) -> np.ndarray | None:
        """The newest frame not handed out yet; waits for one (also through an outage).

        Returns None once the source is closed or interrupted; raises SourceError if the reader failed."""
        self._start_reader()
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._closed.is_set())
            if self._failure is not None:
                raise SourceError(f"{self.description}: reader failed ({self._failure})")
            if self._closed.is_set():
                return None
            self._fresh = False
            self.last_captured_at = self._frame_at
            frame, self._frame = self._frame, None
            return frame

    def pause(self) -> None:
        """Keep the connection and drain the device, but stop decoding frames nobody will use."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._fresh = False  # a frame from before the pause is stale
            self._frame = None

    def interrupt(self) -> None:
        """Wake a blocked `read()` (it returns None) and stop the reader; `close()` releases."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self.interrupt()
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
        if self._thread is None and not self._closed.is_set():
            self._thread = threading.Thread(target=self._run, name="live-source-reader", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._closed.is_set():
                if self._read_one():
                    continue
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
            if self._capture is not None:
                self._capture.release()
                self._capture = None

    def _read_one(self) -> bool:
        capture = self._capture
        assert capture is not None
        with self._cond:
            paused = self._paused
        if paused:
            return bool(capture.grab())
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

    def _reconnect(self) -> None:
        """Close the dead capture and reopen it with backoff; returns when reopened or closed."""
        assert self._capture is not None
        self._capture.release()
        self._capture = None
        with self._cond:
            if self._fresh:  # by the end of the outage it would be stale
                self.frames_skipped += 1
                self._fresh, self._frame = False, None
        self.connected = False
        self.outages += 1
        lost_at = time.monotonic()
        attempt = 0
        delay = backoff_delay(attempt, self.reconnect_initial_s, self.reconnect_max_s)
        log.warning("%s: no frame (disconnected or stream ended); reconnecting in %.1f s", self.description, delay)
        self._announce(SourceEvent("lost", f"{self.description}: no frame (device disconnected or stream "
                                   f"ended); reconnecting with backoff", {"retry_in_s": delay}))
        first_frame = None
        while not self._closed.wait(delay):
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
        self._announce(SourceEvent("restored", f"{self.description}: frames flowing again after {outage:.1f} s",
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


def describe(camera_id: str) -> str:
    if camera_id.isdigit():
        return f"camera {camera_id}"
    return camera_id


def open_source(camera_id: str, loop: bool = False) -> FrameSource:
    """Open the source `camera_id` names; raises SourceError with the reason."""
    if camera_id.isdigit():
        return LiveSource(int(camera_id), f"camera index {camera_id}")
    if camera_id.lower().startswith(STREAM_SCHEMES):
        return LiveSource(camera_id, f"stream {camera_id}")
    path = Path(camera_id).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, loop)
    if path.is_file():
        return VideoFileSource(path, loop)
    raise SourceError(f"camera_id {camera_id!r}: no such file or folder, and not a camera index or stream URL")
