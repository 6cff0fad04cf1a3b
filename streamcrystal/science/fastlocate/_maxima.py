"""trackpy's ``grey_dilation`` local maxima with exact running-max filters.

trackpy dilates the integer image with a flat ``size[0] x size[1]`` box
(``scipy.ndimage.grey_dilation(image, size, mode="constant")``, zeros outside) and keeps
the pixels equal to their dilation and above the percentile threshold. scipy's box covers
``[i - (n - 1) // 2, i + n // 2]`` along an axis of size ``n`` (grey_dilation shifts even
boxes by one). A maximum is exact in any order, so a running maximum gives scipy's
dilation exactly: along rows by doubling, along columns by the van Herk / Gil-Werman
algorithm (block-wise prefix and suffix maxima: three comparisons per pixel whatever the
box size), vectorised across the row. Pixels are all >= 0, so the zero padding never wins.

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
def _pairwise_max(source, target, step):
    """``target[k] = max(source[k], source[k + step])`` (the last ``step`` values copied).

    Slices and ``a if a > b else b`` keep the loop vectorised (numba's ``max()`` is not).
    """
    n = source.shape[0] - step
    first, second, out = source[:n], source[step:], target[:n]
    for k in range(n):
        a, b = first[k], second[k]
        out[k] = a if a > b else b
    target[n:] = source[n:]


@numba.njit(cache=True, nogil=True)
def _running_max_rows(image, size, out):
    """``out[y, x] = max(image[y, x - (size-1)//2 : x + size//2 + 1])`` (zeros outside).

    Along a row, by doubling (it vectorises, unlike van Herk/Gil-Werman's block scans):
    after the pass of step ``j`` a value is the maximum of the ``2 * j`` from it on; two
    overlapping runs of the largest power of two ``<= size`` cover the box.
    """
    height, width = image.shape
    before = (size - 1) // 2
    length = width + size - 1  # the zero-extended row
    buffers = np.zeros((2, length), dtype=image.dtype)
    run = 1
    while run * 2 <= size:
        run *= 2
    tail = size - run
    for y in range(height):
        buffers[0, :before] = 0
        buffers[0, before:before + width] = image[y]
        buffers[0, before + width:] = 0
        current = 0
        step = 1
        while step < run:
            _pairwise_max(buffers[current], buffers[1 - current], step)
            current = 1 - current
            step *= 2
        first, second, target = buffers[current, :width], buffers[current, tail:tail + width], out[y]
        for x in range(width):
            a, b = first[x], second[x]
            target[x] = a if a > b else b


@numba.njit(cache=True, nogil=True)
def _elementwise_max(first, second, out):
    for x in range(out.shape[0]):
        a, b = first[x], second[x]
        out[x] = a if a > b else b


#: Columns per strip of the column pass: its prefix and suffix buffers stay in cache.
STRIP = 512


@numba.njit(cache=True, nogil=True)
def _running_max_columns(image, size, out):
    """Like :func:`_running_max_rows` along axis 0: van Herk/Gil-Werman, vectorised along
    rows, over strips of :data:`STRIP` columns."""
    height, width = image.shape
    before = (size - 1) // 2
    length = height + size - 1  # zero rows before and after
    prefix = np.empty((length, STRIP), dtype=image.dtype)
    suffix = np.empty((length, STRIP), dtype=image.dtype)
    zero = np.zeros(STRIP, dtype=image.dtype)
    for x0 in range(0, width, STRIP):
        x1 = min(x0 + STRIP, width)
        n = x1 - x0
        for start in range(0, length, size):
            stop = min(start + size, length)
            for k in range(start, stop):
                y = k - before
                row = image[y, x0:x1] if 0 <= y < height else zero[:n]
                if k == start:
                    prefix[k, :n] = row
                else:
                    _elementwise_max(prefix[k - 1, :n], row, prefix[k, :n])
            for k in range(stop - 1, start - 1, -1):
                y = k - before
                row = image[y, x0:x1] if 0 <= y < height else zero[:n]
                if k == stop - 1:
                    suffix[k, :n] = row
                else:
                    _elementwise_max(suffix[k + 1, :n], row, suffix[k, :n])
        for y in range(height):
            _elementwise_max(suffix[y, :n], prefix[y + size - 1, :n], out[y, x0:x1])


@numba.njit(cache=True, nogil=True)
def _extent(size):
    """Pixels before and after the centre in scipy's box of ``size`` (none when size <= 1)."""
    return ((size - 1) // 2, size // 2) if size > 1 else (0, 0)


@numba.njit(cache=True, nogil=True)
def _count_maxima(row, top, threshold):
    """How many pixels of a row are above ``threshold`` and equal to their dilation."""
    count = 0
    for x in range(row.shape[0]):
        value = row[x]
        count += (value > threshold) & (value == top[x])
    return count


@numba.njit(cache=True, nogil=True)
def _collect_dense(image, threshold, margin0, margin1, dilated, n_candidates):
    """The maxima: pixels above ``threshold`` equal to their dilation (a branch-free count
    per row first: maxima are rare, candidates are not)."""
    height, width = image.shape
    coords = np.empty((n_candidates, 2), dtype=np.intp)
    n_maxima = 0
    n_inside = 0
    for y in range(height):
        row, top = image[y], dilated[y]
        count = _count_maxima(row, top, threshold)
        if count == 0:
            continue
        n_maxima += count
        if not margin0 <= y < height - margin0:
            continue
        for x in range(margin1, width - margin1):
            value = row[x]
            if value > threshold and value == top[x]:
                coords[n_inside, 0] = y
                coords[n_inside, 1] = x
                n_inside += 1
    return coords[:n_inside].copy(), n_maxima


@numba.njit(cache=True, nogil=True)
def _collect_sparse(image, threshold, size0, size1, margin0, margin1):
    """The maxima: candidates no other candidate in their box outshines."""
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
def maxima_kernel(image, size0, size1, threshold, margin0, margin1, dilated, strategy=0):
    """Local maxima of ``image`` above ``threshold``, as trackpy's ``grey_dilation`` finds them.

    ``threshold`` has the image's dtype (an integer pixel is above a float threshold ``t``
    exactly when it is above ``floor(t)``; integer comparisons vectorise). ``dilated``
    (image-sized scratch) receives the dilation when it is computed. ``strategy``: 0 picks
    the cheaper way, 1 compares candidates, 2 dilates (for tests).

    Returns ``(coords, n_maxima)``: the (row, col) of the maxima at least ``margin`` from
    every edge, in C order (``np.where``'s), and how many maxima there were with the margins.
    """
    n_candidates = 0
    for value in image.ravel():
        n_candidates += value > threshold
    if strategy == 1 or (strategy == 0 and n_candidates * max(size0, 1) <= image.size // 8):
        return _collect_sparse(image, threshold, size0, size1, margin0, margin1)
    if size0 > 1:
        _running_max_columns(image, size0, dilated)
    else:
        dilated[:] = image
    if size1 > 1:
        _running_max_rows(dilated, size1, dilated)  # row by row through a buffer: in place
    return _collect_dense(image, threshold, margin0, margin1, dilated, n_candidates)
