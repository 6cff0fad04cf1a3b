"""trackpy's ``bandpass`` + ``convert_to_int`` in one streaming pass, bit for bit.

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
are found on is identical too.

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
def _vertical_gauss(raw, y, weights, out):
    """Row ``y`` of ``correlate1d(raw, weights, axis=0, mode="constant")`` into ``out``."""
    height, width = raw.shape
    half = weights.shape[0] // 2
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
def _horizontal_gauss(row, weights, padded, out):
    """``correlate1d(row, weights, mode="constant")``; ``padded`` is scratch with zeros around."""
    width = row.shape[0]
    half = weights.shape[0] // 2
    padded[half:half + width] = row
    centre = weights[half]
    for x in range(width):
        out[x] = row[x] * centre
    for p in range(half):
        d = half - p
        w = weights[p]
        left = padded[half - d:half - d + width]  # slices: plain indices vectorise
        right = padded[half + d:half + d + width]
        for x in range(width):
            out[x] += (left[x] + right[x]) * w


@numba.njit(cache=True, nogil=True)
def _vertical_box_update(raw, y, size, running):
    """Advance scipy's running sum of ``uniform_filter1d(axis=0, mode="nearest")`` to row y
    (the filter's value is ``running / size``)."""
    height, width = raw.shape
    half = size // 2
    if y == 0:
        for x in range(width):
            running[x] = 0.0
        for k in range(size):
            r = _clamp(k - half, height)
            for x in range(width):
                running[x] += np.float64(raw[r, x])
    else:
        entering = _clamp(y + size - 1 - half, height)
        leaving = _clamp(y - 1 - half, height)
        for x in range(width):
            running[x] += np.float64(raw[entering, x]) - np.float64(raw[leaving, x])


#: Rows filtered together: their running sums along the row are independent chains of
#: additions, which the CPU overlaps when they are interleaved.
BLOCK = 4


@numba.njit(cache=True, nogil=True)
def _horizontal_box(rows, n_rows, size, truncate, extended, totals, out):
    """``uniform_filter1d(rows[r], size, mode="nearest")`` for the first ``n_rows`` of a block,
    cast like scipy's output (``truncate``); ``extended`` and ``totals`` are scratch."""
    width = rows.shape[1]
    half = size // 2
    for r in range(BLOCK):
        source = rows[min(r, n_rows - 1)]  # a short block repeats its last row, unused
        for k in range(half):
            extended[r, k] = source[0]
        extended[r, half:half + width] = source
        for k in range(half + width, width + size - 1):
            extended[r, k] = source[width - 1]
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
    divisor = np.float64(size)
    for r in range(n_rows):
        if truncate:
            for x in range(width):
                out[r, x] = np.float64(np.int64(totals[r, x] / divisor))
        else:
            for x in range(width):
                out[r, x] = totals[r, x] / divisor


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
    gauss0 = np.empty(width)
    gauss1 = np.empty((BLOCK, width))
    padded = np.zeros(width + 2 * (weights1.shape[0] // 2))
    running = np.empty(width)
    boxrows = np.empty((BLOCK, width))
    boxed = np.empty((BLOCK, width))
    extended = np.empty((BLOCK, width + max(box1, 1) - 1))
    totals = np.empty((BLOCK, width))
    row_max = np.full(width, -np.inf)
    nonfinite = np.zeros(width, dtype=np.int64)
    divisor0 = np.float64(box0)
    for y0 in range(0, height, BLOCK):
        n_rows = min(BLOCK, height - y0)
        for r in range(n_rows):
            y = y0 + r
            # lowpass
            if weights0.shape[0] > 0:
                _vertical_gauss(raw, y, weights0, gauss0)
            else:
                for x in range(width):
                    gauss0[x] = np.float64(raw[y, x])
            if weights1.shape[0] > 0:
                _horizontal_gauss(gauss0, weights1, padded, gauss1[r])
            else:
                gauss1[r] = gauss0
            # boxcar along axis 0, cast to the raw dtype as scipy writes it back
            if box0 > 1:
                _vertical_box_update(raw, y, box0, running)
                if truncate:
                    for x in range(width):
                        boxrows[r, x] = np.float64(np.int64(running[x] / divisor0))
                else:
                    for x in range(width):
                        boxrows[r, x] = running[x] / divisor0
            else:
                for x in range(width):
                    boxrows[r, x] = np.float64(raw[y, x])
        # boxcar along axis 1
        if box1 > 1:
            _horizontal_box(boxrows, n_rows, box1, truncate, extended, totals, boxed)
        else:
            boxed[:] = boxrows
        for r in range(n_rows):
            low, box, target = gauss1[r], boxed[r], out[y0 + r]
            for x in range(width):
                value = low[x] - box[x]
                nonfinite[x] += 0 if value - value == 0.0 else 1
                value = value if value >= threshold else 0.0
                target[x] = value
                row_max[x] = value if value > row_max[x] else row_max[x]  # max() does not vectorise
    return row_max.max(), nonfinite.sum()


@numba.njit(cache=True, nogil=True)
def to_int_kernel(image, scale, out, histogram):
    """``out[...] = (scale * image.clip(min=0)).astype(out.dtype)``; count values in ``histogram``."""
    height, width = image.shape
    for y in range(height):
        for x in range(width):
            value = image[y, x]
            value = value if value > 0.0 else 0.0
            level = np.int64(scale * value)
            out[y, x] = level
            histogram[level] += 1
