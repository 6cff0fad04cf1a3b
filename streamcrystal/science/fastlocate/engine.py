"""``trackpy.locate`` with trackpy's answer, its slow steps replaced by exact kernels.

The steps of ``trackpy.locate`` (trackpy 0.7, ``feature.py``) and what runs here instead:

================================  ===============================================
trackpy                           here
================================  ===============================================
``bandpass`` (scipy filters)      :func:`._bandpass.bandpass_kernel`: same float ops
``convert_to_int``                :func:`._bandpass.to_int_kernel` (+ histogram)
``percentile_threshold``          :func:`.percentile.percentile_threshold`
``grey_dilation`` maxima          :func:`._maxima.maxima_kernel` (van Herk/Gil-Werman)
``refine_com``                    trackpy's own ``refine_com`` (numba)
``where_close`` duplicates        trackpy's own ``where_close``
mass/size filters, ``topn``       the same pandas operations
``measure_noise``                 :mod:`._noise`: dilation by rows, numpy's sums
``_static_error``                 trackpy's own ``_static_error``
================================  ===============================================

Every step gives the same numbers as trackpy's, so :func:`locate` returns the DataFrame
``trackpy.locate`` returns (same rows, order, columns, dtypes and values) and emits the
same warnings.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from . import workspace
from ._bandpass import bandpass_kernel, to_int_kernel
from ._maxima import maxima_kernel
from ._noise import background_kernel, covered_kernel
from .options import Plan
from .percentile import percentile_threshold

__all__ = ["run", "bandpassed", "local_maxima", "background_noise", "NonFiniteImage"]


class NonFiniteImage(ValueError):
    """The image has NaN or infinite pixels: trackpy's arithmetic on them is left to trackpy."""


def _gaussian(sigma: float) -> np.ndarray:
    """trackpy's lowpass kernel for one axis; empty where trackpy skips the axis."""
    from trackpy.masks import gaussian_kernel

    if not sigma > 0:
        return np.empty(0)
    weights = np.ascontiguousarray(gaussian_kernel(sigma, 4), dtype=np.float64)
    if not np.array_equal(weights, weights[::-1]):
        raise AssertionError("trackpy's Gaussian kernel is no longer symmetric")  # scipy's symmetric branch
    return weights


def bandpassed(p: Plan) -> tuple[np.ndarray, np.floating, np.ndarray]:
    """The integer image, ``scale_factor`` and histogram of trackpy's bandpass + convert_to_int.

    The integer image is this thread's scratch (see :mod:`.workspace`). Raises
    NonFiniteImage if the image has NaN or infinite pixels (the caller falls back).

    Examples
    --------
    >>> from trackpy.preprocessing import bandpass, convert_to_int
    >>> from streamcrystal.science.fastlocate.options import plan
    >>> image = np.random.default_rng(0).random((40, 50))
    >>> integer, scale, histogram = bandpassed(plan(image, 7))
    >>> expected_scale, expected = convert_to_int(bandpass(image, 1, 7, 1 / 255), np.uint8)
    >>> bool(np.array_equal(integer, expected) and scale == expected_scale)
    True
    """
    image = workspace.scratch("bandpassed", p.image.shape, np.float64)
    truncate = p.image.dtype.kind in "iu"
    image_max, n_nonfinite = bandpass_kernel(
        p.image, _gaussian(p.noise_size[0]), _gaussian(p.noise_size[1]),
        p.smoothing_size[0], p.smoothing_size[1], truncate, p.threshold, image,
    )
    if n_nonfinite:
        raise NonFiniteImage(f"NaN or infinite pixels: {n_nonfinite} bandpassed pixels are not finite")
    max_value = np.iinfo(p.int_dtype).max
    image_max = np.float64(image_max)
    scale_factor = np.float64(1.0) if image_max == 0 else max_value / image_max
    integer = workspace.scratch("integer", p.image.shape, p.int_dtype)
    histogram = np.zeros(max_value + 1, dtype=np.int64)
    to_int_kernel(image, float(scale_factor), integer, histogram)
    return integer, scale_factor, histogram


def local_maxima(p: Plan, integer: np.ndarray, histogram: np.ndarray) -> np.ndarray:
    """trackpy's ``grey_dilation(image, separation, percentile, margin, precise=False)``."""
    threshold = percentile_threshold(histogram, p.percentile)
    if np.isnan(threshold):
        warnings.warn("Image is completely black.", UserWarning)
        return np.empty((0, 2))
    # integer pixels are above ``threshold`` exactly when above its floor (an image value)
    cut = integer.dtype.type(np.floor(threshold))
    dilated = workspace.scratch("dilated", integer.shape, integer.dtype)
    coords, n_maxima = maxima_kernel(integer, *p.dilation_size, cut, *p.margin, dilated)
    if n_maxima == 0:
        warnings.warn("Image contains no local maxima.", UserWarning)
        return np.empty((0, 2))
    if len(coords) == 0:
        warnings.warn("All local maxima were in the margins.", UserWarning)
        return np.empty((0, 2))
    return coords


def _half_widths(radius: tuple[int, int]) -> np.ndarray:
    """Half-width of trackpy's ``binary_mask(radius)`` on each row off its centre."""
    from trackpy.masks import binary_mask

    mask = binary_mask(radius, 2)
    columns = np.arange(mask.shape[1]) - radius[1]
    return np.array([np.abs(columns[mask[radius[0] + d]]).max() for d in range(radius[0] + 1)], dtype=np.int64)


def background_noise(p: Plan, integer: np.ndarray, n_nonzero: int) -> tuple[float, float]:
    """trackpy's ``measure_noise(integer, raw, radius)``: mean and std of the background."""
    covered = workspace.scratch("covered", integer.shape, np.uint8)
    covered_kernel(integer, _half_widths(p.radius), n_nonzero, covered)
    values = workspace.scratch("bandpassed", p.image.shape, np.float64).reshape(-1)  # free by now
    n, mean, std = background_kernel(p.image, covered, values)
    if n == 0:
        return np.nan, np.nan
    return np.float64(mean), (np.nan if n == 1 else np.float64(std))


def run(p: Plan) -> pd.DataFrame:
    """``trackpy.locate`` for a supported call (see :func:`.options.plan`).

    Examples
    --------
    >>> import trackpy
    >>> from streamcrystal.science.fastlocate.options import plan
    >>> image = trackpy.artificial.draw_spots((48, 64), [(20, 30)], 3, noise_level=5)
    >>> run(plan(image, 9, separation=12)).equals(trackpy.locate(image, 9, separation=12))
    True
    """
    from trackpy.find import where_close
    from trackpy.masks import N_binary_mask
    from trackpy.refine import refine_com
    from trackpy.uncertainty import _static_error
    from trackpy.utils import pandas_concat

    if 3 in p.image.shape or 4 in p.image.shape:
        warnings.warn("I am interpreting the image as 2-dimensional. If it is actually a "
                      "1-dimensional color image, convert it to grayscale first.")
    integer, scale_factor, histogram = bandpassed(p)
    coords = local_maxima(p, integer, histogram)
    features = refine_com(p.image, integer, p.radius, coords, max_iterations=p.max_iterations,
                          engine=p.engine, characterize=True)
    if len(features) == 0:
        return features
    if np.all(np.greater(p.separation, 0)):  # flat peaks give several maxima: keep the brightest
        duplicates = where_close(features[["y", "x"]], p.separation, features["mass"])
        features.drop(duplicates, axis=0, inplace=True)
        features.reset_index(drop=True, inplace=True)
    features["mass"] /= scale_factor
    features["signal"] /= scale_factor
    keep = features["mass"] > p.minmass
    if p.maxsize is not None:
        keep &= features["size"] < p.maxsize
    if not keep.all():
        features = features.loc[keep].copy()
    if len(features) == 0:
        warnings.warn("No maxima survived mass- and size-based filtering. Be advised that the mass "
                      "computation was changed from version 0.2.4 to 0.3.0 and from 0.3.3 to 0.4.0. "
                      "See the documentation and the convenience functions 'minmass_v03_change' and "
                      "'minmass_v04_change'.")
        return features
    if p.topn is not None and len(features) > p.topn:
        mass = features["mass"].values
        features = features.iloc[[np.argmax(mass)]] if p.topn == 1 else features.iloc[np.argsort(mass)[-p.topn:]]
    black_level, noise = background_noise(p, integer, int(histogram[1:].sum()))
    mass = features["raw_mass"].values - N_binary_mask(p.radius, 2) * black_level
    ep = _static_error(mass, noise, p.radius, p.noise_size)
    if ep.ndim == 1:
        features["ep"] = ep
    else:
        features = pandas_concat([features, pd.DataFrame(ep, columns=["ep_y", "ep_x"])], axis=1)
    return features
