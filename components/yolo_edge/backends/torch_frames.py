"""The PyTorch device frame path: letterbox, inference and (optionally) decoding on the model's device.

Used by the PyTorch backend on a CUDA GPU, where the numpy path would spend more time moving and
converting pixels than the GPU spends on the network:

- the feeder thread copies each uint8 frame into a pinned host buffer (`stage`), resized there by
  OpenCV when the letterbox shrinks or grows it (as the numpy path does, so the GPU's input is
  bit-identical to it), the only CPU work per frame besides the source's own decoding;
- the inference thread copies it to the GPU (asynchronously, from pinned memory), letterboxes and
  normalises it there into a static input tensor (padding is written once per geometry), and runs
  the network as a CUDA graph captured once per input shape (one launch instead of hundreds);
- the head output is decoded either on the GPU (score threshold, class-aware NMS with torchvision,
  only the kept rows come back) or on the host by the shared numpy code: the first frames try both
  and the faster is kept (`decode_choice`), unless YOLO_EDGE_DEVICE_DECODE says which.

Every function here also runs on CPU tensors, which is how the tests prove it equal to the numpy path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, List, Tuple

import cv2
import numpy as np
import torch

from ..processing import CLASS_OFFSET, LETTERBOX_FILL, MAX_NMS_CANDIDATES, Letterbox
from .base import DeviceResult

log = logging.getLogger(__name__)

GRAPH_VARIABLE = "YOLO_EDGE_CUDA_GRAPH"  # "0" turns CUDA graph capture off
DECODE_VARIABLE = "YOLO_EDGE_DEVICE_DECODE"  # auto | device | host
DECODE_CHOICES = ("auto", "device", "host")
DECODE_TRIALS = 6  # frames per decode path before `auto` picks one
MAX_GRAPHS = 4  # input shapes with a captured graph kept at once (each holds its own activations)
GRAPH_WARMUP_RUNS = 3  # eager forwards before capture: cuDNN picks its kernels, lazy state is built

Forward = Callable[[], List[torch.Tensor]]
# (forward) -> (replay, outputs): runs `forward` once into graph-owned outputs that replay refreshes.
Capture = Callable[[Forward], Tuple[Callable[[], None], List[torch.Tensor]]]


# --- pure tensor functions ----------------------------------------------------------------------------

def fill_padding(out: torch.Tensor) -> torch.Tensor:
    """Fill a (1, 3, H, W) input with the letterbox grey, normalised as the numpy path does it."""
    return out.fill_(LETTERBOX_FILL).div_(255)


def letterbox_on_device(frame: torch.Tensor, geo: Letterbox, out: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 BGR frame, already at the letterbox's resized size (`stage` resizes it with OpenCV)
    -> its content written into `out` (1, 3, in_h, in_w): RGB in [0, 1].

    Only the content region is written; the padding around it is `fill_padding`'s and stays as it is
    while the geometry does.
    """
    new_h, new_w = geo.resized_shape
    if tuple(frame.shape[:2]) != (new_h, new_w):
        raise ValueError(f"a {frame.shape[0]}x{frame.shape[1]} frame for a {new_h}x{new_w} letterbox: "
                         "stage() resizes frames before they reach the device")
    top, left = geo.offset
    region = out[0, :, top:top + new_h, left:left + new_w]
    region.copy_(frame.permute(2, 0, 1).flip(0))  # HWC BGR -> CHW RGB
    region.div_(255)
    return out


def decode_on_device(prediction: torch.Tensor, num_classes: int, conf_threshold: float, iou_threshold: float,
                     max_det: int) -> torch.Tensor:
    """A YOLOv8-style head output (1, 4 + nc + nm, A) -> (k, 6 + nm) float32 rows, best first:
    x1, y1, x2, y2, score, class, mask coefficients - the end-to-end layout `processing` reads.

    The same decoding as processing.decode_detections (threshold on the best class score, at most
    MAX_NMS_CANDIDATES candidates, class-aware NMS with the same class offset, max_det kept), done
    where the tensor is.
    """
    import torchvision

    output = prediction[0].float()
    best, classes = output[4:4 + num_classes].max(0)
    candidates = torch.nonzero(best > conf_threshold).squeeze(1)  # the one host sync before NMS
    if candidates.numel() > MAX_NMS_CANDIDATES:
        candidates = candidates[best[candidates].argsort(descending=True, stable=True)[:MAX_NMS_CANDIDATES]]
    picked = output[:, candidates].T  # (n, 4 + nc + nm)
    scores = best[candidates]
    picked_classes = classes[candidates].float()
    xy, half_wh = picked[:, :2], picked[:, 2:4] / 2
    boxes = torch.cat((xy - half_wh, xy + half_wh), 1)
    keep = torchvision.ops.nms(boxes + picked_classes[:, None] * CLASS_OFFSET, scores, iou_threshold)[:max_det]
    return torch.cat((boxes[keep], scores[keep, None], picked_classes[keep, None], picked[keep, 4 + num_classes:]), 1)


def capture_cuda_graph(forward: Forward) -> tuple[Callable[[], None], list[torch.Tensor]]:
    """Capture `forward` (which reads a static input tensor) in a CUDA graph; (replay, its outputs)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP_RUNS):
            forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the feeder thread allocating pinned buffers meanwhile must not break the capture
    try:
        capturing = torch.cuda.graph(graph, capture_error_mode="thread_local")
    except TypeError:  # torch < 2.0 has no capture modes
        capturing = torch.cuda.graph(graph)
    with capturing:
        outputs = forward()
    return graph.replay, outputs


def plain_tensor_attributes(model: torch.nn.Module) -> list[torch.Tensor]:
    """Tensors modules keep as plain attributes, outside their parameters and buffers: Ultralytics'
    heads cache their anchors and strides per input shape this way. A graph replays reads of their
    memory, so a captured slot keeps them alive: another shape's forward replaces the attributes, and
    freed memory would be reused under the older graph."""
    return [value for module in model.modules() for value in vars(module).values() if isinstance(value, torch.Tensor)]


# --- the frame path -----------------------------------------------------------------------------------

@dataclass
class _InputSlot:
    """One input shape: its static input tensor and the forward that reads it."""

    input: torch.Tensor
    run: Callable[[], list[torch.Tensor]]
    geometry: Letterbox | None = None  # whose padding `input` holds
    keep_alive: list[torch.Tensor] = field(default_factory=list)  # memory the captured graph reads


@dataclass
class _DecodeChooser:
    """Tries each decode path on the first frames, then keeps the faster (median post-processing time)."""

    choice: str
    timings: dict[str, list[float]] = field(default_factory=lambda: {"device": [], "host": []})

    def next_path(self) -> str:
        if self.choice != "auto":
            return self.choice
        return min(self.timings, key=lambda path: len(self.timings[path]))

    def record(self, path: str, milliseconds: float) -> None:
        if self.choice != "auto":
            return
        self.timings[path].append(milliseconds)
        if all(len(times) >= DECODE_TRIALS for times in self.timings.values()):
            medians = {path: statistics.median(times) for path, times in self.timings.items()}
            self.choice = min(medians, key=lambda path: medians[path])
            log.info("decoding on the %s from now on: median post-processing %.3f ms with device decoding, "
                     "%.3f ms with host decoding", self.choice, medians["device"], medians["host"])


class DeviceFramePath:
    """Letterbox + forward + decode for one model on one device (see the module docstring).

    `stage` may run on another thread than `run`/`forward`; `run` and `forward` belong to one thread.
    `capture` turns a forward into a replayable graph (None: eager forwards, as on a CPU).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, num_classes: int,
                 capture: Capture | None = None, decode: str = "auto") -> None:
        if decode not in DECODE_CHOICES:
            raise ValueError(f"{DECODE_VARIABLE} is {decode!r}; expected one of {', '.join(DECODE_CHOICES)}")
        self.model = model
        self.device = device
        self.dtype = dtype
        self.num_classes = num_classes
        self._capture = capture
        self._cuda = device.type == "cuda"
        self._pin = self._cuda  # stage frames in page-locked memory so their copy to the GPU is asynchronous
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        self._slots: OrderedDict[tuple[int, int], _InputSlot] = OrderedDict()
        self._frame: torch.Tensor | None = None  # the device copy of the current frame
        self._host_outputs: dict[int, torch.Tensor] = {}
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(3)] if self._cuda else []
        self._chooser = _DecodeChooser(decode)
        self.graph_failures = 0

    @classmethod
    def for_model(cls, model: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                  num_classes: int) -> DeviceFramePath:
        """The path as the backend uses it: graphs on CUDA unless turned off, decode from the environment."""
        graphs = device.type == "cuda" and os.environ.get(GRAPH_VARIABLE, "1").strip() not in ("0", "false", "no")
        decode = os.environ.get(DECODE_VARIABLE, "auto").strip().lower() or "auto"
        return cls(model, device, dtype, num_classes, capture_cuda_graph if graphs else None, decode)

    @property
    def decode_choice(self) -> str:
        """'device', 'host', or 'auto' while the first frames still try both."""
        return self._chooser.choice

    @property
    def graphs(self) -> bool:
        return self._capture is not None

    # feeder thread ---------------------------------------------------------------------------------

    def stage(self, frame: np.ndarray, geometry: Letterbox, buffers: dict) -> torch.Tensor:
        """The (H, W, 3) uint8 frame at its letterboxed size in a reusable (pinned, on CUDA) host tensor
        from `buffers`. A frame that needs resizing is resized here, on the feeder thread, by OpenCV as
        the numpy path does it: the GPU then only pads and normalises, so its input is bit-identical
        to the host path's (a resize on the GPU differs by up to 1/255 per pixel, and that moves boxes),
        and a large camera frame crosses to the GPU already small."""
        new_h, new_w = geometry.resized_shape
        shape = (new_h, new_w, frame.shape[2])
        staged = buffers.get("staged")
        if staged is None or tuple(staged.shape) != shape:
            staged = self._host_frame(shape)
            buffers["staged"] = staged
        if (new_h, new_w) == frame.shape[:2]:
            np.copyto(staged.numpy(), frame, casting="no")
        else:
            cv2.resize(frame, (new_w, new_h), dst=staged.numpy(), interpolation=cv2.INTER_LINEAR)
        return staged

    def _host_frame(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self._pin:
            try:
                return torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            except RuntimeError as exc:  # page-locked memory is limited on some boards
                self._pin = False
                log.warning("cannot pin host memory for frames (%s); copying them to the GPU from pageable "
                            "memory (synchronously, a little slower)", exc)
        return torch.empty(shape, dtype=torch.uint8)

    # inference thread ------------------------------------------------------------------------------

    def run(self, staged: torch.Tensor, geo: Letterbox, conf_threshold: float, iou_threshold: float,
            max_det: int) -> DeviceResult:
        with self._on_stream(), torch.inference_mode():
            capture_start = time.perf_counter()
            slot = self._slot(geo.input_shape)  # captures a graph on a shape's first frame
            start = self._mark(0)
            capture_ms = (start - capture_start) * 1000
            frame = self._to_device(staged)
            if slot.geometry != geo:
                fill_padding(slot.input)
                slot.geometry = geo
            letterbox_on_device(frame, geo, slot.input)
            prepared = self._mark(1)
            outputs = slot.run()
            inferred = self._mark(2)
            path = self._chooser.next_path()
            if path == "device":
                rows = decode_on_device(outputs[0], self.num_classes, conf_threshold, iou_threshold, max_det)
                host = [self._to_host(rows)] + [self._to_host(o, i) for i, o in enumerate(outputs) if i]
            else:
                host = [self._to_host(o, i) for i, o in enumerate(outputs)]
            self._synchronize()
        done = time.perf_counter()
        if self._cuda:
            preprocess_ms = self._events[0].elapsed_time(self._events[1])
            inference_ms = self._events[1].elapsed_time(self._events[2])
        else:
            preprocess_ms, inference_ms = (prepared - start) * 1000, (inferred - prepared) * 1000
        postprocess_ms = max((done - start) * 1000 - preprocess_ms - inference_ms, 0.0)
        return DeviceResult([t.numpy() for t in host], path == "device", preprocess_ms,
                            inference_ms + capture_ms, postprocess_ms)

    def record_postprocess(self, decoded: bool, milliseconds: float) -> None:
        self._chooser.record("device" if decoded else "host", milliseconds)

    def forward(self, tensor: np.ndarray) -> list[np.ndarray]:
        """A prepared (1, 3, H, W) tensor through the (graphed) network; outputs as float32 numpy."""
        shape = (int(tensor.shape[2]), int(tensor.shape[3]))
        with self._on_stream(), torch.inference_mode():
            slot = self._slot(shape)
            slot.input.copy_(torch.from_numpy(np.ascontiguousarray(tensor)), non_blocking=False)
            slot.geometry = None
            host = [self._to_host(o, i) for i, o in enumerate(slot.run())]
            self._synchronize()
        return [t.numpy() for t in host]

    def close(self) -> None:
        self._slots.clear()
        self._host_outputs.clear()
        self._frame = None

    # helpers ---------------------------------------------------------------------------------------

    def _on_stream(self) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(self._stream) if self._cuda else contextlib.nullcontext()

    def _mark(self, index: int) -> float:
        if self._cuda:
            self._events[index].record()
        return time.perf_counter()

    def _synchronize(self) -> None:
        if self._stream is not None:  # on CUDA
            self._stream.synchronize()

    def _to_device(self, staged: torch.Tensor) -> torch.Tensor:
        if not self._cuda:
            return staged
        if self._frame is None or self._frame.shape != staged.shape:
            self._frame = torch.empty(staged.shape, dtype=torch.uint8, device=self.device)
        return self._frame.copy_(staged, non_blocking=True)

    def _to_host(self, value: torch.Tensor, key: int | None = None) -> torch.Tensor:
        """A float32 host copy. On CUDA, outputs with a `key` go into pinned buffers kept per key (valid
        until the next frame) so the copy is asynchronous; small tensors (key None) are copied plainly."""
        value = value.float()
        if not self._cuda:
            return value.clone()
        if key is None:
            return value.cpu()
        buffer = self._host_outputs.get(key)
        if buffer is None or buffer.shape != value.shape:
            buffer = torch.empty(value.shape, dtype=torch.float32, pin_memory=True)
            self._host_outputs[key] = buffer
        return buffer.copy_(value, non_blocking=True)

    def _slot(self, shape: tuple[int, int]) -> _InputSlot:
        slot = self._slots.get(shape)
        if slot is not None:
            self._slots.move_to_end(shape)
            return slot
        while len(self._slots) >= MAX_GRAPHS:
            self._slots.popitem(last=False)
        static = fill_padding(torch.empty((1, 3, *shape), dtype=self.dtype, device=self.device))

        def forward() -> list[torch.Tensor]:
            return export_outputs(self.model(static))

        run: Callable[[], list[torch.Tensor]] = forward
        keep_alive: list[torch.Tensor] = []
        if self._capture is not None:
            started = time.perf_counter()
            try:
                replay, outputs = self._capture(forward)
            except Exception as exc:  # noqa: BLE001 - an uncapturable model still runs, eagerly
                self.graph_failures += 1
                log.warning("CUDA graph capture for input %dx%d failed (%s: %s); running this shape eagerly",
                            shape[0], shape[1], type(exc).__name__, exc)
            else:
                log.info("captured the network for input %dx%d in a CUDA graph (%.0f ms)", shape[0], shape[1],
                         (time.perf_counter() - started) * 1000)

                keep_alive = plain_tensor_attributes(self.model)

                def run() -> list[torch.Tensor]:
                    replay()
                    return outputs
        slot = _InputSlot(static, run, keep_alive=keep_alive)
        self._slots[shape] = slot
        return slot


def export_outputs(output: object) -> list[torch.Tensor]:
    """The tensors an ONNX export returns, from an eval-mode forward.

    In eval mode Ultralytics heads return (export_output, training_extras): detect (y, feats),
    segment ((y, protos), feats), classify (probabilities, logits).
    """
    first = output[0] if isinstance(output, (list, tuple)) else output
    if isinstance(first, (list, tuple)):
        return [t for t in first if isinstance(t, torch.Tensor)]
    if not isinstance(first, torch.Tensor):
        raise TypeError(f"the model's forward returned {type(first).__name__}, not the tensors of a YOLO head")
    return [first]
