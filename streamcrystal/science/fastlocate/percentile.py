"""trackpy's percentile threshold from a histogram of the integer image.

``trackpy.find.percentile_threshold`` is ``np.percentile(image[image != 0], percentile)``:
numpy's "linear" method picks two order statistics of the nonzero pixels and interpolates
between them. Both order statistics are read off the histogram's cumulative counts (no
sort, no copy of the image), and the interpolation is numpy's ``_lerp``, operation for
operation: ``a + (b - a) * t`` below ``t = 0.5``, ``b - (b - a) * (1 - t)`` from it on.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["percentile_threshold"]


def _order_statistic(cumulative: np.ndarray, k: int) -> int:
    """The k-th (0-based) smallest nonzero value; ``cumulative[v - 1]`` counts values 1..v."""
    return int(np.searchsorted(cumulative, k, side="right")) + 1


def percentile_threshold(histogram: np.ndarray, percentile: float) -> float:
    """``np.percentile(values[values != 0], percentile)`` of the values ``histogram`` counts.

    Parameters
    ----------
    histogram : numpy.ndarray
        ``histogram[v]`` is how many pixels have the value ``v``.
    percentile : float
        In [0, 100].

    Returns
    -------
    float
        The threshold; NaN when no value is nonzero (trackpy: "Image is completely black").

    Examples
    --------
    >>> values = np.array([0, 0, 3, 1, 7, 7, 2], dtype=np.uint8)
    >>> histogram = np.bincount(values, minlength=256)
    >>> bool(percentile_threshold(histogram, 64) == np.percentile(values[values != 0], 64))
    True
    >>> percentile_threshold(np.bincount([0, 0], minlength=256), 50)
    nan
    """
    cumulative = np.cumsum(histogram[1:])
    n = int(cumulative[-1])
    if n == 0:
        return math.nan
    q = float(np.true_divide(percentile, 100))
    index = (n - 1) * q
    if index >= n - 1:
        return float(_order_statistic(cumulative, n - 1))
    below = math.floor(index)
    a = _order_statistic(cumulative, below)
    b = _order_statistic(cumulative, below + 1)
    t = index - below
    difference = float(b - a)
    if t >= 0.5:
        return float(b) - difference * (1 - t)
    return float(a) + difference * t
