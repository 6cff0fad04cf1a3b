"""trackpy's ``grey_dilation`` local maxima with exact running-max filters.

trackpy dilates the integer image with a flat ``size[0] x size[1]`` box
(``scipy.ndimage.grey_dilation(image, size, mode="constant")``, zeros outside) and keeps
the pixels equal to their dilation and above the percentile threshold. scipy's box covers
``[i - (n - 1) // 2, i + n // 2]`` along an axis of size ``n`` (grey_dilation shifts even
boxes by one). A maximum is exact in any order, so running maxima give scipy's dilation
exactly. Along columns: the van Herk / Gil-Werman algorithm (block-wise prefix and suffix
maxima: three comparisons per pixel whatever the box size), vectorised across the row.
Along rows only where it matters: a pixel equals its dilation exactly when it equals its
column maximum and no column maximum in its box along the row is larger; the few pixels
that pass the first test are checked in their box (rows with many such pixels, as in flat
images, get the running maximum of the whole row, by doubling). Pixels are all >= 0, so
the zero padding never wins.

Only a pixel above the threshold can be a maximum, and only such a pixel can outshine it.
When they are few (a Bragg image: the brightest peak sets the integer gamut, the noise
rounds to zero, and the threshold is a high percentile of what is left), each of them is
compared with the others in its box directly, which skips the dilation altogether.
"""
from __future__ import annotations

import numba
import numpy as np

from ._rows import copy_into

__all__ = ["maxima_kernel", "few_candidates", "band_maxima"]


@numba.njit(cache=True, nogil=True)
def _max_of(first, second, out):
    """``out = maximum(first, second)``, elementwise (``a if a > b else b`` vectorises;
    numba's ``max()`` does not)."""
    for k in range(out.shape[0]):
        a, b = first[k], second[k]
        out[k] = a if a > b else b


@numba.njit(cache=True, nogil=True)
def _running_max_row(row, size, buffers, out):
    """``out[x] = max(row[x - (size-1)//2 : x + size//2 + 1])`` (zeros outside); ``out`` may
    be ``row``.

    By doubling (it vectorises, unlike van Herk/Gil-Werman's scans along the row): after
    the pass of step ``j`` a value is the maximum of the ``2 j`` from it on; two overlapping
    runs of the largest power of two ``<= size`` cover the box. Each pass shortens the
    valid part of the zero-extended row by its step.
    """
    width = row.shape[0]
    before = (size - 1) // 2
    length = width + size - 1
    extended = buffers[0]
    for k in range(length):
        extended[k] = 0
    for x in range(width):
        extended[before + x] = row[x]
    run = 1
    while run * 2 <= size:
        run *= 2
    current = 0
    step = 1
    while step < run:
        length -= step
        source, target = buffers[current], buffers[1 - current]
        _max_of(source[:length], source[step:step + length], target[:length])
        current = 1 - current
        step *= 2
    tail = size - run
    source = buffers[current]
    _max_of(source[:width], source[tail:tail + width], out)


#: Columns per strip of the column pass: the suffix maxima of a block of rows stay in L2.
STRIP = 1024


@numba.njit(cache=True, nogil=True)
def _scan_rows(image, rows, x0, x1, scan):
    """``scan[k] = max(scan[k - 1], image[rows[k], x0:x1])`` down the given image rows (zero
    rows where they fall outside the image); ``scan[0]`` is the first row itself. Each row
    goes to a new buffer row: in-place maxima would not vectorise (LLVM's overlap check)."""
    height = image.shape[0]
    n = x1 - x0
    for k in range(rows.shape[0]):
        y = rows[k]
        current = scan[k, :n]
        if k == 0:
            if 0 <= y < height:
                copy_into(image[y, x0:x1], current)
            else:
                current[:] = 0
        elif 0 <= y < height:
            _max_of(scan[k - 1, :n], image[y, x0:x1], current)
        else:
            copy_into(scan[k - 1, :n], current)


@numba.njit(cache=True, nogil=True)
def _running_max_columns(image, size, first, stop, out):
    """Rows ``first:stop`` of ``out[y, x] = max(image[y - (size-1)//2 : y + size//2 + 1, x])``
    (zeros outside): van Herk/Gil-Werman along columns, vectorised along rows, over strips
    of :data:`STRIP` columns.

    The boxes of the rows ``y`` starting in one block of ``size`` rows are that block's
    suffix maxima from ``y``'s box start, joined with the next block's prefix maxima.
    """
    width = image.shape[1]
    before = (size - 1) // 2
    suffix = np.empty((size, STRIP), dtype=image.dtype)
    prefix = np.empty((size, STRIP), dtype=image.dtype)
    backward = np.arange(size - 1, -1, -1)
    forward = np.arange(size)
    for x0 in range(0, width, STRIP):
        x1 = min(x0 + STRIP, width)
        n = x1 - x0
        for start in range(first - before, stop - before, size):
            _scan_rows(image, start + backward, x0, x1, suffix)  # suffix[size - 1 - j]: rows j.. of the block
            _scan_rows(image, start + size + forward, x0, x1, prefix)  # prefix[j]: rows ..j of the next
            for j in range(min(size, stop - before - start)):
                y = start + j + before
                if j == 0:
                    copy_into(suffix[size - 1, :n], out[y, x0:x1])
                else:
                    _max_of(suffix[size - 1 - j, :n], prefix[j - 1, :n], out[y, x0:x1])


@numba.njit(cache=True, nogil=True)
def _extent(size):
    """Pixels before and after the centre in scipy's box of ``size`` (none when size <= 1)."""
    return ((size - 1) // 2, size // 2) if size > 1 else (0, 0)


@numba.njit(cache=True, nogil=True)
def _flag(row, top, threshold, flags):
    """``flags[x] = row[x] > threshold and row[x] == top[x]`` (byte operations only: they
    vectorise 32 pixels wide)."""
    for x in range(row.shape[0]):
        value = row[x]
        flags[x] = (value > threshold) & (value == top[x])


@numba.njit(cache=True, nogil=True)
def _outshone(top, x, before, after, value):
    """Whether some ``top[x - before : x + after + 1]`` exceeds ``value``."""
    for k in range(max(x - before, 0), min(x + after + 1, top.shape[0])):
        if top[k] > value:
            return True
    return False


#: A row with flagged pixels in more of its 8-pixel words than its width over 8 times this
#: gets the full running maximum along the row instead of a window scan per flagged pixel
#: (flat images).
SCAN_LIMIT = 8


@numba.njit(cache=True, nogil=True)
def _row_maxima(row, top, threshold, size1, flags, buffers, found):
    """The columns (into ``found``; returns how many) where ``row`` is above ``threshold`` and
    equal to the maximum of ``top`` (the column maxima) over scipy's box along the row.

    A pixel below its column maximum is no maximum; the few equal to it (flagged) are
    checked against the column maxima in their box, one by one or, when many, by the
    running maximum of the whole row.
    """
    width = row.shape[0]
    _flag(row, top, threshold, flags[:width])  # ``flags``: zeros up to a multiple of 8
    words = flags.view(np.uint64)  # eight pixels at a time
    n_words = 0
    for k in range(words.shape[0]):
        n_words += words[k] != 0
    if n_words == 0:
        return 0
    before, after = _extent(size1)
    whole = size1 > 1 and n_words > width // (8 * SCAN_LIMIT)
    if whole:
        _running_max_row(top, size1, buffers, buffers[2, :width])
    n = 0
    for k in range(words.shape[0]):
        if words[k] == 0:
            continue
        for x in range(8 * k, min(8 * k + 8, width)):
            if flags[x] and not (row[x] < buffers[2, x] if whole else _outshone(top, x, before, after, row[x])):
                found[n] = x
                n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _column_maxima(image, size, first, stop, out):
    """Rows ``first:stop`` of the dilation along columns (a copy for ``size <= 1``)."""
    if size > 1:
        _running_max_columns(image, size, first, stop, out)
    else:
        for y in range(first, stop):
            copy_into(image[y], out[y])


@numba.njit(cache=True, nogil=True)
def band_maxima(image, size0, size1, threshold, margin0, margin1, first, stop, column_max):
    """The maxima of rows ``first:stop``: pixels above ``threshold`` equal to scipy's
    ``grey_dilation(image, (size0, size1))``.

    ``column_max`` (image-sized scratch) receives rows ``first:stop`` of the dilation along
    columns. Returns ``(coords, n_maxima)``: the (row, col) of the maxima at least ``margin``
    from every edge, in C order, and how many maxima the rows have with the margins.
    """
    height, width = image.shape
    flags = np.zeros(8 * ((width + 7) // 8), dtype=np.uint8)
    buffers = np.empty((3, width + max(size1, 1) - 1), dtype=image.dtype)
    found = np.empty(width, dtype=np.intp)
    coords = np.empty((64, 2), dtype=np.intp)
    n_maxima = n_inside = 0
    chunk = max(size0, 64)  # rows of column maxima made, then used while in the cache
    for y in range(first, stop):
        if (y - first) % chunk == 0:
            _column_maxima(image, size0, y, min(y + chunk, stop), column_max)
        n = _row_maxima(image[y], column_max[y], threshold, size1, flags, buffers, found)
        n_maxima += n
        if n == 0 or not margin0 <= y < height - margin0:
            continue
        for i in range(n):
            x = found[i]
            if margin1 <= x < width - margin1:
                if n_inside == coords.shape[0]:
                    coords = np.concatenate((coords, np.empty_like(coords)))
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
def few_candidates(n_candidates, size0, n_pixels):
    """Whether comparing the candidates with each other is cheaper than the dilation."""
    return n_candidates * max(size0, 1) <= n_pixels // 8


@numba.njit(cache=True, nogil=True)
def maxima_kernel(image, size0, size1, threshold, margin0, margin1, dilated, strategy=0, n_candidates=-1):
    """Local maxima of ``image`` above ``threshold``, as trackpy's ``grey_dilation`` finds them.

    ``threshold`` has the image's dtype (an integer pixel is above a float threshold ``t``
    exactly when it is above ``floor(t)``; integer comparisons vectorise). ``dilated``
    (image-sized scratch) receives the dilation along columns when it is computed. ``strategy``: 0 picks
    the cheaper way, 1 compares candidates, 2 dilates (for tests). ``n_candidates``: how
    many pixels are above ``threshold``, if known (the histogram tells), else counted.

    Returns ``(coords, n_maxima)``: the (row, col) of the maxima at least ``margin`` from
    every edge, in C order (``np.where``'s), and how many maxima there were with the margins.
    """
    if n_candidates < 0:
        n_candidates = 0
        for value in image.ravel():
            n_candidates += value > threshold
    if strategy == 1 or (strategy == 0 and few_candidates(n_candidates, size0, image.size)):
        return _collect_sparse(image, threshold, size0, size1, margin0, margin1)
    return band_maxima(image, size0, size1, threshold, margin0, margin1, 0, image.shape[0], dilated)
