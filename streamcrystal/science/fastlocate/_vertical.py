"""The vertical half of trackpy's bandpass: Gaussian (``correlate1d``) and boxcar
(``uniform_filter1d``) along axis 0, a row (or four rows) at a time.

See :mod:`._bandpass` for the arithmetic they reproduce. The boxcar's running sums go
down the columns from row to row; a range of rows starting below row 0 first replays them.
"""
from __future__ import annotations

import numba
import numpy as np

from ._division import box_mean, box_means
from ._rows import gauss9

__all__ = ["vertical_row", "vertical_gauss9x4", "vertical_box4"]


@numba.njit(cache=True, nogil=True)
def _clamp(k: int, n: int) -> int:
    return 0 if k < 0 else (n - 1 if k > n - 1 else k)


@numba.njit(cache=True, nogil=True)
def _vertical_gauss9(raw, y, weights, out):
    """:func:`_vertical_gauss` for 9 weights (sigma 1, trackpy's default) inside the image:
    one pass, the same operations in the same order."""
    w0, w1, w2, w3, centre = weights[0], weights[1], weights[2], weights[3], weights[4]
    a0, a1, a2, a3, c = raw[y - 4], raw[y - 3], raw[y - 2], raw[y - 1], raw[y]
    b3, b2, b1, b0 = raw[y + 1], raw[y + 2], raw[y + 3], raw[y + 4]
    for x in range(out.shape[0]):
        out[x] = gauss9(np.float64(a0[x]), np.float64(a1[x]), np.float64(a2[x]), np.float64(a3[x]), np.float64(c[x]),
                        np.float64(b3[x]), np.float64(b2[x]), np.float64(b1[x]), np.float64(b0[x]), w0, w1, w2, w3,
                        centre)


@numba.njit(cache=True, nogil=True)
def _vertical_gauss(raw, y, weights, out):
    """Row ``y`` of ``correlate1d(raw, weights, axis=0, mode="constant")`` into ``out``."""
    height, width = raw.shape
    half = weights.shape[0] // 2
    if half == 4 and 4 <= y < height - 4:
        _vertical_gauss9(raw, y, weights, out)
        return
    centre = weights[half]
    for x in range(width):
        out[x] = np.float64(raw[y, x]) * centre
    for p in range(half):  # scipy: jj from -half to -1, the outermost pair first
        d = half - p
        w = weights[p]
        above, below = y - d, y + d
        if above >= 0 and below < height:
            for x in range(width):
                out[x] += (np.float64(raw[above, x]) + np.float64(raw[below, x])) * w
        elif above >= 0:
            for x in range(width):
                out[x] += (np.float64(raw[above, x]) + 0.0) * w
        elif below < height:
            for x in range(width):
                out[x] += (0.0 + np.float64(raw[below, x])) * w
        else:
            for x in range(width):
                out[x] += (0.0 + 0.0) * w


@numba.njit(cache=True, nogil=True)
def _start_running(raw, y, size, truncate, running):
    """scipy's running sums of ``uniform_filter1d(raw, size, axis=0)`` at row ``y``.

    At row 0 scipy sums the first ``size`` (edge-repeated) rows; later rows add the entering
    row and subtract the leaving one, so a range of rows starting below row 0 replays those
    steps. Integer images have integer sums, exact in any order: their window is summed.
    """
    height, width = raw.shape
    half = size // 2
    running[:] = 0.0
    first = y if truncate else 0
    for k in range(size):
        source = raw[_clamp(first + k - half, height)]
        for x in range(width):
            running[x] += np.float64(source[x])
    for row in range(first + 1, y + 1):
        _advance_running(raw, row, size, running)


@numba.njit(cache=True, nogil=True)
def _advance_running(raw, y, size, running):
    """The running sums from row ``y - 1`` to row ``y``: ``+= entering - leaving``."""
    height = raw.shape[0]
    half = size // 2
    entering, leaving = raw[_clamp(y + size - 1 - half, height)], raw[_clamp(y - 1 - half, height)]
    for x in range(running.shape[0]):
        running[x] += np.float64(entering[x]) - np.float64(leaving[x])


@numba.njit(cache=True, nogil=True)
def vertical_row(raw, y, first, weights0, box0, truncate, exact_division, running, lowpassed, boxed):
    """Row ``y`` of the vertical lowpass into ``lowpassed`` and of the vertical boxcar into
    ``boxed`` (either is the raw row where trackpy skips that filter)."""
    if weights0.shape[0] > 0:
        _vertical_gauss(raw, y, weights0, lowpassed)
    else:
        for x in range(lowpassed.shape[0]):
            lowpassed[x] = np.float64(raw[y, x])
    if box0 > 1:
        if y == first:
            _start_running(raw, y, box0, truncate, running)
        else:
            _advance_running(raw, y, box0, running)
        box_means(running, box0, truncate, exact_division, boxed)
    else:
        for x in range(boxed.shape[0]):
            boxed[x] = np.float64(raw[y, x])


@numba.njit(cache=True, nogil=True)
def vertical_gauss9x4(raw, y0, weights, lowpassed, at):
    """:func:`_vertical_gauss9` for rows ``y0 .. y0 + 3`` (inside the image) into
    ``lowpassed[r, at:]``: the twelve raw rows they need are read once for all four.

    Rows are 1-D views made before the loop (a 2-D index with an offset would keep numba's
    negative-index handling in the loop), the outputs from one array; the loop then has
    few enough pointer pairs for LLVM to vectorise it (it gives up beyond 128 checks).
    """
    w0, w1, w2, w3, centre = weights[0], weights[1], weights[2], weights[3], weights[4]
    a0, a1, a2, a3, c0, c1 = raw[y0 - 4], raw[y0 - 3], raw[y0 - 2], raw[y0 - 1], raw[y0], raw[y0 + 1]
    c2, c3, b0, b1, b2, b3 = raw[y0 + 2], raw[y0 + 3], raw[y0 + 4], raw[y0 + 5], raw[y0 + 6], raw[y0 + 7]
    width = raw.shape[1]
    l0, l1 = lowpassed[0, at:at + width], lowpassed[1, at:at + width]
    l2, l3 = lowpassed[2, at:at + width], lowpassed[3, at:at + width]
    for x in range(width):
        r0, r1, r2, r3 = np.float64(a0[x]), np.float64(a1[x]), np.float64(a2[x]), np.float64(a3[x])
        r4, r5, r6, r7 = np.float64(c0[x]), np.float64(c1[x]), np.float64(c2[x]), np.float64(c3[x])
        r8, r9, r10, r11 = np.float64(b0[x]), np.float64(b1[x]), np.float64(b2[x]), np.float64(b3[x])
        l0[x] = gauss9(r0, r1, r2, r3, r4, r5, r6, r7, r8, w0, w1, w2, w3, centre)
        l1[x] = gauss9(r1, r2, r3, r4, r5, r6, r7, r8, r9, w0, w1, w2, w3, centre)
        l2[x] = gauss9(r2, r3, r4, r5, r6, r7, r8, r9, r10, w0, w1, w2, w3, centre)
        l3[x] = gauss9(r3, r4, r5, r6, r7, r8, r9, r10, r11, w0, w1, w2, w3, centre)


@numba.njit(cache=True, nogil=True, inline="always")
def _box_step(total, entering, leaving, divisor, reciprocal, truncate, exact_division):
    """One step of the vertical running sum, and its mean cast like scipy's output."""
    total += np.float64(entering) - np.float64(leaving)
    return total, box_mean(total, divisor, reciprocal, truncate, exact_division)


@numba.njit(cache=True, nogil=True)
def vertical_box4(raw, y0, size, truncate, exact_division, running, boxed, at):
    """Four steps of the vertical running sums (rows ``y0 .. y0 + 3``, no edge in reach)
    kept in registers, their means into ``boxed[r, at:]`` (as :func:`vertical_row`)."""
    enter, leave = y0 + size - 1 - size // 2, y0 - 1 - size // 2  # the rows the first step adds and drops
    e0, e1, e2, e3 = raw[enter], raw[enter + 1], raw[enter + 2], raw[enter + 3]
    d0, d1, d2, d3 = raw[leave], raw[leave + 1], raw[leave + 2], raw[leave + 3]
    width = raw.shape[1]
    m0, m1 = boxed[0, at:at + width], boxed[1, at:at + width]
    m2, m3 = boxed[2, at:at + width], boxed[3, at:at + width]
    divisor = np.float64(size)
    reciprocal = 1.0 / divisor
    for x in range(width):
        total, m0[x] = _box_step(running[x], e0[x], d0[x], divisor, reciprocal, truncate, exact_division)
        total, m1[x] = _box_step(total, e1[x], d1[x], divisor, reciprocal, truncate, exact_division)
        total, m2[x] = _box_step(total, e2[x], d2[x], divisor, reciprocal, truncate, exact_division)
        total, m3[x] = _box_step(total, e3[x], d3[x], divisor, reciprocal, truncate, exact_division)
        running[x] = total
