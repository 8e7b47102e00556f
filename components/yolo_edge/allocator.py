"""glibc's allocator, set for a frame loop: memory freed by one frame stays in the process for the next.

Every frame allocates the same large arrays (a model's outputs, 2.7 MB for YOLOv8n at 640, and the
decoding's temporaries) and frees them again. By default glibc hands blocks of that size back to the
kernel (each is an mmap of its own, or the top of the heap is trimmed after a free), so the next frame
faults their pages in again; beside OpenVINO's requests on the 2-core test machine that made decoding a
heavy head 10.5 ms a frame instead of 8.0. Fixed thresholds keep up to TRIM_THRESHOLD of freed memory
for reuse instead; peak memory moved by a few MB (README, Benchmarks)."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, not an mmap of their own (glibc accepts at most 16 MiB on a
# 32-bit system, 32 MiB on a 64-bit one).
MMAP_THRESHOLD = 16 * 1024 * 1024
# Freed memory at the top of the heap is handed back to the kernel only above this.
TRIM_THRESHOLD = 64 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Set the thresholds where the C library is glibc; False (nothing changed) where it has no mallopt
    or refuses a value (musl, other systems)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: its allocator keeps its own settings")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if not done:
        log.debug("mallopt refused the frame loop's thresholds: the allocator keeps its own settings")
    return done
