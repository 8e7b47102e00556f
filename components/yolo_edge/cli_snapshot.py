"""`yolo-edge snapshot`: one frame of a configured camera with its zones, lines and detections drawn,
so zones and lines can be placed without guessing pixels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from .config import Config, ConfigError

FIRST_FRAME_TIMEOUT_S = 15.0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from .cli_args import add_config_arguments

    parser = subparsers.add_parser(
        "snapshot", help="save one frame of a camera with its zones, lines and detections drawn",
        description="Grab a frame from a configured camera's source, run the model on it (unless "
                    "--no-detections) and write it as a JPEG with the camera's zones, lines (with the "
                    "direction that counts as 'in') and the detections its filters keep. Coordinates "
                    "of the frame's corners are printed, for placing zones.")
    parser.add_argument("--camera", metavar="NAME", help="a camera of `cameras` (default: the only camera)")
    parser.add_argument("--out", default="snapshot.jpg", metavar="FILE", help="JPEG to write (default: %(default)s)")
    parser.add_argument("--no-detections", action="store_true", help="draw zones and lines only; load no model")
    add_config_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .cli_args import build_config

    try:
        config = build_config(args)
        camera = _camera(config, args.camera)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = config.camera_specs()[camera]
    try:
        frame = grab_frame(spec.source)
    except (OSError, RuntimeError) as exc:
        print(f"error: camera {camera}: {exc}", file=sys.stderr)
        return 1
    boxes: np.ndarray = np.zeros((0, 4))
    labels: list[str] = []
    class_ids: list[int] = []
    if not args.no_detections:
        try:
            boxes, labels, class_ids = _detections(config, spec.filters, frame)
        except Exception as exc:  # noqa: BLE001 - any model failure is the user's to see, plainly
            print(f"error: model {config.model_loc}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    image = draw_setup(frame, spec.zones or (), spec.lines or (), boxes, labels, class_ids)
    out = Path(args.out)
    if not cv2.imwrite(str(out), image):
        print(f"error: cannot write {out} (a .jpg path in a writable folder?)", file=sys.stderr)
        return 1
    height, width = frame.shape[:2]
    print(f"wrote {out}: camera {camera}, frame {width}x{height} (x 0..{width - 1}, y 0..{height - 1}; "
          f"fractions 0..1 work too), {len(spec.zones or ())} zones, {len(spec.lines or ())} lines, "
          f"{len(boxes)} detections" + ("" if args.no_detections else f" ({config.model_loc})"))
    return 0


def _camera(config: Config, wanted: str | None) -> str:
    names = list(config.camera_specs())
    if wanted is None:
        if len(names) > 1:
            raise ConfigError("--camera", None, "one of " + ", ".join(names) + " (there are several cameras)")
        return names[0]
    if wanted not in names:
        raise ConfigError("--camera", wanted, "one of " + ", ".join(names))
    return wanted


def grab_frame(source_text: str, timeout_s: float = FIRST_FRAME_TIMEOUT_S) -> np.ndarray:
    """The first frame of a source; a live one (which waits for its first frame however long it takes)
    is given `timeout_s`, then closed."""
    import threading

    from .sources import SourceError, open_source

    try:
        source = open_source(source_text, False)
    except SourceError as exc:
        raise RuntimeError(str(exc)) from exc
    outcome: list[np.ndarray | None | Exception] = []

    def read() -> None:
        try:
            outcome.append(source.read())
        except SourceError as exc:
            outcome.append(exc)

    try:
        reader = threading.Thread(target=read, name="snapshot-read", daemon=True)
        reader.start()
        reader.join(timeout_s if source.live else None)
    finally:
        source.close()  # also ends a read still waiting
    got = outcome[0] if outcome else None
    if isinstance(got, Exception):
        raise RuntimeError(str(got)) from got
    if got is None:
        waited = f" in {timeout_s:g} s" if source.live else ""
        raise RuntimeError(f"{source.description} gave no frame{waited}")
    return got


def _detections(config: Config, keep: object, frame: np.ndarray) -> tuple[np.ndarray, list[str], list[int]]:
    from .frame_step import filtered
    from .predictor import Prediction, load_predictor
    from .processing import Detections
    from .scene.filters import DetectionFilter

    predictor = load_predictor(config)
    try:
        prediction: Prediction = predictor.predict(frame)
        if isinstance(keep, DetectionFilter) and not keep.is_empty:
            prediction = filtered(prediction, keep, frame.shape[:2], predictor.info)
        result = prediction.result
        if not isinstance(result, Detections):
            return np.zeros((0, 4)), [], []
        class_ids = [int(c) for c in result.class_ids]
        labels = [f"{predictor.info.label(c)} {s:.2f}" for c, s in zip(class_ids, result.scores.tolist())]
        return result.boxes, labels, class_ids
    finally:
        predictor.close()


def draw_setup(frame: np.ndarray, zones: tuple, lines: tuple, boxes: np.ndarray, labels: list[str],
               class_ids: list[int]) -> np.ndarray:
    """The frame with zones, lines (arrow towards their 'in' side) and boxes drawn."""
    from .scene.draw import Overlay, draw_boxes

    image = Overlay.of(zones, lines, (int(frame.shape[0]), int(frame.shape[1]))).draw(frame)
    return draw_boxes(image, np.asarray(boxes, np.float64).reshape(-1, 4), labels, class_ids)
