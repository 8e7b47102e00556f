"""Sample material made on the spot: Ultralytics' packaged images and videos panned over them."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

SAMPLE_IMAGES_VARIABLE = "YOLO_EDGE_SAMPLE_IMAGES"


def packaged_images() -> list[Path]:
    """Ultralytics' packaged real images (bus.jpg, zidane.jpg), found without importing it; [] without it.

    $YOLO_EDGE_SAMPLE_IMAGES, a folder of .jpg files, stands in for them where Ultralytics is not installed
    (the runtime test subset on a device's Python)."""
    override = os.environ.get(SAMPLE_IMAGES_VARIABLE)
    if override:
        return sorted(Path(override).glob("*.jpg"))
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.origin:
        return []
    return sorted((Path(spec.origin).parent / "assets").glob("*.jpg"))


def make_video(path: Path, frames: int, size: tuple[int, int] = (480, 640), fps: float = 30.0,
               pan_frames: int = 30, zoom: float = 1.25) -> Path:
    """A real MJPG video: a window panning over each packaged image for `pan_frames` frames (zoomed
    by `zoom` so there is room to pan), or a moving disc when there are no packaged images."""
    h, w = size
    images = [image for image in (cv2.imread(str(p)) for p in packaged_images()) if image is not None]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write the video {path}")
    for i in range(frames):
        if images:
            image = images[(i // pan_frames) % len(images)]
            scale = max(h / image.shape[0], w / image.shape[1]) * zoom
            big = cv2.resize(image, None, fx=scale, fy=scale)
            dx = int((big.shape[1] - w) * (i % pan_frames) / pan_frames)
            frame = np.ascontiguousarray(big[:h, dx:dx + w])
        else:
            frame = np.full((h, w, 3), 90, np.uint8)
            cv2.circle(frame, (40 + (i * 9) % (w - 80), h // 2), 40, (0, 200, 255), -1)
        writer.write(frame)
    writer.release()
    return path
