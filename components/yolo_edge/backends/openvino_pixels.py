"""The model the OpenVINO backend compiles for detection and segmentation in fp32 or int8: the same network,
taking the letterboxed BGR frames as they are ((N, H, W, 3) uint8) and turning them into its RGB planes in
[0, 1] in OpenVINO's own graph, where numpy did it on the feeder thread before. At 640 that leaves out a 4.9 MB
float tensor per prepared frame and per inference request (a quarter of the size in uint8), and the
conversion's CPU time; the outputs differ from those of numpy's conversion by float rounding only (box
coordinates by less than 0.01 px, scores by less than 1e-4: tests/test_openvino_pixels.py).

The converted model is kept as IR beside the compiled-model cache, under the same name as the model's
facts (openvino_facts): a later start compiles that file, which OpenVINO finds in its cache, without
reading any model. It is written before the facts, so facts that match their model file vouch for it."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from .openvino_facts import key_name, model_key
from .openvino_import import without_converter

with without_converter():
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

log = logging.getLogger(__name__)

FOLDER = "pixels"  # under the compiled-model cache


def takes_pixels(input_type: str, input_dims: Sequence[int | None], task: str, precision: str) -> bool:
    """Whether the model gets frames as they are: an f32 (N, 3, H, W) input of a detection or segmentation
    model run in fp32 (or int8, whose float layers run in f32). Classification keeps its own crop and resize
    (Ultralytics'), made in numpy; a half-precision input keeps the planes too, and so do bf16 and fp16,
    where OpenVINO would convert the pixels at that precision: on Ultralytics' own export folder in bf16
    that moved a box to IoU 0.991 of Ultralytics' (bf16 on numpy's planes gives IoU 1.0)."""
    return (task != "classify" and precision in ("fp32", "int8") and input_type == "f32" and len(input_dims) == 4
            and input_dims[1] == 3)


def with_pixel_input(model: Any) -> Any:
    """`model` taking (N, H, W, 3) uint8 BGR: OpenVINO converts it to RGB, to f32, divides it by 255 (as
    processing.to_tensor does) and transposes it to the model's (N, 3, H, W)."""
    steps = PrePostProcessor(model)
    frames = steps.input(0)
    frames.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    frames.model().set_layout(ov.Layout("NCHW"))
    frames.preprocess().convert_color(ColorFormat.RGB).convert_element_type(ov.Type.f32).scale(255.0)
    return steps.build()


def kept_model_file(cache: Path, model_file: Path, version: str) -> Path | None:
    """Where the converted model of `model_file` is kept for this OpenVINO version (an .xml beside its
    .bin); None when the model file cannot be looked at."""
    key = model_key(model_file, version)
    return None if key is None else cache / FOLDER / f"{key_name(key)}.xml"


def keep_model(model: Any, kept: Path) -> bool:
    """Write the converted `model` to `kept` (and its .bin); False when the cache cannot be written (the
    model is then compiled as it is, and a later start converts it again)."""
    partial = kept.with_name(f"{kept.stem}.{os.getpid()}.tmp.xml")
    try:
        kept.parent.mkdir(exist_ok=True)
        ov.save_model(model, str(partial), compress_to_fp16=False)
        # The .bin first: an .xml is only ever beside the weights it was written with.
        os.replace(partial.with_suffix(".bin"), kept.with_suffix(".bin"))
        os.replace(partial, kept)
        return True
    except (OSError, RuntimeError) as exc:
        log.info("cannot keep the converted OpenVINO model in %s (%s)", kept, exc)
        for leftover in (partial, partial.with_suffix(".bin"), kept):
            with contextlib.suppress(OSError):
                leftover.unlink()
        return False
