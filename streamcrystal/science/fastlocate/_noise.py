"""trackpy's background mean and noise for the ``ep`` column, without a whole-image dilation.

``trackpy.uncertainty.measure_noise`` takes the raw pixels *outside* the binary dilation of
the integer image's nonzero pixels by the feature disk (``binary_mask(radius)``, nothing
beyond the border) and returns their ``mean()`` and ``std()``. Here that dilation is built
one of two exact ways, whichever is cheaper for the image:

* few nonzero pixels (the usual Bragg image: the gamut is set by the brightest peak, so
  the noise rounds to zero): paint the disk's rows around each nonzero pixel;
* many: per row, the distance to the nearest nonzero pixel; a pixel is covered when some
  disk row ``d`` (half-width ``w[|d|]``) finds one at most ``w[|d|]`` columns away.

The background values are then summed in numpy's own order: ``np.add.reduce`` on a
contiguous float64 array is ``0.0 + pairwise(values)``, with numpy's pairwise summation
(blocks of at most 128 values summed with 8 interleaved accumulators, larger runs split
at a multiple of 8 near the middle). ``mean = sum / n``; ``std = sqrt(sum((v - mean)**2) / n)``
exactly as ``numpy._core._methods._var`` does it, so both equal trackpy's bit for bit.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["covered_kernel", "background_kernel", "pairwise_sum"]


@numba.njit(cache=True, nogil=True)
def _paint(image, half_widths, covered):
    height, width = image.shape
    reach = half_widths.shape[0] - 1
    for y in range(height):
        for x in range(width):
            if image[y, x] == 0:
                continue
            for d in range(-reach, reach + 1):
                row = y + d
                if row < 0 or row >= height:
                    continue
                w = half_widths[abs(d)]
                for col in range(max(x - w, 0), min(x + w + 1, width)):
                    covered[row, col] = 1


@numba.njit(cache=True, nogil=True)
def _relax(source, target):
    """``target[x] = min(source[x], source[x - 1] + 1, source[x + 1] + 1)``, in uint8.

    Slices, conditional expressions and uint8 arithmetic (numba widens integer arithmetic
    to 64 bits unless told) keep the loop vectorised 32 pixels wide.
    """
    n = source.shape[0]
    one = np.uint8(1)
    target[0] = source[0]
    target[n - 1] = source[n - 1]
    if n > 1:
        a, b = source[0], np.uint8(source[1] + one)
        target[0] = a if a < b else b
        a, b = source[n - 1], np.uint8(source[n - 2] + one)
        target[n - 1] = a if a < b else b
    centre, left, right, out = source[1:n - 1], source[:n - 2], source[2:], target[1:n - 1]
    for x in range(n - 2):
        a, b, c = centre[x], np.uint8(left[x] + one), np.uint8(right[x] + one)
        m = a if a < b else b
        out[x] = m if m < c else c


@numba.njit(cache=True, nogil=True)
def _row_distance(row, cap, buffers, out):
    """``out[x]``: columns from x to the nearest nonzero pixel of ``row``, at most ``cap``
    (< 255): ``cap - 1`` relaxation sweeps, each exact for one more column of distance."""
    first = buffers[0]
    for x in range(row.shape[0]):
        first[x] = 0 if row[x] != 0 else cap
    current = 0
    for _ in range(cap - 1):
        _relax(buffers[current], buffers[1 - current])
        current = 1 - current
    out[:] = buffers[current]


@numba.njit(cache=True, nogil=True)
def _by_distances(image, half_widths, covered):
    height, width = image.shape
    reach = half_widths.shape[0] - 1
    cap = 0
    for d in range(reach + 1):
        cap = max(cap, half_widths[d] + 1)
    cap = np.uint8(cap)
    buffers = np.empty((2, width), dtype=np.uint8)
    window = 2 * reach + 1  # ring of the distance rows y - reach .. y + reach
    ring = np.empty((window, width), dtype=np.uint8)
    for row in range(min(reach, height)):
        _row_distance(image[row], cap, buffers, ring[row % window])
    for y in range(height):
        if y + reach < height:
            _row_distance(image[y + reach], cap, buffers, ring[(y + reach) % window])
        target = covered[y]
        for d in range(-reach, reach + 1):
            row = y + d
            if row < 0 or row >= height:
                continue
            w = np.uint8(half_widths[abs(d)])
            source = ring[row % window]
            for x in range(width):
                target[x] |= source[x] <= w


@numba.njit(cache=True, nogil=True)
def covered_kernel(image, half_widths, n_nonzero, covered, strategy=0):
    """``covered[...]``: uint8 mask of ``binary_dilation(image != 0, disk)``.

    ``half_widths[d]``: the disk's half-width ``d`` rows off its centre; ``n_nonzero``:
    how many pixels are nonzero. ``strategy``: 0 picks the cheaper way, 1 paints, 2 uses
    row distances (for tests).
    """
    covered[:] = 0
    area = 0
    for d in range(half_widths.shape[0]):
        area += (2 * half_widths[d] + 1) * (1 if d == 0 else 2)
    if strategy == 1 or (strategy == 0 and n_nonzero * area <= 4 * image.size):
        _paint(image, half_widths, covered)
    else:
        _by_distances(image, half_widths, covered)


@numba.njit(cache=True, nogil=True)
def _pairwise_leaf(values, start, n):
    """numpy's pairwise sum of at most 128 values."""
    if n < 8:
        total = -0.0
        for i in range(start, start + n):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = start + 8
    blocks_end = start + n - n % 8
    while i < blocks_end:
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < start + n:
        total += values[i]
        i += 1
    return total


@numba.njit(cache=True, nogil=True)
def pairwise_sum(values, start, n):
    """numpy's pairwise sum of ``values[start:start + n]`` (float64, contiguous).

    numpy recurses: ``sum(a, n) = sum(a, h) + sum(a + h, n - h)`` with ``h`` = ``n // 2``
    rounded down to a multiple of 8, down to runs of at most 128 values. The recursion is
    unrolled onto an explicit stack here (numba's on-disk cache mishandles recursion).
    """
    starts = np.empty(64, dtype=np.int64)
    sizes = np.empty(64, dtype=np.int64)
    stages = np.empty(64, dtype=np.int64)  # 0: new, 1: left half done, 2: right half done
    lefts = np.empty(64, dtype=np.float64)
    starts[0], sizes[0], stages[0] = start, n, 0
    top = 1
    result = 0.0
    while top > 0:
        i = top - 1
        if stages[i] == 0 and sizes[i] <= 128:
            result = _pairwise_leaf(values, starts[i], sizes[i])
            top -= 1
            continue
        half = sizes[i] // 2
        half -= half % 8
        if stages[i] == 0:
            stages[i] = 1
            starts[top], sizes[top], stages[top] = starts[i], half, 0
            top += 1
        elif stages[i] == 1:
            lefts[i] = result
            stages[i] = 2
            starts[top], sizes[top], stages[top] = starts[i] + half, sizes[i] - half, 0
            top += 1
        else:
            result = lefts[i] + result
            top -= 1
    return result


@numba.njit(cache=True, nogil=True)
def background_kernel(raw, covered, scratch):
    """``(n, mean, std)`` of ``raw[covered == 0]`` as numpy computes them (NaN when undefined).

    ``scratch`` (float64, at least ``raw.size``) receives the values, then their squared
    deviations.
    """
    height, width = raw.shape
    n = 0
    for y in range(height):
        for x in range(width):
            if covered[y, x] == 0:
                scratch[n] = np.float64(raw[y, x])
                n += 1
    if n == 0:
        return n, np.nan, np.nan
    mean = (0.0 + pairwise_sum(scratch, 0, n)) / n
    if n == 1:
        return n, mean, np.nan
    for i in range(n):
        deviation = scratch[i] - mean
        scratch[i] = deviation * deviation
    variance = (0.0 + pairwise_sum(scratch, 0, n)) / n
    return n, mean, np.sqrt(variance)
