"""Average, subtract and clip in one pass, equal bit for bit to :mod:`streamcrystal.frames`.

``streamcrystal.frames.process_frames`` makes three float64 images (the mean over the
frames, the difference, the clipped difference). For integer frames every step is one
IEEE operation per pixel, so one pass does the same: the frames' sum is an exact integer
(numpy's float64 sum of integers below 2**53 is exact in any order), the mean is
``sum / n_frames`` (``np.mean``'s ``true_divide``), then ``mean - background`` and
``0.0 if d < 0 else d`` (``np.maximum(d, 0.0)``, NaN kept). Other inputs (float frames,
whose float sum depends on numpy's order) are left to :mod:`streamcrystal.frames`.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["supports_frames", "average_subtract_clip", "process_frames"]


@numba.njit(cache=True, nogil=True)
def _average_subtract_clip(frames, background, subtract, total, out):
    """Returns whether any pixel of the mean (before subtraction) is nonzero; ``total`` is a
    scratch row of int64 (it holds the frames' sum exactly)."""
    n_frames, height, width = frames.shape
    nonzero = np.zeros(width, dtype=total.dtype)
    divisor = np.float64(n_frames)
    for y in range(height):
        total[:] = 0
        for f in range(n_frames):
            source = frames[f, y]
            for x in range(width):
                total[x] += source[x]
        target = out[y]
        for x in range(width):
            nonzero[x] |= total[x]
            value = np.float64(total[x]) / divisor
            if subtract:
                value = value - background[y, x]
            target[x] = 0.0 if value < 0.0 else value
    return nonzero.any()


def supports_frames(frames, background) -> bool:
    """Whether :func:`average_subtract_clip` takes these frames and background.

    Integer frames (at most 32 bits, native byte order), 2-D or more; a background that is
    ``None`` or a float64 image of the frames' shape.

    Examples
    --------
    >>> supports_frames(np.zeros((5, 4, 4), np.uint16), None)
    True
    >>> supports_frames(np.zeros((5, 4, 4)), None), supports_frames(np.zeros((5, 4, 4), np.uint16), np.zeros((3, 3)))
    (False, False)
    """
    if not isinstance(frames, np.ndarray) or frames.ndim < 2 or frames.size == 0:
        return False
    if frames.dtype.kind not in "iu" or frames.dtype.itemsize > 4 or not frames.dtype.isnative:
        return False
    if background is None:
        return True
    return (isinstance(background, np.ndarray) and background.dtype == np.float64 and background.dtype.isnative
            and background.shape == frames.shape[-2:])


def average_subtract_clip(frames: np.ndarray, background: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """``process_frames(frames, background)`` and whether the mean before subtraction is nonzero.

    Frames and background must pass :func:`supports_frames`.

    Examples
    --------
    >>> frames = np.array([[[10, 2]], [[12, 2]]], dtype=np.uint16)
    >>> average_subtract_clip(frames, np.array([[4.0, 3.0]]))
    (array([[7., 0.]]), True)
    """
    stack = np.ascontiguousarray(frames).reshape(-1, *frames.shape[-2:])
    out = np.empty(frames.shape[-2:], dtype=np.float64)
    total = np.empty(out.shape[1], dtype=np.int64)
    if background is None:
        nonzero = _average_subtract_clip(stack, out, False, total, out)  # ``out`` stands in, unread
    else:
        nonzero = _average_subtract_clip(stack, np.ascontiguousarray(background), True, total, out)
    return out, bool(nonzero)


def process_frames(frames, background: np.ndarray | None = None) -> np.ndarray:
    """:func:`streamcrystal.frames.process_frames`, in one pass where :func:`supports_frames`.

    Examples
    --------
    >>> frames = np.array([[[10, 2]], [[12, 2]]], dtype=np.uint16)
    >>> process_frames(frames, background=np.array([[4.0, 3.0]]))
    array([[7., 0.]])
    """
    if supports_frames(frames, background):
        return average_subtract_clip(frames, background)[0]
    from ..frames import process_frames as numpy_process_frames

    return numpy_process_frames(frames, background)
