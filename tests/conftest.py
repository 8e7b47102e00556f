"""Shared test fixtures: random-weights models exported for real, a real Mosquitto, real videos, and the
MQTT operator of the harness (tests/harness.py) on that Mosquitto."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import MODEL_SIZE, Operator

from yolo_edge_tools import samples
from yolo_edge_tools.local_broker import LocalBroker
from yolo_edge_tools.samples import packaged_images

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

MODEL_CACHE = Path(os.environ.get("YOLO_EDGE_TEST_CACHE", Path.home() / ".cache" / "yolo-edge-tests"))
# The runtime subset runs on a device's Python (3.8, 3.10) without Ultralytics: it takes the models and
# Ultralytics' images that a run with Ultralytics left in the cache (.ci/run runs the full suite first).
HAVE_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None
CACHED_IMAGES = MODEL_CACHE / "images"
NEEDS_FULL_RUN = "run the full test suite with Ultralytics installed first (.ci/run does): it fills " + str(MODEL_CACHE)


def _share_packaged_images() -> None:
    if HAVE_ULTRALYTICS:
        images = packaged_images()
        if images and not all((CACHED_IMAGES / image.name).exists() for image in images):
            CACHED_IMAGES.mkdir(parents=True, exist_ok=True)
            for image in images:
                shutil.copyfile(image, CACHED_IMAGES / image.name)
    elif CACHED_IMAGES.is_dir():
        os.environ.setdefault(samples.SAMPLE_IMAGES_VARIABLE, str(CACHED_IMAGES))


_share_packaged_images()


def asset_images() -> list[Path]:
    """Ultralytics' packaged real images (bus.jpg, zidane.jpg)."""
    images = packaged_images()
    assert images, "Ultralytics' packaged images are needed: " + NEEDS_FULL_RUN
    return images


def _format_key(fmt: str, dynamic: bool) -> str:
    """The format part of a cache key: a dynamic export is its own recipe; a fixed one keeps the key it
    always had, so models already cached are reused."""
    return f"{fmt}-dynamic" if dynamic else fmt


def _cached_model(task: str, size: str, fmt: str, class_bias: float | None, dynamic: bool = False) -> Path:
    """The newest cached model of this recipe, built by any Ultralytics version (device Pythons have none)."""
    pattern = f"v2-*-{task}-{size}-{_format_key(fmt, dynamic)}-{class_bias}/DONE"
    done = sorted(MODEL_CACHE.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not done:
        kind = f"{fmt} (dynamic)" if dynamic else fmt
        pytest.fail(f"no cached {task} {size} {kind} model and no Ultralytics to build one: {NEEDS_FULL_RUN}")
    return Path(done[-1].read_text().strip())


def make_video(path: Path, frames: int = 30, size: tuple[int, int] = (480, 640), fps: float = 30.0) -> Path:
    """A real MJPG .avi made with OpenCV: a window sliding over the packaged images, 10 frames each."""
    assert asset_images()
    return samples.make_video(path, frames, size, fps, pan_frames=10, zoom=1.2)


@pytest.fixture(scope="session")
def random_model() -> Callable[..., Path]:
    """random_model(task="detect", imgsz=640, fmt="onnx", class_bias=-3.0, dynamic=False) -> cached model file.

    Models are built from Ultralytics' bundled YAMLs with random weights (fixed seed, batch-norm
    calibrated on real images so outputs depend on the image; see yolo_edge_tools.modelgen) and exported
    for real; they are cached across runs, keyed by the Ultralytics version and the recipe below.
    `dynamic` exports with a symbolic batch, height and width (batches of any size, other input sizes).
    """
    def get(task: str = "detect", imgsz: int | tuple[int, int] = 640, fmt: str = "onnx",
            class_bias: float | None = -3.0, dynamic: bool = False) -> Path:
        size = imgsz if isinstance(imgsz, int) else f"{imgsz[0]}x{imgsz[1]}"
        if not HAVE_ULTRALYTICS:
            return _cached_model(task, str(size), fmt, class_bias, dynamic)
        import ultralytics

        from yolo_edge_tools.modelgen import make_random_model

        key = f"v2-{ultralytics.__version__}-{task}-{size}-{_format_key(fmt, dynamic)}-{class_bias}"
        directory = MODEL_CACHE / key
        done = directory / "DONE"
        if done.exists():
            return Path(done.read_text().strip())
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        path = make_random_model(directory, task, imgsz if isinstance(imgsz, int) else tuple(imgsz), fmt,
                                 class_bias=class_bias, dynamic=dynamic)
        done.write_text(str(path))
        return path

    return get


@pytest.fixture(scope="session")
def model(random_model: Callable[..., Path]) -> Path:
    """The model the component tests run: detection, random weights, 320x320 ONNX."""
    return random_model("detect", MODEL_SIZE)


@pytest.fixture(scope="session")
def segment_model(random_model: Callable[..., Path]) -> Path:
    """Segmentation, random weights, 320x320 ONNX."""
    return random_model("segment", MODEL_SIZE, "onnx")


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "sample.avi", frames=30)


class Broker(LocalBroker):
    """A real Mosquitto on 127.0.0.1 for one test; can be stopped and restarted on the same port."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    instance = Broker(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def operator(broker: Broker) -> Iterator[Operator]:
    """An MQTT operator on `broker` (see harness.Operator), on the harness's topics; closed after the test."""
    instance = Operator(broker.port)
    yield instance
    instance.close()
