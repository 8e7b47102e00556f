"""Jetson CSI cameras: `camera_id: "csi://N?..."` becomes an nvarguscamerasrc GStreamer pipeline.

What runs here: option parsing and the pipeline string, the real cv2's answer when it has no GStreamer
(pip's wheels are built without it), the component's error for it, and the CSI source riding on the
live-source machinery. Only the Argus camera itself cannot run here: where a test needs frames, a
GStreamer capture that reads a real MJPEG stream on 127.0.0.1 stands in for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import pytest
from harness import is_type, running_controller, wait_until
from mjpeg_server import MjpegServer

from yolo_edge.config import Config
from yolo_edge.sources import (
    CsiCamera,
    LiveSource,
    SourceError,
    SourceEvent,
    open_csi_camera,
    open_source,
    opencv_build_line,
    opencv_has_gstreamer,
)

pytestmark = pytest.mark.runtime

DEFAULT_PIPELINE = ("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,format=NV12,"
                    "framerate=30/1 ! nvvidconv flip-method=0 ! video/x-raw,format=BGRx ! videoconvert ! "
                    "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")


def test_csi_zero_is_sensor_0_at_720p30():
    camera = CsiCamera.parse("csi://0")
    assert camera == CsiCamera(sensor_id=0, width=1280, height=720, framerate=30, flip=0)
    assert camera.pipeline() == DEFAULT_PIPELINE
    assert camera.description == "CSI camera 0 (1280x720 at 30 FPS)"


def test_options_go_into_the_pipeline():
    camera = CsiCamera.parse("csi://1?width=1920&height=1080&framerate=60&flip=2")
    assert camera.pipeline() == (
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080,format=NV12,"
        "framerate=60/1 ! nvvidconv flip-method=2 ! video/x-raw,format=BGRx ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink drop=1 max-buffers=1")
    assert camera.description == "CSI camera 1 (1920x1080 at 60 FPS, flip-method 2)"
    assert CsiCamera.parse("CSI://0?framerate=15").framerate == 15  # scheme in any case, options optional


@pytest.mark.parametrize(("camera_id", "message"), [
    ("csi://x", "sensor id (after csi://) 'x' must be a whole number from 0 to 255"),
    ("csi://", "sensor id (after csi://) '' must be a whole number from 0 to 255"),
    ("csi://256", "sensor id (after csi://) '256' must be a whole number from 0 to 255"),
    ("csi://0?fps=30", "unknown option 'fps' (csi:// takes width, height, framerate, flip)"),
    ("csi://0?width=wide", "width 'wide' must be a whole number from 16 to 8192"),
    ("csi://0?width=", "width '' must be a whole number from 16 to 8192"),
    ("csi://0?height=-720", "height '-720' must be a whole number from 16 to 8192"),
    ("csi://0?framerate=29.97", "framerate '29.97' must be a whole number from 1 to 240"),
    ("csi://0?framerate=0", "framerate '0' must be a whole number from 1 to 240"),
    ("csi://0?flip=8", "flip '8' must be a whole number from 0 to 7"),
    ("csi://0?width=640&width=320", "option 'width' is given twice"),
    ("csi://0/video", "expected csi://SENSOR_ID?option=value&..."),
])
def test_bad_options_name_the_option_and_the_value(camera_id, message):
    with pytest.raises(SourceError) as error:
        CsiCamera.parse(camera_id)
    assert str(error.value).startswith(f"camera_id {camera_id!r}: {message}")
    with pytest.raises(SourceError, match="camera_id"):
        open_source(camera_id)  # checked before anything is opened


def no_gstreamer_source(camera_id: str) -> Any:
    """Open `camera_id` with this machine's cv2 if it lacks GStreamer (pip's wheels do); where it has
    GStreamer, the capability check is the one thing replaced."""
    if opencv_has_gstreamer():
        return open_csi_camera(camera_id, has_gstreamer=lambda: False)
    return open_source(camera_id)


def test_an_opencv_without_gstreamer_says_so_and_how_to_fix_it():
    if not opencv_has_gstreamer():  # the real answer of this cv2 (pip's wheels)
        assert "GStreamer: NO" in " ".join(cv2.getBuildInformation().split())
    with pytest.raises(SourceError) as error:
        no_gstreamer_source("csi://0?width=1920&height=1080")
    message = str(error.value)
    assert message.startswith("cannot open CSI camera 0 (1920x1080 at 30 FPS): this OpenCV")
    assert cv2.__version__ in message and cv2.__file__ in message  # which cv2 the venv picked
    assert "no GStreamer support" in message
    assert f"(cv2.getBuildInformation(): {opencv_build_line('GStreamer')})" in message
    assert "JetPack's OpenCV" in message and "pip uninstall -y opencv-python opencv-python-headless" in message


def test_a_missing_camera_with_gstreamer_names_the_pipeline_and_what_to_check():
    # This cv2 is told it has GStreamer; opening the pipeline then fails for real (no Argus here).
    with pytest.raises(SourceError) as error:
        open_csi_camera("csi://3", has_gstreamer=lambda: True)
    message = str(error.value)
    assert message.startswith("cannot open CSI camera 3 (1280x720 at 30 FPS) (GStreamer pipeline: "
                              "nvarguscamerasrc sensor-id=3 ! ")
    assert "nvargus-daemon" in message and "'video' group" in message and "gst-launch-1.0" in message


# ---------------------------------------------------------------------------------------------
# The component
# ---------------------------------------------------------------------------------------------

def no_gstreamer_factory(camera_id: str, _loop: bool) -> Any:
    return no_gstreamer_source(camera_id)


def test_start_on_a_csi_camera_without_gstreamer_is_a_source_open_failed_error(model):
    config = Config.from_mapping({"model_loc": str(model), "camera_id": "csi://0", "MODEL_HEIGHT": 320,
                                  "MODEL_WIDTH": 320})
    with running_controller(config, source_factory=no_gstreamer_factory) as (controller, collector):
        collector.wait_for(is_type("status", event="model_loaded"))
        controller.submit_command(b'{"status": "start", "request_id": "go"}')
        error = collector.wait_for(is_type("error", code="source_open_failed"))
        assert error["request_id"] == "go" and error["camera_id"] == "csi://0"
        assert "no GStreamer support" in error["message"] and "pip uninstall" in error["message"]
        assert controller.state.value == "idle"


def test_bad_csi_options_at_start_name_the_option(model):
    config = Config.from_mapping({"model_loc": str(model), "camera_id": "csi://0?fps=30", "MODEL_HEIGHT": 320,
                                  "MODEL_WIDTH": 320})
    with running_controller(config) as (controller, collector):
        controller.submit_command(b'{"status": "start"}')
        error = collector.wait_for(is_type("error", code="source_open_failed"))
        assert error["message"] == ("camera_id 'csi://0?fps=30': unknown option 'fps' (csi:// takes width, "
                                    "height, framerate, flip)")
        assert controller.state.value == "idle"


# ---------------------------------------------------------------------------------------------
# A CSI camera is a live source: newest frame, released while paused, reconnected after a loss
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def stream() -> Iterator[MjpegServer]:
    server = MjpegServer(fps=30, size=(240, 320)).start()
    yield server
    server.stop()


def test_a_csi_camera_is_a_live_source_that_pauses_and_reconnects(monkeypatch, stream):
    pipelines: list[str] = []
    real_capture = cv2.VideoCapture

    def argus_stand_in(target: str, api: int) -> cv2.VideoCapture:
        assert api == cv2.CAP_GSTREAMER, "a CSI pipeline is opened with the GStreamer backend"
        pipelines.append(target)
        return real_capture(stream.url)

    monkeypatch.setattr(cv2, "VideoCapture", argus_stand_in)
    source = open_csi_camera("csi://0?width=320&height=240", has_gstreamer=lambda: True)
    events: list[SourceEvent] = []
    source.on_event = events.append
    source.reconnect_initial_s = 0.1
    try:
        assert isinstance(source, LiveSource) and source.live
        assert source.description == "CSI camera 0 (320x240 at 30 FPS)"
        frame = source.read()
        assert frame is not None and frame.shape == (240, 320, 3)

        source.pause()
        wait_until(lambda: stream.open_clients() == 0, 5, "the paused camera to be released")
        source.resume()
        assert source.read() is not None

        stream.stop()
        wait_until(lambda: [e.kind for e in events] == ["lost"], 10, "the loss to be reported")
        stream.start()
        assert source.read() is not None  # waits through the outage
        assert [e.kind for e in events] == ["lost", "restored"]
    finally:
        source.close()
    expected = CsiCamera(width=320, height=240).pipeline()
    assert len(pipelines) >= 3 and set(pipelines) == {expected}  # first open, after the pause, after the loss
