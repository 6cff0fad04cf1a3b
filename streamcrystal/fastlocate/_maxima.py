"""trackpy's ``grey_dilation`` local maxima with an exact running-max filter.

trackpy dilates the integer image with a flat ``size[0] x size[1]`` box
(``scipy.ndimage.grey_dilation(image, size, mode="constant")``, zeros outside) and keeps
the pixels equal to their dilation and above the percentile threshold. scipy's box covers
``[i - (n - 1) // 2, i + n // 2]`` along an axis of size ``n`` (grey_dilation shifts even
boxes by one). A maximum is exact in any order, so the van Herk / Gil-Werman algorithm
(block-wise prefix and suffix maxima: three comparisons per pixel whatever the box size)
gives scipy's dilation exactly. Pixels are all >= 0, so the zero padding never wins.

Only a pixel above the threshold can be a maximum, and only such a pixel can outshine it.
When they are few (a Bragg image: the brightest peak sets the integer gamut, the noise
rounds to zero, and the threshold is a high percentile of what is left), each of them is
compared with the others in its box directly, which skips the dilation altogether.
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
def _extent(size):
    """Pixels before and after the centre in scipy's box of ``size`` (none when size <= 1)."""
    return ((size - 1) // 2, size // 2) if size > 1 else (0, 0)


@numba.njit(cache=True, nogil=True)
def _collect(image, threshold, size0, size1, margin0, margin1, dilated, sparse):
    """The maxima, by the dilation (``sparse`` False) or by the candidates (``sparse`` True)."""
    height, width = image.shape
    # candidates: the pixels above the threshold, in C order, rows indexed as in CSR
    row_start = np.zeros(height + 1, dtype=np.int64)
    n_candidates = 0
    for y in range(height):
        for x in range(width):
            if image[y, x] > threshold:
                n_candidates += 1
        row_start[y + 1] = n_candidates
    columns = np.empty(n_candidates, dtype=np.int64)
    k = 0
    for y in range(height):
        for x in range(width):
            if image[y, x] > threshold:
                columns[k] = x
                k += 1
    before0, after0 = _extent(size0)
    before1, after1 = _extent(size1)
    is_max = np.zeros(n_candidates, dtype=np.bool_)
    for y in range(height):
        for i in range(row_start[y], row_start[y + 1]):
            x = columns[i]
            value = image[y, x]
            if not sparse:
                is_max[i] = value == dilated[y, x]
                continue
            outshone = False
            for row in range(max(y - before0, 0), min(y + after0, height - 1) + 1):
                first = row_start[row] + np.searchsorted(columns[row_start[row]:row_start[row + 1]], x - before1)
                for j in range(first, row_start[row + 1]):
                    if columns[j] > x + after1:
                        break
                    if image[row, columns[j]] > value:
                        outshone = True
                        break
                if outshone:
                    break
            is_max[i] = not outshone
    n_maxima = 0
    n_inside = 0
    for y in range(height):
        for i in range(row_start[y], row_start[y + 1]):
            if is_max[i]:
                n_maxima += 1
                if margin0 <= y < height - margin0 and margin1 <= columns[i] < width - margin1:
                    n_inside += 1
    coords = np.empty((n_inside, 2), dtype=np.intp)
    k = 0
    for y in range(height):
        for i in range(row_start[y], row_start[y + 1]):
            if is_max[i] and margin0 <= y < height - margin0 and margin1 <= columns[i] < width - margin1:
                coords[k, 0] = y
                coords[k, 1] = columns[i]
                k += 1
    return coords, n_maxima


@numba.njit(cache=True, nogil=True)
def maxima_kernel(image, size0, size1, threshold, margin0, margin1, strategy=0):
    """Local maxima of ``image`` above ``threshold``, as trackpy's ``grey_dilation`` finds them.

    Returns ``(coords, n_maxima)``: the (row, col) of the maxima at least ``margin`` from
    every edge, in C order (``np.where``'s), and how many maxima there were with the margins.
    ``strategy``: 0 picks the cheaper way, 1 compares candidates, 2 dilates (for tests).
    """
    n_candidates = 0
    for value in image.ravel():
        n_candidates += value > threshold
    if strategy == 1 or (strategy == 0 and n_candidates * max(size0, 1) <= image.size // 8):
        return _collect(image, threshold, size0, size1, margin0, margin1, image, True)
    dilated = image.copy()
    if size1 > 1:
        _running_max_rows(image, size1, dilated)
    if size0 > 1:
        _running_max_columns(dilated.copy(), size0, dilated)
    return _collect(image, threshold, size0, size1, margin0, margin1, dilated, False)
