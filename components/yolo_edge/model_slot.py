"""The loaded model and the configuration it was loaded with; loading, swapping and releasing it.

Owned by the controller thread. It says what happened (`Loaded`, `LoadFailed`) and leaves the
messages about it to the controller.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Union

from .backends import ModelLoadError
from .config import Config
from .predictor import Predictor

log = logging.getLogger(__name__)

# The configuration keys that need the model loaded again when they change.
MODEL_KEYS = ("model_loc", "model_height", "model_width", "device", "half", "threads", "task")


@dataclass(frozen=True)
class Loaded:
    predictor: Predictor
    load_s: float


@dataclass(frozen=True)
class LoadFailed:
    cause: str  # in words an operator can act on
    kept: Predictor | None  # the model still loaded and running, when the swap kept it


LoadOutcome = Union[Loaded, LoadFailed]


class ModelSlot:
    def __init__(self, factory: Callable[[Config], Predictor]) -> None:
        self._factory = factory
        self.predictor: Predictor | None = None
        self.config: Config | None = None  # the configuration `predictor` was loaded with

    def is_current(self, config: Config) -> bool:
        """True when the loaded model is the one `config` names, with the same options."""
        loaded = self.config
        return self.predictor is not None and loaded is not None and all(
            getattr(loaded, key) == getattr(config, key) for key in MODEL_KEYS)

    def load(self, config: Config, keep_previous: bool = False) -> LoadOutcome:
        """Load the model `config` names. A model loaded before is released first, so its memory is
        free for the new one, unless `keep_previous` (a swap during a run: the old model stays until
        the new one is ready, and stays if the new one fails)."""
        previous = self.predictor
        if previous is not None and not keep_previous:
            self.release()
            previous = None
        started = time.perf_counter()
        try:
            predictor = self._factory(config)
        except Exception as exc:  # noqa: BLE001 - whatever a backend raises, the component stays up
            cause = load_failure_cause(exc)
            log.error("cannot load model %s: %s", config.model_loc, cause)
            return LoadFailed(cause, previous)
        if previous is not None:
            previous.close()
        self.predictor, self.config = predictor, config
        load_s = time.perf_counter() - started
        info = predictor.info
        log.info("loaded %s (%s, %s, %s) in %.2f s", info.name, info.format, info.task, info.runtime, load_s)
        return Loaded(predictor, load_s)

    def release(self) -> None:
        predictor, self.predictor, self.config = self.predictor, None, None
        if predictor is not None:
            predictor.close()


def load_failure_cause(exc: BaseException) -> str:
    """What went wrong loading a model, in words an operator can act on."""
    if isinstance(exc, ModelLoadError):
        return exc.cause
    if isinstance(exc, MemoryError):
        return f"out of memory while loading ({str(exc) or 'MemoryError'}); free memory or use a smaller model"
    return f"{type(exc).__name__}: {exc}"
