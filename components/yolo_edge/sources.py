"""Frame sources behind one interface: `read()` returns a BGR frame, or None at the end.

`camera_id` picks the kind: digits → camera index; rtsp://, http(s)://, udp:// … → network stream;
a folder → its images in sorted order; anything else → a video file. Files and folders lose no
frame; live sources (cameras, streams) are marked `live` so the feeder keeps only the newest frame.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtmp://")


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names it and says why."""


class FrameSource(Protocol):
    description: str
    live: bool

    def read(self) -> np.ndarray | None:
        """Next BGR frame, or None when a finite source has ended."""

    def close(self) -> None: ...


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
            log.warning("skipping unreadable image %s (%d skipped so far)", path, self.skipped)
            if self.skipped >= len(self.files) and not any(cv2.haveImageReader(str(p)) for p in self.files):
                raise SourceError(f"camera_id {self.description!r}: none of the images can be read")

    def close(self) -> None:
        pass


class CaptureSource:
    """A camera index or a network stream, read with OpenCV."""

    live = True

    def __init__(self, target: int | str, description: str) -> None:
        self.target = target
        self.description = description
        self._capture = _open_capture(target, description)

    def read(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        if not ok:
            raise SourceError(f"{self.description}: no frame (device disconnected or stream ended)")
        return frame

    def close(self) -> None:
        self._capture.release()


def _open_capture(target: int | str, description: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(target)
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
        return CaptureSource(int(camera_id), f"camera index {camera_id}")
    if camera_id.lower().startswith(STREAM_SCHEMES):
        return CaptureSource(camera_id, f"stream {camera_id}")
    path = Path(camera_id).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, loop)
    if path.is_file():
        return VideoFileSource(path, loop)
    raise SourceError(f"camera_id {camera_id!r}: no such file or folder, and not a camera index or stream URL")
