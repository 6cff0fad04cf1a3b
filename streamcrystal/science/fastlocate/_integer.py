"""trackpy's ``convert_to_int``: the bandpassed image scaled to the integer gamut, with
the histogram of its values (for the percentile threshold and the counts of nonzero and
candidate pixels)."""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["to_int_kernel"]


#: Interleaved histograms: runs of equal values then increment different counters, so
#: increments do not wait on each other (the counters of a value share a cache line).
N_HISTOGRAMS = 16


@numba.njit(cache=True, nogil=True)
def _count_values(row, partial):
    """``partial[v, k] += 1`` for the values ``v`` of ``row``, the k-th of every 16 in table k
    (constant table indices: no index arithmetic per pixel)."""
    width = row.shape[0]
    x = 0
    while x + N_HISTOGRAMS <= width:
        for k in range(N_HISTOGRAMS):
            partial[row[x + k], k] += 1
        x += N_HISTOGRAMS
    for k in range(width - x):
        partial[row[x + k], k] += 1


@numba.njit(cache=True, nogil=True)
def to_int_kernel(image, scale, out, histogram):
    """``out[...] = (scale * image.clip(min=0)).astype(out.dtype)``; count values in ``histogram``.

    The conversion runs a row at a time (vectorised); the counts go to
    :data:`N_HISTOGRAMS` interleaved histograms.
    """
    height, width = image.shape
    partial = np.zeros((histogram.shape[0], N_HISTOGRAMS), dtype=np.int32)  # < 2**31 pixels a table
    for y in range(height):
        source, target = image[y], out[y]
        for x in range(width):
            value = source[x]
            value = value if value > 0.0 else 0.0
            target[x] = np.int32(scale * value)  # values fit; int32 conversions vectorise
        _count_values(target, partial)
    for k in range(histogram.shape[0]):
        histogram[k] += partial[k].sum()
