"""`import openvino` without its model converter. openvino/__init__.py imports the converter
(`openvino.tools.ovc`, for `openvino.convert_model`) on every import, and with it telemetry, urllib,
email and numpy.ma: 55 of the import's 90 ms and 12 of its 26 MB here (OpenVINO 2026.4, x86_64).
The runtime reads and compiles models; it never converts one."""

from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from typing import Any, Iterator

CONVERTER = "openvino.tools.ovc"


@contextmanager
def without_converter() -> Iterator[None]:
    """Within it, a first `import openvino` leaves the converter out (openvino catches the ImportError);
    afterwards `openvino.convert_model` and `import openvino.tools.ovc` import it on first use, as
    before. Does nothing when openvino or its converter is imported already."""
    modules: dict[str, Any] = sys.modules
    if "openvino" in modules or CONVERTER in modules:
        yield
        return
    modules[CONVERTER] = None  # an import of it raises ImportError
    try:
        yield
    finally:
        if CONVERTER in modules and modules[CONVERTER] is None:
            del modules[CONVERTER]
        openvino = modules.get("openvino")
        if openvino is not None and "convert_model" not in vars(openvino):
            openvino.__getattr__ = _converter_on_use  # PEP 562: asked for missing attributes only


def _converter_on_use(name: str) -> Any:
    """openvino's module __getattr__: `convert_model` imports the converter, as openvino would have."""
    if name != "convert_model":
        raise AttributeError(f"module 'openvino' has no attribute {name!r}")
    convert_model = importlib.import_module(CONVERTER).convert_model
    modules: dict[str, Any] = sys.modules
    modules["openvino"].convert_model = convert_model
    return convert_model
