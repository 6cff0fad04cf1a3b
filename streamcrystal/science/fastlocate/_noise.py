"""trackpy's background mean and noise for the ``ep`` column, without a whole-image dilation.

``trackpy.uncertainty.measure_noise`` takes the raw pixels *outside* the binary dilation of
the integer image's nonzero pixels by the feature disk (``binary_mask(radius)``, nothing
beyond the border) and returns their ``mean()`` and ``std()``. The dilation is built as
one bit per pixel (:mod:`._coverage`); the pixels outside it are gathered in C order.

The background values are then summed in numpy's own order: ``np.add.reduce`` on a
contiguous float64 array is ``0.0 + pairwise(values)``, with numpy's pairwise summation
(blocks of at most 128 values summed with 8 interleaved accumulators, larger runs split
at a multiple of 8 near the middle). ``mean = sum / n``; ``std = sqrt(sum((v - mean)**2) / n)``
exactly as ``numpy._core._methods._var`` does it, so both equal trackpy's bit for bit. The
squared deviations are summed as they are computed (the same values in the same order as
numpy's array of them), in one pass instead of two.
"""
from __future__ import annotations

import numba
import numpy as np

from ._coverage import covered_bits, n_words, pack_nonzero, unpack
from .parallel import get_threads, map_bands

__all__ = ["covered_kernel", "background_kernel", "background_values", "gather_background", "mean_std",
           "pairwise_sum"]

_ONE, _ALL = np.uint64(1), np.uint64(2**64 - 1)


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
def _pairwise_leaf_squares(values, start, n, mean):
    """:func:`_pairwise_leaf` of ``(values - mean) ** 2`` as numpy's ``_var`` makes them
    (``x = arr - mean``, then ``x * x``), without storing them."""
    if n < 8:
        total = -0.0
        for i in range(start, start + n):
            d = values[i] - mean
            total += d * d
        return total
    d0, d1, d2, d3 = values[start] - mean, values[start + 1] - mean, values[start + 2] - mean, values[start + 3] - mean
    d4, d5, d6, d7 = values[start + 4] - mean, values[start + 5] - mean, values[start + 6] - mean, values[start + 7] - mean
    r0, r1, r2, r3, r4, r5, r6, r7 = d0 * d0, d1 * d1, d2 * d2, d3 * d3, d4 * d4, d5 * d5, d6 * d6, d7 * d7
    i = start + 8
    blocks_end = start + n - n % 8
    while i < blocks_end:
        d0, d1, d2, d3 = values[i] - mean, values[i + 1] - mean, values[i + 2] - mean, values[i + 3] - mean
        d4, d5, d6, d7 = values[i + 4] - mean, values[i + 5] - mean, values[i + 6] - mean, values[i + 7] - mean
        r0 += d0 * d0
        r1 += d1 * d1
        r2 += d2 * d2
        r3 += d3 * d3
        r4 += d4 * d4
        r5 += d5 * d5
        r6 += d6 * d6
        r7 += d7 * d7
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < start + n:
        d = values[i] - mean
        total += d * d
        i += 1
    return total


@numba.njit(cache=True, nogil=True)
def pairwise_sum(values, start, n, squares=False, mean=0.0):
    """numpy's pairwise sum of ``values[start:start + n]`` (float64, contiguous); with
    ``squares``, of the squared deviations ``(values - mean) ** 2``.

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
            if squares:
                result = _pairwise_leaf_squares(values, starts[i], sizes[i], mean)
            else:
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
def gather_background(raw, covered, first, stop, values):
    """The pixels of rows ``first:stop`` whose bit in ``covered`` is not set, in C order,
    as float64 into ``values``; returns how many. Whole words skip or copy 64 pixels.

    In a word with both kinds of pixels, every pixel is written at the next free place and
    only an uncovered one takes it (no branch to mispredict: on noisy images most words
    are mixed). A covered pixel after the last uncovered one is written one place past
    them, if ``values`` has room: give exactly as many places as there are pixels when
    other threads fill the places after them.
    """
    width = raw.shape[1]
    capacity = values.shape[0]
    n = 0
    for y in range(first, stop):
        row, bits = raw[y], covered[y]
        for k in range(bits.shape[0]):
            word = bits[k]
            if word == _ALL:
                continue
            base = k << 6
            end = min(base + 64, width)
            if word == 0:
                for x in range(base, end):
                    values[n + x - base] = np.float64(row[x])
                n += end - base
                continue
            free = ~word
            for x in range(base, end):
                if n < capacity:
                    values[n] = np.float64(row[x])
                n += np.int64((free >> np.uint64(x - base)) & _ONE)
    return n


@numba.njit(cache=True, nogil=True)
def background_values(raw, integer, half_widths, n_nonzero, covered, values):
    """The whole image's mask into ``covered`` (:func:`._coverage.covered_bits`) and the raw
    pixels outside it into ``values``; returns how many. One call: it runs without the
    GIL from start to end."""
    height = raw.shape[0]
    covered_bits(integer, half_widths, n_nonzero, covered, 0, height)
    return gather_background(raw, covered, 0, height, values)


def _sum(values: np.ndarray, n: int, mean: float | None = None) -> float:
    """numpy's ``np.add.reduce(values[:n])`` (with a ``mean``: of ``(values[:n] - mean) ** 2``):
    ``0.0 +`` its pairwise sum. numpy's first step splits the values in two halves (at a
    multiple of 8) and adds their sums: with several threads (:mod:`.parallel`) the halves
    are summed on two of them."""
    squares, mean = mean is not None, 0.0 if mean is None else float(mean)
    half = n // 2 - (n // 2) % 8
    if n <= 128 or get_threads() == 1:
        return 0.0 + pairwise_sum(values, 0, n, squares, mean)
    left, right = map_bands(lambda start, stop: pairwise_sum(values, start, stop - start, squares, mean),
                            [(0, half), (half, n)])
    return 0.0 + (left + right)


def mean_std(values: np.ndarray, n: int) -> tuple[float, float]:
    """``(mean, std)`` of ``values[:n]`` as numpy computes them (NaN when undefined).

    Examples
    --------
    >>> values = np.random.default_rng(0).random(1000)
    >>> mean_std(values.copy(), 1000) == (values.mean(), values.std())
    True
    """
    if n == 0:
        return np.nan, np.nan
    mean = np.float64(_sum(values, n) / n)
    if n == 1:
        return mean, np.nan
    return mean, np.float64(np.sqrt(_sum(values, n, mean) / n))


@numba.njit(cache=True, nogil=True)
def covered_kernel(image, half_widths, n_nonzero, covered, strategy=0):
    """``covered[...]``: uint8 mask of ``binary_dilation(image != 0, disk)``
    (:func:`._coverage.covered_bits`, unpacked).

    ``half_widths[d]``: the disk's half-width ``d`` rows off its centre; ``n_nonzero``:
    how many pixels are nonzero. ``strategy``: 0 picks the cheaper way, 1 paints, 2 dilates
    rows (for tests).
    """
    height, width = image.shape
    bits = np.empty((height, n_words(width)), dtype=np.uint64)
    covered_bits(image, half_widths, n_nonzero, bits, 0, height, strategy)
    for y in range(height):
        unpack(bits[y], covered[y])


@numba.njit(cache=True, nogil=True)
def _pack_rows(mask, bits):
    for y in range(mask.shape[0]):
        pack_nonzero(mask[y], bits[y])


def background_kernel(raw: np.ndarray, covered: np.ndarray, scratch: np.ndarray) -> tuple[int, float, float]:
    """``(n, mean, std)`` of ``raw[covered == 0]`` as numpy computes them (NaN when undefined).

    ``covered``: a uint8 mask; ``scratch`` (float64, at least ``raw.size``) receives the
    values.
    """
    bits = np.empty((raw.shape[0], n_words(raw.shape[1])), dtype=np.uint64)
    _pack_rows(covered, bits)
    n = gather_background(raw, bits, 0, raw.shape[0], scratch)
    return (n, *mean_std(scratch, n))
