"""trackpy's ``bandpass`` (streamed row by row) and ``convert_to_int``, bit for bit.

trackpy computes, on the whole image and one axis after the other,

* ``boxcar``: ``scipy.ndimage.uniform_filter1d`` along axis 0 then axis 1 (mode
  ``"nearest"``), each pass written back in the *raw image's dtype* (a C cast: truncation
  for integer images);
* ``lowpass``: ``scipy.ndimage.correlate1d`` with trackpy's Gaussian kernel along axis 0
  then axis 1 (mode ``"constant"``, zeros outside), in float64;
* ``where(lowpass - boxcar >= threshold, lowpass - boxcar, 0)``;

then scales it to the integer gamut: ``(max_value / image.max() * image.clip(0)).astype``.

The kernels below do the same floating-point operations in the same order for every pixel
(scipy's line-buffer loops, read from its C source): the Gaussian as
``x[0] * w[c]`` plus ``(x[-d] + x[d]) * w[c - d]`` for ``d`` from the kernel's edge inwards;
the running mean as ``total / n``, where ``total`` starts as the sum of the first ``n``
values and then goes ``total += entering - leaving`` (the scipy installed here; older
scipy divided each step, and :mod:`.selfcheck` notices such a change). Only the *order of
pixels* differs: rows stream through small buffers (the vertical filters are
vectorised across a row) instead of whole-image passes, which is where the time goes.
Every arithmetic result is therefore identical to scipy's, so the integer image that peaks
are found on is identical too. (Numba compiles without ``fastmath``: no reassociation and
no fused multiply-adds, which would round differently.)

Numba compiles each kernel lazily, on first call (``cache=True`` keeps the machine code on
disk for later processes).
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["bandpass_kernel", "to_int_kernel"]


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
        value = np.float64(c[x]) * centre
        value += (np.float64(a0[x]) + np.float64(b0[x])) * w0
        value += (np.float64(a1[x]) + np.float64(b1[x])) * w1
        value += (np.float64(a2[x]) + np.float64(b2[x])) * w2
        value += (np.float64(a3[x]) + np.float64(b3[x])) * w3
        out[x] = value


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
def _horizontal_gauss(padded, weights, out):
    """``correlate1d(row, weights, mode="constant")``; ``padded`` holds the row with
    ``len(weights) // 2`` zeros either side."""
    width = out.shape[0]
    half = weights.shape[0] // 2
    centre = weights[half]
    middle = padded[half:half + width]
    for x in range(width):
        out[x] = middle[x] * centre
    for p in range(half):
        d = half - p
        w = weights[p]
        left = padded[half - d:half - d + width]  # slices: plain indices vectorise
        right = padded[half + d:half + d + width]
        for x in range(width):
            out[x] += (left[x] + right[x]) * w


@numba.njit(cache=True, nogil=True)
def _vertical_box(raw, y, size, truncate, running, out):
    """Row ``y`` of ``uniform_filter1d(raw, size, axis=0, mode="nearest")`` into ``out``, cast
    like scipy's output (``truncate``: an integer image; its values fit an int32).

    ``running`` carries scipy's running sum from row to row (rows come in order).
    """
    height, width = raw.shape
    half = size // 2
    if y == 0:
        for x in range(width):
            running[x] = 0.0
        for k in range(size):
            source = raw[_clamp(k - half, height)]
            for x in range(width):
                running[x] += np.float64(source[x])
    else:
        entering, leaving = raw[_clamp(y + size - 1 - half, height)], raw[_clamp(y - 1 - half, height)]
        for x in range(width):
            running[x] += np.float64(entering[x]) - np.float64(leaving[x])
    divisor = np.float64(size)
    if truncate:
        for x in range(width):
            out[x] = np.float64(np.int32(running[x] / divisor))
    else:
        for x in range(width):
            out[x] = running[x] / divisor


#: Rows filtered together: their running sums along the row are independent chains of
#: additions, which the CPU overlaps when they are interleaved.
BLOCK = 4


@numba.njit(cache=True, nogil=True)
def _horizontal_box_totals(extended, n_rows, size, width, totals):
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


@numba.njit(cache=True, nogil=True)
def _finish_row(low, totals, divisor, truncate, threshold, target, row_max, nonfinite):
    """``target = where(low - box >= threshold, low - box, 0)`` with ``box = totals / divisor``
    (cast like scipy's output); also the running max and count of non-finite differences."""
    for x in range(target.shape[0]):
        box = totals[x] / divisor
        if truncate:
            box = np.float64(np.int32(box))
        value = low[x] - box
        nonfinite[x] += 0 if value - value == 0.0 else 1
        value = value if value >= threshold else 0.0
        target[x] = value
        row_max[x] = value if value > row_max[x] else row_max[x]  # max() does not vectorise


@numba.njit(cache=True, nogil=True)
def _finish_row9(padded, weights, totals, divisor, truncate, threshold, target, row_max, nonfinite):
    """:func:`_horizontal_gauss` for 9 weights fused with :func:`_finish_row`."""
    w0, w1, w2, w3, centre = weights[0], weights[1], weights[2], weights[3], weights[4]
    width = target.shape[0]
    a0, a1, a2, a3 = padded[0:width], padded[1:1 + width], padded[2:2 + width], padded[3:3 + width]
    c = padded[4:4 + width]
    b3, b2, b1, b0 = padded[5:5 + width], padded[6:6 + width], padded[7:7 + width], padded[8:8 + width]
    for x in range(width):
        low = c[x] * centre
        low += (a0[x] + b0[x]) * w0
        low += (a1[x] + b1[x]) * w1
        low += (a2[x] + b2[x]) * w2
        low += (a3[x] + b3[x]) * w3
        box = totals[x] / divisor
        if truncate:
            box = np.float64(np.int32(box))
        value = low - box
        nonfinite[x] += 0 if value - value == 0.0 else 1
        value = value if value >= threshold else 0.0
        target[x] = value
        row_max[x] = value if value > row_max[x] else row_max[x]


@numba.njit(cache=True, nogil=True)
def bandpass_kernel(raw, weights0, weights1, box0, box1, truncate, threshold, out):
    """trackpy's ``bandpass(raw, ...)`` into ``out`` (float64, raw's shape).

    ``weights0``/``weights1``: the Gaussian kernels of axis 0/1 (empty: no smoothing along
    that axis, trackpy's ``sigma <= 0``); ``box0``/``box1``: boxcar sizes (``<= 1``: none);
    ``truncate``: the raw image has an integer dtype, so each boxcar pass is truncated.

    Returns ``(image_max, n_nonfinite)``: ``out.max()``, and how many pixels of
    ``lowpass - boxcar`` are not finite (the raw image had NaN or inf: not handled here).
    """
    height, width = raw.shape
    half1 = weights1.shape[0] // 2
    padded = np.zeros((BLOCK, width + 2 * half1))  # vertical lowpass rows, zeros around
    low = np.empty(width)
    running = np.empty(width)
    size1 = max(box1, 1)
    extended = np.empty((BLOCK, width + size1 - 1))  # vertical boxcar rows, edges repeated
    totals = np.empty((BLOCK, width))
    row_max = np.full(width, -np.inf)
    nonfinite = np.zeros(width, dtype=np.int64)
    for y0 in range(0, height, BLOCK):
        n_rows = min(BLOCK, height - y0)
        for r in range(n_rows):
            y = y0 + r
            vertical = padded[r, half1:half1 + width]
            if weights0.shape[0] > 0:
                _vertical_gauss(raw, y, weights0, vertical)
            else:
                for x in range(width):
                    vertical[x] = np.float64(raw[y, x])
            boxed = extended[r, size1 // 2:size1 // 2 + width]
            if box0 > 1:
                _vertical_box(raw, y, box0, truncate, running, boxed)
            else:
                for x in range(width):
                    boxed[x] = np.float64(raw[y, x])
        if box1 > 1:
            _horizontal_box_totals(extended, n_rows, box1, width, totals)
            divisor, cast = np.float64(box1), truncate
        else:
            totals[:] = extended
            divisor, cast = 1.0, False  # x / 1.0 is x
        for r in range(n_rows):
            target = out[y0 + r]
            if half1 == 4:
                _finish_row9(padded[r], weights1, totals[r], divisor, cast, threshold, target, row_max, nonfinite)
            elif weights1.shape[0] > 0:
                _horizontal_gauss(padded[r], weights1, low)
                _finish_row(low, totals[r], divisor, cast, threshold, target, row_max, nonfinite)
            else:
                _finish_row(padded[r, half1:half1 + width], totals[r], divisor, cast, threshold, target,
                            row_max, nonfinite)
    return row_max.max(), nonfinite.sum()


@numba.njit(cache=True, nogil=True)
def to_int_kernel(image, scale, out, histogram):
    """``out[...] = (scale * image.clip(min=0)).astype(out.dtype)``; count values in ``histogram``.

    The conversion runs a row at a time (vectorised); the counts go to four interleaved
    histograms, so that runs of equal values do not wait on each other's increments.
    """
    height, width = image.shape
    partial = np.zeros((4, histogram.shape[0]), dtype=np.int64)
    for y in range(height):
        source, target = image[y], out[y]
        for x in range(width):
            value = source[x]
            value = value if value > 0.0 else 0.0
            target[x] = np.int32(scale * value)  # values fit; int32 conversions vectorise
        x = 0
        while x + 4 <= width:
            partial[0, target[x]] += 1
            partial[1, target[x + 1]] += 1
            partial[2, target[x + 2]] += 1
            partial[3, target[x + 3]] += 1
            x += 4
        while x < width:
            partial[0, target[x]] += 1
            x += 1
    for k in range(histogram.shape[0]):
        histogram[k] += partial[0, k] + partial[1, k] + partial[2, k] + partial[3, k]
