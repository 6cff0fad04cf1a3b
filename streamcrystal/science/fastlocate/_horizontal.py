"""The horizontal half of trackpy's bandpass and the difference image: boxcar sums and
Gaussian along axis 1, ``lowpass - boxcar`` thresholded, with the column maxima.

See :mod:`._bandpass` for the arithmetic they reproduce.
"""
from __future__ import annotations

import numba
import numpy as np

from ._division import box_mean, fma
from ._rows import BLOCK, gauss9

__all__ = ["box_totals", "finish_row9", "finish9x2", "horizontal_gauss", "finish_row"]


@numba.njit(cache=True, nogil=True)
def box_totals(extended, n_rows, size, width, totals):
    """scipy's running sums of ``uniform_filter1d(mode="nearest")`` along the rows of a block.

    ``extended[r]`` holds row r with ``size // 2`` copies of its first value before it and
    of its last value after it; ``totals[r, x] / size`` is the filter's value at x.
    """
    half = size // 2
    for r in range(BLOCK):
        row = extended[min(r, n_rows - 1)]  # a short block repeats its last row, unused
        for k in range(half):
            row[k] = row[half]
        for k in range(half + width, width + size - 1):
            row[k] = row[half + width - 1]
    e0, e1, e2, e3 = extended[0], extended[1], extended[2], extended[3]
    t0 = t1 = t2 = t3 = 0.0
    for k in range(size):
        t0 += e0[k]
        t1 += e1[k]
        t2 += e2[k]
        t3 += e3[k]
    totals[0, 0], totals[1, 0], totals[2, 0], totals[3, 0] = t0, t1, t2, t3
    for x in range(1, width):
        entering, leaving = x + size - 1, x - 1
        t0 += e0[entering] - e0[leaving]
        t1 += e1[entering] - e1[leaving]
        t2 += e2[entering] - e2[leaving]
        t3 += e3[entering] - e3[leaving]
        totals[0, x], totals[1, x], totals[2, x], totals[3, x] = t0, t1, t2, t3


@numba.njit(cache=True, nogil=True, inline="always")
def _finish_pixel(low, box, threshold, x, target, maxima, poison):
    """``target[x] = where(low - box >= threshold, low - box, 0)``; the column maxima, and
    ``poison[x]`` turned NaN by a non-finite difference (``inf * 0`` and ``NaN * 0`` are NaN).

    ``maxima = (before, after)``: the maxima go from one array to the other (the caller
    swaps them row by row); updating one array in place compiles to masked stores, which
    are very slow on AMD's Zen.
    """
    value = low - box
    poison[x] = fma(value, 0.0, poison[x])
    value = _thresholded(value, threshold)
    target[x] = value
    before, after = maxima
    after[x] = _larger(value, before[x])


@numba.njit(cache=True, nogil=True, inline="always")
def _thresholded(value, threshold):
    """trackpy's ``where(value >= threshold, value, 0)``."""
    return value if value >= threshold else 0.0


@numba.njit(cache=True, nogil=True, inline="always")
def _larger(value, top):
    """``max(top, value)`` as a select (numba's ``max()`` does not vectorise); NaN keeps ``top``."""
    return value if value > top else top


@numba.njit(cache=True, nogil=True, inline="always")
def _low9(padded, x, w0, w1, w2, w3, centre):
    """The horizontal 9-tap Gaussian at ``x`` of a row held with 4 zeros either side."""
    return gauss9(padded[x], padded[x + 1], padded[x + 2], padded[x + 3], padded[x + 4], padded[x + 5],
                  padded[x + 6], padded[x + 7], padded[x + 8], w0, w1, w2, w3, centre)


@numba.njit(cache=True, nogil=True)
def finish_row9(padded, weights, box, threshold, target, maxima, poison):
    """The horizontal 9-tap Gaussian of ``padded`` (the row with 4 zeros either side), minus
    ``box``, thresholded (:func:`_finish_pixel`)."""
    w0, w1, w2, w3, centre = weights[0], weights[1], weights[2], weights[3], weights[4]
    for x in range(target.shape[0]):  # one base array: plain offsets, no alias checks
        _finish_pixel(_low9(padded, x, w0, w1, w2, w3, centre), box[x], threshold, x, target, maxima, poison)


@numba.njit(cache=True, nogil=True)
def finish9x2(padded, weights, totals, size, truncate, exact_division, threshold, out, y, maxima, poison):
    """Rows ``y`` and ``y + 1`` of the difference image: for each, the 9-tap horizontal
    Gaussian of ``padded[r]`` minus the mean of ``totals[r]`` (the horizontal box sums,
    divided and cast here), thresholded, into ``out``; with the column maxima (from
    ``maxima[0]`` to ``maxima[1]``) and ``poison`` updated once for both rows.

    Two rows, not four: LLVM vectorises a loop only with few pairs of arrays to check for
    overlap (rows are viewed here from whole arrays, see :func:`vertical_gauss9x4`).
    """
    w0, w1, w2, w3, centre = weights[0], weights[1], weights[2], weights[3], weights[4]
    divisor = np.float64(size)
    reciprocal = 1.0 / divisor
    p0, p1, t0, t1, o0, o1 = padded[0], padded[1], totals[0], totals[1], out[y], out[y + 1]
    before, after = maxima
    for x in range(out.shape[1]):
        v0 = _low9(p0, x, w0, w1, w2, w3, centre) - box_mean(t0[x], divisor, reciprocal, truncate, exact_division)
        v1 = _low9(p1, x, w0, w1, w2, w3, centre) - box_mean(t1[x], divisor, reciprocal, truncate, exact_division)
        poison[x] = fma(v1, 0.0, fma(v0, 0.0, poison[x]))
        v0, v1 = _thresholded(v0, threshold), _thresholded(v1, threshold)
        o0[x], o1[x] = v0, v1
        after[x] = _larger(v1, _larger(v0, before[x]))


@numba.njit(cache=True, nogil=True)
def horizontal_gauss(padded, weights, out):
    """``correlate1d(row, weights, mode="constant")``; ``padded`` holds the row with
    ``len(weights) // 2`` zeros either side."""
    width = out.shape[0]
    half = weights.shape[0] // 2
    centre = weights[half]
    for x in range(width):
        out[x] = padded[x + half] * centre
    for p in range(half):
        d = half - p
        w = weights[p]
        for x in range(width):
            out[x] += (padded[x + half - d] + padded[x + half + d]) * w


@numba.njit(cache=True, nogil=True)
def finish_row(low, box, threshold, target, maxima, poison):
    """``low - box``, thresholded (:func:`_finish_pixel`): the row of any other Gaussian."""
    for x in range(target.shape[0]):
        _finish_pixel(low[x], box[x], threshold, x, target, maxima, poison)
