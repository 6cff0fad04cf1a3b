"""The binary dilation behind trackpy's ``measure_noise``, one bit per pixel.

``trackpy.uncertainty.measure_noise`` keeps the raw pixels *outside*
``binary_dilation(integer != 0, binary_mask(radius))`` (nothing beyond the border). A
dilation is exact in any order, and one bit per pixel makes it cheap: a row of a
3888-pixel detector is 61 words. The dilation is built one of two ways, whichever is
cheaper for the image:

* few nonzero pixels (the usual Bragg image: the gamut is set by the brightest peak, so
  the noise rounds to zero): paint the disk's rows (runs of bits) around each of them;
* many: every row of nonzero bits dilated along itself by each of the disk's half-widths
  (each from the last by two shifted copies); row ``y`` of the dilation is the OR, over the
  disk's rows ``d``, of row ``y + d`` dilated by the half-width ``w[|d|]``.

Pixel ``x`` of a row is bit ``x % 64`` of word ``x // 64``; bits past the row's end are
zero in the packed nonzero pixels and never read in the dilation. Rows can be built in
independent ranges (one per thread).
"""
from __future__ import annotations

import numba
import numpy as np

from ._rows import copy_into

__all__ = ["n_words", "covered_bits", "unpack", "pack_nonzero", "few_nonzero", "count_uncovered"]

_ONE, _ALL = np.uint64(1), np.uint64(2**64 - 1)


@numba.njit(cache=True, nogil=True)
def n_words(width):
    """64-bit words of a row of ``width`` pixels."""
    return (width + 63) >> 6


#: Per lane of 8 (uint8) or 16 (uint16) bits: all bits but the top one, and the top one;
#: the multiplier gathering the lanes' low bits, in order, into the top byte (top four bits)
#: of the product (every partial product lands on its own bit: no carries).
_LOW7, _HIGH8, _GATHER8 = np.uint64(0x7F7F7F7F7F7F7F7F), np.uint64(0x8080808080808080), np.uint64(0x0102040810204080)
_LOW15, _HIGH16, _GATHER16 = np.uint64(0x7FFF7FFF7FFF7FFF), np.uint64(0x8000800080008000), np.uint64(0x0001000200040008)


@numba.njit(cache=True, nogil=True, inline="always")
def _packed_lanes(word, lane_bits):
    """The bits ``lane != 0`` of the 8 (4) lanes of a 64-bit word, lane 0 in bit 0.

    ``(lane & low) + low`` carries into the top bit exactly when the other bits are not all
    zero; OR the lane itself for its own top bit (no carry crosses lanes: the sum is below
    the top bit's double)."""
    if lane_bits == 8:
        top = (((word & _LOW7) + _LOW7) | word) & _HIGH8
        return ((top >> np.uint64(7)) * _GATHER8) >> np.uint64(56)
    top = (((word & _LOW15) + _LOW15) | word) & _HIGH16
    return ((top >> np.uint64(15)) * _GATHER16) >> np.uint64(48)


@numba.njit(cache=True, nogil=True)
def pack_nonzero(row, words):
    """``words``: the bits of ``row != 0`` (``row``: uint8 or uint16, C-contiguous).

    Eight (four) pixels at a time: read as one 64-bit word whose lanes are tested at once.
    """
    width = row.shape[0]
    per_group = 8 // row.itemsize  # pixels in 64 bits
    n_groups = width // per_group
    groups = row[:n_groups * per_group].view(np.uint64)
    per_word = 64 // per_group  # groups in a word of bits
    for k in range(words.shape[0]):
        word = np.uint64(0)
        for j in range(min(per_word, n_groups - k * per_word)):
            word |= _packed_lanes(groups[k * per_word + j], 8 * row.itemsize) << np.uint64(j * per_group)
        words[k] = word
    for x in range(n_groups * per_group, width):
        words[x >> 6] |= np.uint64(row[x] != 0) << np.uint64(x & 63)


@numba.njit(cache=True, nogil=True)
def _or_shifted(source, shift, target):
    """``target |= source`` moved ``shift`` pixels along the row (positive: to higher x)."""
    n = target.shape[0]
    step, bits = abs(shift) >> 6, np.uint64(abs(shift) & 63)
    back = np.uint64(64) - bits
    if shift > 0:
        for k in range(step, n):
            target[k] |= source[k - step] << bits
        if bits:
            for k in range(step + 1, n):
                target[k] |= source[k - step - 1] >> back
    else:
        for k in range(n - step):
            target[k] |= source[k + step] >> bits
        if bits:
            for k in range(n - step - 1):
                target[k] |= source[k + step + 1] << back


@numba.njit(cache=True, nogil=True)
def _row_dilations(row, widths, nonzero, dilations):
    """``dilations[k]``: the bits within ``widths[k]`` pixels of a nonzero pixel of ``row``
    (``widths`` ascending; ``nonzero``: a scratch row of words)."""
    pack_nonzero(row, nonzero)
    if widths[-1] < 64:
        _grow_words(nonzero, widths, dilations)
        return
    grown = 0
    for k in range(widths.shape[0]):
        target = dilations[k]
        copy_into(nonzero if k == 0 else dilations[k - 1], target)
        for w in range(grown + 1, widths[k] + 1):
            _or_shifted(nonzero, w, target)
            _or_shifted(nonzero, -w, target)
        grown = widths[k]


@numba.njit(cache=True, nogil=True)
def _grow_words(nonzero, widths, dilations):
    """:func:`_row_dilations` for widths below 64, a word at a time: each width ORs in the
    word and its neighbours moved by it, and the widths wanted are kept on the way."""
    n = nonzero.shape[0]
    zero = np.uint64(0)
    for k in range(n):
        before = nonzero[k - 1] if k > 0 else zero
        word = nonzero[k]
        after = nonzero[k + 1] if k + 1 < n else zero
        grown = word
        slot = 0
        if widths[0] == 0:
            dilations[0, k] = grown
            slot = 1
        for w in range(1, widths[-1] + 1):
            shift, back = np.uint64(w), np.uint64(64 - w)
            grown |= (word << shift) | (before >> back) | (word >> shift) | (after << back)
            if w == widths[slot]:
                dilations[slot, k] = grown
                slot += 1


@numba.njit(cache=True, nogil=True)
def _by_row_dilations(image, half_widths, covered, first, stop):
    """Rows ``first:stop`` of the dilation from row dilations: each image row is dilated
    once by every distinct half-width, into a ring of the ``2 reach + 1`` rows in reach."""
    height = image.shape[0]
    words = covered.shape[1]
    reach = half_widths.shape[0] - 1
    widths = np.unique(half_widths)
    slots = np.searchsorted(widths, half_widths)
    window = 2 * reach + 1
    ring = np.empty((window, widths.shape[0], words), dtype=np.uint64)
    nonzero = np.empty(words, dtype=np.uint64)
    ready = max(first - reach, 0)  # the next image row to dilate
    for y in range(first, stop):
        while ready < min(y + reach + 1, height):
            _row_dilations(image[ready], widths, nonzero, ring[ready % window])
            ready += 1
        target = covered[y]
        lowest, highest = max(y - reach, 0), min(y + reach, height - 1)
        copy_into(ring[lowest % window, slots[y - lowest]], target)
        for row in range(lowest + 1, highest + 1):
            source = ring[row % window, slots[abs(row - y)]]
            for k in range(words):
                target[k] |= source[k]


@numba.njit(cache=True, nogil=True)
def _set_run(words, start, stop):
    """Set bits ``start .. stop - 1`` of a row."""
    first, last = start >> 6, (stop - 1) >> 6
    low = _ALL << np.uint64(start & 63)
    high = _ALL >> np.uint64(63 - ((stop - 1) & 63))
    if first == last:
        words[first] |= low & high
        return
    words[first] |= low
    for k in range(first + 1, last):
        words[k] = _ALL
    words[last] |= high


@numba.njit(cache=True, nogil=True)
def _paint(image, half_widths, covered, first, stop):
    """Rows ``first:stop`` of the dilation: the disk's rows painted around each nonzero pixel
    in reach of them."""
    height, width = image.shape
    reach = half_widths.shape[0] - 1
    covered[first:stop] = 0
    for y in range(max(first - reach, 0), min(stop + reach, height)):
        for x in range(width):
            if image[y, x] == 0:
                continue
            for row in range(max(y - reach, first), min(y + reach + 1, stop)):
                w = half_widths[abs(row - y)]
                _set_run(covered[row], max(x - w, 0), min(x + w + 1, width))


@numba.njit(cache=True, nogil=True)
def _disk_area(half_widths):
    area = 0
    for d in range(half_widths.shape[0]):
        area += (2 * half_widths[d] + 1) * (1 if d == 0 else 2)
    return area


@numba.njit(cache=True, nogil=True)
def few_nonzero(n_nonzero, half_widths, n_pixels):
    """Whether painting disks around the nonzero pixels is cheaper than dilating rows."""
    return n_nonzero * _disk_area(half_widths) <= n_pixels // 4


@numba.njit(cache=True, nogil=True)
def covered_bits(image, half_widths, n_nonzero, covered, first, stop, strategy=0):
    """Rows ``first:stop`` of ``binary_dilation(image != 0, disk)`` as bits into ``covered``
    (uint64, ``(height, n_words(width))``).

    ``half_widths[d]``: the disk's half-width ``d`` rows off its centre; ``n_nonzero``:
    how many pixels are nonzero. ``strategy``: 0 picks the cheaper way, 1 paints, 2 dilates
    rows (for tests).
    """
    if strategy == 1 or (strategy == 0 and few_nonzero(n_nonzero, half_widths, image.size)):
        _paint(image, half_widths, covered, first, stop)
    else:
        _by_row_dilations(image, half_widths, covered, first, stop)


@numba.njit(cache=True, nogil=True)
def unpack(words, out):
    """``out[x]`` (uint8): bit x of a row of words."""
    for x in range(out.shape[0]):
        out[x] = (words[x >> 6] >> np.uint64(x & 63)) & _ONE


@numba.njit(cache=True, nogil=True)
def count_ones(word):
    """Set bits of a 64-bit word (SWAR popcount)."""
    word = word - ((word >> np.uint64(1)) & np.uint64(0x5555555555555555))
    word = (word & np.uint64(0x3333333333333333)) + ((word >> np.uint64(2)) & np.uint64(0x3333333333333333))
    word = (word + (word >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (word * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(cache=True, nogil=True)
def count_uncovered(covered, first, stop, width):
    """Pixels of rows ``first:stop`` whose bit is not set (bits past a row's end ignored)."""
    words = covered.shape[1]
    tail = _ALL >> np.uint64(64 * words - width)  # the last word's bits inside the row
    n_set = 0
    for y in range(first, stop):
        row = covered[y]
        for k in range(words - 1):
            n_set += count_ones(row[k])
        n_set += count_ones(row[words - 1] & tail)
    return (stop - first) * width - n_set
