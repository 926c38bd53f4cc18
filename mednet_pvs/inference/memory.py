"""Keep freed memory inside the process while a model runs (glibc only).

PyTorch's CPU allocator takes every large tensor from ``malloc``, which glibc serves with a fresh
``mmap`` and unmaps on free, so each of the hundreds of activations of a forward pass is
page-faulted in again: about 2.2 million page faults for one MedNeXt-S window of 96^3. With mmap
off and trimming deferred, freed blocks are reused instead: 1.4-1.6x less CPU time per window, same
arithmetic, identical results (benchmarks/inference_compare.py, ``ours[no-reuse]``). Hand-written
because neither PyTorch nor numpy exposes malloc tuning; the defaults are restored on exit and the
memory is handed back to the system with ``malloc_trim``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator

__all__ = ["reuse_freed_memory"]

LOGGER = logging.getLogger(__name__)

# mallopt parameters and glibc's defaults (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_NEVER_TRIM = 2**31 - 1
_LOCK = threading.Lock()
_ACTIVE = 0


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[None]:
    """Within the block, freed memory stays in the process (no-op off glibc or when not ``enabled``)."""
    global _ACTIVE
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    with _LOCK:
        if _ACTIVE == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)
        _ACTIVE += 1
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
