"""Scratch arrays kept between calls, one set per thread.

A 3072 x 3888 float64 array is 96 MB; allocating it afresh for every image costs more in
page faults (the allocator hands such blocks back to the kernel) than filtering it. Each
thread keeps the scratch of the last image shape it located, so a run over same-sized
detector frames allocates once. :func:`release` frees the calling thread's scratch.
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["scratch", "release", "held_bytes"]

_local = threading.local()


def _arrays() -> dict:
    if not hasattr(_local, "arrays"):
        _local.arrays = {}
    return _local.arrays


def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype``, reused by the next call with ``name``.

    Examples
    --------
    >>> a = scratch("doc", (2, 3), np.float64)
    >>> scratch("doc", (2, 3), np.float64) is a, scratch("doc", (3, 3), np.float64) is a
    (True, False)
    >>> release()
    """
    arrays = _arrays()
    array = arrays.get(name)
    if array is None or array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
        arrays.pop(name, None)  # let the old one go before the new one is made
        array = arrays[name] = np.empty(shape, dtype)
    return array


def release() -> None:
    """Free the calling thread's scratch arrays.

    Examples
    --------
    >>> _ = scratch("doc", (1000,), np.uint8)
    >>> release(); held_bytes()
    0
    """
    _arrays().clear()


def held_bytes() -> int:
    """Bytes of scratch the calling thread holds.

    Examples
    --------
    >>> release(); _ = scratch("doc", (10, 10), np.float64); held_bytes()
    800
    >>> release()
    """
    return sum(array.nbytes for array in _arrays().values())
