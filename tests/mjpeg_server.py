"""A small MJPEG-over-HTTP camera on 127.0.0.1 for tests: frames drawn and JPEG-encoded with OpenCV.

`MjpegServer().start()` serves `http://127.0.0.1:PORT/stream.mjpg` (multipart/x-mixed-replace, one
JPEG per part, paced at `fps`). `stop()` closes the listening socket and every open client
connection, as a camera that goes off the network would; `start()` again serves on the same port.

Run it by hand to point the component at a network camera:
    python tests/mjpeg_server.py --port 8090 --fps 30
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = "yoloedgeframe"
PATH = "/stream.mjpg"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


INDEX_BITS = 16
INDEX_BAND = 20  # pixel rows at the top of each frame that carry the frame number in binary


def draw_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """A frame that changes every time: a moving disc, the frame number as text, and the frame
    number in binary as black/white blocks along the top (see `frame_index`)."""
    h, w = size
    frame = np.full((h, w, 3), 60, np.uint8)
    frame[:, :, 0] = np.linspace(40, 200, w, dtype=np.uint8)[None, :]
    x = 30 + (index * 7) % max(w - 60, 1)
    cv2.circle(frame, (x, h // 2), 25, (0, 180, 255), -1)
    cv2.putText(frame, str(index), (10, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    block = w // INDEX_BITS
    for bit in range(INDEX_BITS):
        frame[:INDEX_BAND, bit * block:(bit + 1) * block] = 255 if (index >> bit) & 1 else 0
    return frame


def frame_index(frame: np.ndarray) -> int:
    """The frame number `draw_frame` wrote into `frame` (survives JPEG compression)."""
    w = frame.shape[1]
    block = w // INDEX_BITS
    value = 0
    for bit in range(INDEX_BITS):
        patch = frame[4:INDEX_BAND - 4, bit * block + 3:(bit + 1) * block - 3]
        if patch.mean() > 127:
            value |= 1 << bit
    return value


class MjpegServer:
    def __init__(self, port: int = 0, fps: float = 30.0, size: tuple[int, int] = (240, 320)) -> None:
        self.port = port or free_port()
        self.fps = fps
        self.size = size
        self.frames_sent = 0
        self.last_index = -1  # frame number last written to a client (numbers restart per connection)
        self.connections = 0  # client connections accepted so far, over all starts
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def open_clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def start(self) -> MjpegServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"mjpeg-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every client off mid-stream."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):  # already gone
                client.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> MjpegServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base class name
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] != PATH:
                    self.send_error(404, f"only {PATH} is served")
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                with owner._lock:
                    owner._clients.add(self.connection)
                    owner.connections += 1
                try:
                    owner._stream(self.wfile)
                except OSError:
                    pass  # the client went away, or stop() cut it off
                finally:
                    with owner._lock:
                        owner._clients.discard(self.connection)

        return Handler

    def _stream(self, out) -> None:
        interval = 1.0 / self.fps
        next_at = time.monotonic()
        index = 0
        while not self._stopping.is_set():
            ok, jpeg = cv2.imencode(".jpg", draw_frame(index, self.size), [cv2.IMWRITE_JPEG_QUALITY, 80])
            assert ok
            data = jpeg.tobytes()
            out.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                      .encode() + data + b"\r\n")
            out.flush()
            with self._lock:
                self.frames_sent += 1
                self.last_index = index
            index += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)
            else:
                next_at = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a synthetic MJPEG camera over HTTP on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    with MjpegServer(args.port, args.fps) as server:
        print(f"serving {server.url} at {args.fps:g} FPS; Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
