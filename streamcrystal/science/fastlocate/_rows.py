"""Row primitives the kernels share: copies, scipy's 9-tap correlation, the row block.

Numba compiles ``target[:] = source`` between two arrays with a check for overlap, and on
a possible overlap (which it cannot rule out for views) it copies through a temporary
array: an allocation per row, slower than the filtering around it. An explicit loop
(:func:`copy_into`) compiles to a vectorised copy guarded by LLVM's cheap pointer comparison.
"""
from __future__ import annotations

import numba

__all__ = ["copy_into", "gauss9", "BLOCK"]

#: Rows filtered together: the vertical filters read each raw row once for four outputs,
#: and the running sums along four rows are independent chains of additions, which the
#: CPU overlaps when they are interleaved.
BLOCK = 4


@numba.njit(cache=True, nogil=True)
def copy_into(source, target):
    """``target[k] = source[k]`` for every k (1-D, same length, not overlapping).

    Examples
    --------
    >>> import numpy as np
    >>> target = np.zeros(3)
    >>> copy_into(np.arange(3.0), target); target
    array([0., 1., 2.])
    """
    for k in range(target.shape[0]):
        target[k] = source[k]


@numba.njit(cache=True, nogil=True, inline="always")
def gauss9(a0, a1, a2, a3, c, b3, b2, b1, b0, w0, w1, w2, w3, centre):
    """scipy's symmetric 9-tap correlation at one pixel: the centre, then the pairs from the
    outermost in (``a``: before, ``b``: after)."""
    value = c * centre
    value += (a0 + b0) * w0
    value += (a1 + b1) * w1
    value += (a2 + b2) * w2
    value += (a3 + b3) * w3
    return value
