"""trackpy's ``bandpass``, streamed row by row, bit for bit.

trackpy computes, on the whole image and one axis after the other,

* ``boxcar``: ``scipy.ndimage.uniform_filter1d`` along axis 0 then axis 1 (mode
  ``"nearest"``), each pass written back in the *raw image's dtype* (a C cast: truncation
  for integer images);
* ``lowpass``: ``scipy.ndimage.correlate1d`` with trackpy's Gaussian kernel along axis 0
  then axis 1 (mode ``"constant"``, zeros outside), in float64;
* ``where(lowpass - boxcar >= threshold, lowpass - boxcar, 0)``;

(then :mod:`._integer` scales it to the integer gamut).

The kernels below do the same floating-point operations in the same order for every pixel
(scipy's line-buffer loops, read from its C source): the Gaussian as
``x[0] * w[c]`` plus ``(x[-d] + x[d]) * w[c - d]`` for ``d`` from the kernel's edge inwards;
the running mean as ``total / n``, where ``total`` starts as the sum of the first ``n``
values and then goes ``total += entering - leaving`` (the scipy installed here; older
scipy divided each step, and :mod:`.selfcheck` notices such a change). The division is
done without a divide instruction but rounds the same (:mod:`._division`). Only the
*order of pixels* differs: rows stream through small buffers (the vertical filters are
vectorised across a row) instead of whole-image passes, which is where the time goes.
Every arithmetic result is therefore identical to scipy's, so the integer image that peaks
are found on is identical too. (Numba compiles without ``fastmath``: no reassociation and
no fused multiply-adds other than the division's, which would round differently.)

Rows can be filtered in independent ranges (one per thread): each range first brings the
vertical running sums to its first row, exactly as the rows above it would have left them.

Numba compiles each kernel lazily, on first call (``cache=True`` keeps the machine code on
disk for later processes).
"""
from __future__ import annotations

import numba
import numpy as np

from ._division import TINY, box_means
from ._horizontal import box_totals, finish9x2, finish_row, finish_row9, horizontal_gauss
from ._rows import BLOCK, copy_into
from ._vertical import vertical_box4, vertical_gauss9x4, vertical_row

__all__ = ["bandpass_kernel", "bandpass_rows", "NONFINITE", "TINY_PIXELS"]


#: Flags of the status :func:`bandpass_rows` returns: the difference image has NaN or
#: infinite pixels (left to trackpy); the raw image has nonzero pixels below
#: :data:`._division.TINY` (filter again with ``exact_division=True``).
NONFINITE, TINY_PIXELS = 1, 2


#: The bits of :data:`._division.TINY`, and of the sign of a float64.
_TINY_BITS, _SIGN = np.int64(np.float64(TINY).view(np.int64)), np.int64(-(2**63))


@numba.njit(cache=True, nogil=True)
def _count_tiny(row):
    """How many float64 pixels of ``row`` are nonzero and below :data:`._division.TINY`.

    On the bits: a nonzero ``|v|`` below ``TINY`` has bits ``1 .. TINY_BITS - 1``; moving
    them down by one and flipping the sign bit turns that range into the bottom of the
    signed integers (integer comparisons vectorise and count cheaply).
    """
    bits = row.view(np.int64)
    limit = (_TINY_BITS - 1) ^ _SIGN
    count = 0
    for x in range(bits.shape[0]):
        count += ((bits[x] & ~_SIGN) - 1) ^ _SIGN < limit
    return count


@numba.njit(cache=True, nogil=True)
def _vertical_block(raw, y0, n_rows, first, weights0, box0, truncate, exact_division, running, padded, half1,
                    extended, half_box1):
    """Rows ``y0 .. y0 + n_rows - 1`` of the vertical filters into ``padded[r, half1:]`` and
    ``extended[r, half_box1:]``: four at once inside the image (the usual 9-tap Gaussian and
    a boxcar), else row by row (edges, the first row of a range, other kernels)."""
    height, width = raw.shape
    half0 = box0 // 2
    inside = max(4, half0 + 1) <= y0 and y0 + BLOCK - 1 + max(4, box0 - 1 - half0) < height
    if n_rows == BLOCK and y0 > first and weights0.shape[0] == 9 and box0 > 1 and inside:
        vertical_gauss9x4(raw, y0, weights0, padded, half1)
        vertical_box4(raw, y0, box0, truncate, exact_division, running, extended, half_box1)
        return
    for r in range(n_rows):
        vertical_row(raw, y0 + r, first, weights0, box0, truncate, exact_division, running,
                     padded[r, half1:half1 + width], extended[r, half_box1:half_box1 + width])


@numba.njit(cache=True, nogil=True)
def _horizontal_block(padded, extended, n_rows, weights1, box1, truncate, exact_division, threshold, out, y0,
                      maxima, poison, totals, box, low):
    """Rows ``y0 .. y0 + n_rows - 1`` of the difference image from the block's vertical
    filters: two rows at a time (the usual 9-tap Gaussian and a boxcar), else row by row.
    Returns the column maxima's ``(before, after)`` for the next block."""
    width = out.shape[1]
    if box1 > 1:
        box_totals(extended, n_rows, box1, width, totals)
        if n_rows == BLOCK and weights1.shape[0] == 9:
            for r in range(0, BLOCK, 2):
                finish9x2(padded[r:], weights1, totals[r:], box1, truncate, exact_division, threshold, out, y0 + r,
                          maxima, poison)
                maxima = maxima[::-1]
            return maxima
        for r in range(n_rows):
            box_means(totals[r], box1, truncate, exact_division, box[r])
    else:
        for r in range(n_rows):
            copy_into(extended[r], box[r])
    for r in range(n_rows):
        target = out[y0 + r]
        if weights1.shape[0] == 9:
            finish_row9(padded[r], weights1, box[r], threshold, target, maxima, poison)
        elif weights1.shape[0] > 0:
            horizontal_gauss(padded[r], weights1, low)
            finish_row(low, box[r], threshold, target, maxima, poison)
        else:
            finish_row(padded[r], box[r], threshold, target, maxima, poison)
        maxima = maxima[::-1]
    return maxima


@numba.njit(cache=True, nogil=True)
def bandpass_rows(raw, weights0, weights1, box0, box1, truncate, threshold, out, first, stop,
                  exact_division=None):
    """Rows ``first:stop`` of trackpy's ``bandpass(raw, ...)`` into ``out`` (float64, raw's shape).

    ``weights0``/``weights1``: the Gaussian kernels of axis 0/1 (empty: no smoothing along
    that axis, trackpy's ``sigma <= 0``); ``box0``/``box1``: boxcar sizes (``<= 1``: none);
    ``truncate``: the raw image has an integer dtype, so each boxcar pass is truncated;
    ``exact_division``: ``None`` divides with :func:`._division.divide`, anything else with
    the divide instruction (for raw images with :data:`TINY_PIXELS`).

    Rows go through in blocks of :data:`._rows.BLOCK`: the vertical filters into small
    buffers, then the horizontal ones into ``out``.

    Returns ``(rows_max, status)``: the maximum of these rows of ``out``, and a bit set of
    :data:`NONFINITE` and :data:`TINY_PIXELS` (0: the rows are trackpy's).
    """
    width = raw.shape[1]
    half1, half_box1 = weights1.shape[0] // 2, max(box1, 1) // 2
    padded = np.zeros((BLOCK, width + 2 * half1))  # vertical lowpass rows, zeros around
    extended = np.empty((BLOCK, width + 2 * half_box1))  # vertical boxcar rows, edges repeated
    running = np.empty(width)  # the vertical boxcar's running sums
    totals, box, low = np.empty((BLOCK, width)), np.empty((BLOCK, width)), np.empty(width)
    maxima = (np.full(width, -np.inf), np.full(width, -np.inf))  # columns' maxima, before and after a row
    poison = np.zeros(width)
    n_tiny = 0
    for y0 in range(first, stop, BLOCK):
        n_rows = min(BLOCK, stop - y0)
        _vertical_block(raw, y0, n_rows, first, weights0, box0, truncate, exact_division, running, padded, half1,
                        extended, half_box1)
        if not truncate:  # integer pixels are never tiny
            for r in range(n_rows):
                n_tiny += _count_tiny(raw[y0 + r])
        maxima = _horizontal_block(padded, extended, n_rows, weights1, box1, truncate, exact_division, threshold,
                                   out, y0, maxima, poison, totals, box, low)
    status = (NONFINITE if np.isnan(poison.sum()) else 0) | (TINY_PIXELS if n_tiny else 0)
    return max(maxima[0].max(), maxima[1].max()), status


@numba.njit(cache=True, nogil=True)
def bandpass_kernel(raw, weights0, weights1, box0, box1, truncate, threshold, out):
    """trackpy's ``bandpass(raw, ...)`` into ``out``: :func:`bandpass_rows` on every row,
    again with the divide instruction if the raw image has :data:`TINY_PIXELS`.

    Returns ``(image_max, status)``: ``out.max()``, and :data:`NONFINITE` if the image
    has NaN or infinite pixels (not handled here), else 0.
    """
    height = raw.shape[0]
    image_max, status = bandpass_rows(raw, weights0, weights1, box0, box1, truncate, threshold, out, 0, height)
    if status & TINY_PIXELS:
        image_max, status = bandpass_rows(raw, weights0, weights1, box0, box1, truncate, threshold, out, 0,
                                          height, True)
    return image_max, status & NONFINITE
