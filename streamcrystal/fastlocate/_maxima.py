"""trackpy's ``grey_dilation`` local maxima with an exact running-max filter.

trackpy dilates the integer image with a flat ``size[0] x size[1]`` box
(``scipy.ndimage.grey_dilation(image, size, mode="constant")``, zeros outside) and keeps
the pixels equal to their dilation and above the percentile threshold. scipy's box covers
``[i - (n - 1) // 2, i + n // 2]`` along an axis of size ``n`` (grey_dilation shifts even
boxes by one). A maximum is exact in any order, so the van Herk / Gil-Werman algorithm
(block-wise prefix and suffix maxima: three comparisons per pixel whatever the box size)
gives scipy's dilation exactly. Pixels are all >= 0, so the zero padding never wins.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["maxima_kernel"]


@numba.njit(cache=True, nogil=True)
def _block_maxima(extended, size, prefix, suffix):
    """Prefix and suffix maxima of ``extended`` within consecutive blocks of ``size``."""
    length = extended.shape[0]
    for start in range(0, length, size):
        stop = min(start + size, length)
        running = extended[start]
        for k in range(start, stop):
            running = max(running, extended[k])
            prefix[k] = running
        running = extended[stop - 1]
        for k in range(stop - 1, start - 1, -1):
            running = max(running, extended[k])
            suffix[k] = running


@numba.njit(cache=True, nogil=True)
def _running_max_rows(image, size, out):
    """``out[y, x] = max(image[y, x - (size-1)//2 : x + size//2 + 1])`` (zeros outside)."""
    height, width = image.shape
    before = (size - 1) // 2
    length = width + size - 1  # the zero-extended row
    extended = np.zeros(length, dtype=image.dtype)
    prefix = np.empty(length, dtype=image.dtype)
    suffix = np.empty(length, dtype=image.dtype)
    for y in range(height):
        for x in range(width):
            extended[before + x] = image[y, x]
        _block_maxima(extended, size, prefix, suffix)
        for x in range(width):
            out[y, x] = max(suffix[x], prefix[x + size - 1])


@numba.njit(cache=True, nogil=True)
def _running_max_columns(image, size, out):
    """Like :func:`_running_max_rows` along axis 0, vectorised across each row."""
    height, width = image.shape
    before = (size - 1) // 2
    length = height + size - 1
    prefix = np.empty((length, width), dtype=image.dtype)
    suffix = np.empty((length, width), dtype=image.dtype)
    zero = np.zeros(width, dtype=image.dtype)
    for start in range(0, length, size):
        stop = min(start + size, length)
        for k in range(start, stop):
            y = k - before
            row = image[y] if 0 <= y < height else zero
            if k == start:
                prefix[k] = row
            else:
                for x in range(width):
                    prefix[k, x] = max(prefix[k - 1, x], row[x])
        for k in range(stop - 1, start - 1, -1):
            y = k - before
            row = image[y] if 0 <= y < height else zero
            if k == stop - 1:
                suffix[k] = row
            else:
                for x in range(width):
                    suffix[k, x] = max(suffix[k + 1, x], row[x])
    for y in range(height):
        for x in range(width):
            out[y, x] = max(suffix[y, x], prefix[y + size - 1, x])


@numba.njit(cache=True, nogil=True)
def maxima_kernel(image, size0, size1, threshold, margin0, margin1):
    """Local maxima of ``image`` above ``threshold``, as trackpy's ``grey_dilation`` finds them.

    Returns ``(coords, n_maxima)``: the (row, col) of the maxima at least ``margin`` from
    every edge, in C order (``np.where``'s), and how many maxima there were with the margins.
    """
    height, width = image.shape
    dilated = image.copy()
    if size1 > 1:
        _running_max_rows(image, size1, dilated)
    if size0 > 1:
        _running_max_columns(dilated.copy(), size0, dilated)
    n_maxima = 0
    n_inside = 0
    for y in range(height):
        for x in range(width):
            value = image[y, x]
            if value > threshold and value == dilated[y, x]:
                n_maxima += 1
                if margin0 <= y < height - margin0 and margin1 <= x < width - margin1:
                    n_inside += 1
    coords = np.empty((n_inside, 2), dtype=np.intp)
    k = 0
    for y in range(margin0, height - margin0):
        for x in range(margin1, width - margin1):
            value = image[y, x]
            if value > threshold and value == dilated[y, x]:
                coords[k, 0] = y
                coords[k, 1] = x
                k += 1
    return coords, n_maxima
