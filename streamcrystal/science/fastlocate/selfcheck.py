"""Check once per process that the kernels still compute what trackpy/scipy/numpy compute.

The kernels copy the floating-point operations of the installed scipy (``correlate1d``,
``uniform_filter1d``) and numpy (pairwise summation, ``percentile``). A release that
changes them (as scipy's running mean once changed) would make the fast engine differ
from trackpy in the last bits; this check compares both on small random images at first
use and, on any difference, sends every call to trackpy (logged once).
"""
from __future__ import annotations

import functools

import numpy as np

from . import engine
from .options import plan

__all__ = ["selfcheck_problem"]


def _image(rng, dtype: str) -> np.ndarray:
    shape = (37, 53)
    spots = rng.random(shape) ** 8 * 900
    if dtype == "uint16":
        return (spots + rng.normal(100, 10, shape)).clip(0, 65535).astype(np.uint16)
    if dtype == "uint8":
        return (spots / 4 + rng.normal(20, 5, shape)).clip(0, 255).astype(np.uint8)
    return spots + rng.random(shape) * 1e-3


def _compare(image: np.ndarray, noise_size: float) -> str | None:
    from scipy import ndimage
    from trackpy.find import percentile_threshold as trackpy_percentile
    from trackpy.preprocessing import bandpass, convert_to_int
    from trackpy.uncertainty import measure_noise

    p = plan(image, 7, noise_size=noise_size, smoothing_size=(13, 9), percentile=71.3, separation=(6, 9))
    reference = bandpass(image, p.noise_size, p.smoothing_size, p.threshold)
    scale, reference_int = convert_to_int(reference, p.int_dtype)
    integer, scale_factor, histogram = engine.bandpassed(p)
    if scale != scale_factor or not np.array_equal(reference_int, integer):
        return "bandpass/convert_to_int"
    threshold = trackpy_percentile(reference_int, p.percentile)
    dilated = ndimage.grey_dilation(reference_int, p.dilation_size, mode="constant")
    maxima = np.argwhere((reference_int == dilated) & (reference_int > threshold))
    inside = np.all((maxima >= p.margin) & (maxima < np.array(image.shape) - p.margin), axis=1)
    if not np.array_equal(engine.local_maxima(p, integer, histogram), maxima[inside]):
        return "percentile threshold/grey_dilation maxima"
    expected = measure_noise(reference_int, image, p.radius)
    noise = engine.background_noise(p, integer, int(np.count_nonzero(integer)))
    if not np.array_equal(np.array(expected, float), np.array(noise, float), equal_nan=True):
        return "measure_noise"
    return None


@functools.lru_cache(maxsize=None)
def selfcheck_problem(dtype: str = "float64") -> str | None:
    """``None`` if the kernels match trackpy here for images of ``dtype``, else what differs
    (checked once per process and dtype).

    Examples
    --------
    >>> selfcheck_problem("uint16") is None
    True
    """
    import warnings

    image = _image(np.random.default_rng(12345), dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for noise_size in (1, 1.3):  # the one-pass 9-tap Gaussian and the general one
            problem = _compare(image, noise_size)
            if problem is not None:
                return (f"this installation's scipy/numpy ({problem} of a {dtype} image differs "
                        f"from the fast engine's)")
    return None
