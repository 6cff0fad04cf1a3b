"""Which ``trackpy.locate`` calls the fast engine takes, with trackpy's defaults resolved.

:func:`plan` reads the arguments exactly as ``trackpy.locate`` does (``validate_tuple``,
``separation = diameter + 1``, ``smoothing_size = diameter``, the threshold by dtype, the
edge margin) and returns a :class:`Plan`, or a short reason why the fast engine does not
take the call. Whatever it does not take, including every input trackpy rejects, goes to
trackpy itself, so a user always gets trackpy's answer or trackpy's error.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["Plan", "plan", "SUPPORTED_DTYPES"]

#: Raw image dtypes the kernels handle (native byte order).
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float64))

#: The arguments of trackpy.locate after ``raw_image`` and ``diameter``, with its defaults.
DEFAULTS = {
    "minmass": None, "maxsize": None, "separation": None, "noise_size": 1, "smoothing_size": None,
    "threshold": None, "invert": False, "percentile": 64, "topn": None, "preprocess": True,
    "max_iterations": 10, "filter_before": None, "filter_after": None, "characterize": True,
    "engine": "auto",
}


@dataclass(frozen=True)
class Plan:
    """A supported ``trackpy.locate`` call, every default resolved as trackpy resolves it.

    Attributes
    ----------
    image : numpy.ndarray
        The squeezed raw image, 2-D and C-contiguous.
    radius : tuple of int
        ``diameter // 2`` per axis (equal: isotropic only).
    noise_size, smoothing_size, separation : tuple
        Per axis, as trackpy's ``validate_tuple`` makes them.
    dilation_size : tuple of int
        The box of trackpy's ``grey_dilation``: ``int(2 * separation / sqrt(2))``.
    margin : tuple of int
        Rows/columns at each edge where maxima are ignored (trackpy's margin, rounded up:
        a pixel index is below a margin of 49.0 exactly when it is below 49).
    threshold : float
        The bandpass threshold (trackpy: 1 for integer images, 1/255 for float ones).
    int_dtype : numpy.dtype
        The integer image's dtype: the raw dtype, or uint8 for float images.
    """

    image: np.ndarray
    radius: tuple[int, int]
    noise_size: tuple
    smoothing_size: tuple[int, int]
    separation: tuple
    dilation_size: tuple[int, int]
    margin: tuple[int, int]
    threshold: float
    percentile: float
    minmass: float
    maxsize: float | None
    topn: int | None
    max_iterations: int
    engine: str
    int_dtype: np.dtype


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _pair(value) -> tuple | None:
    """trackpy's ``validate_tuple(value, 2)``, or None where it would raise."""
    if not hasattr(value, "__iter__"):
        return (value, value)
    value = tuple(value)
    return value if len(value) == 2 else None


def _image(raw_image) -> np.ndarray | str:
    if type(raw_image) is not np.ndarray:  # lists, pims Frames (their frame_no column), ...
        return f"the image is a {type(raw_image).__name__}, not a numpy.ndarray"
    image = np.squeeze(raw_image)
    if image.ndim != 2:
        return f"{image.ndim}-D images"
    if image.dtype not in SUPPORTED_DTYPES or not image.dtype.isnative:
        return f"images of dtype {image.dtype} (supported: uint8, uint16, float64)"
    if image.size == 0:
        return "empty images"
    return np.ascontiguousarray(image)


def _sizes(image: np.ndarray, diameter, options: dict) -> dict | str:
    """diameter, separation, smoothing and noise sizes, the margin and the dilation box."""
    pair = _pair(diameter)
    if pair is None or not all(_is_real(d) and d == int(d) for d in pair):
        return "a diameter that is not one or two whole numbers"
    diameter = tuple(int(d) for d in pair)
    if not all(d & 1 for d in diameter) or min(diameter) < 3:
        return "a diameter that is even or below 3"
    if diameter[0] != diameter[1]:
        return "anisotropic diameters"
    radius = tuple(d // 2 for d in diameter)
    if options["separation"] is None:
        separation = tuple(d + 1 for d in diameter)
    else:
        separation = _pair(options["separation"])
        if separation is None or not all(_is_real(s) and s > 0 for s in separation):
            return "a separation that is not one or two positive numbers"
    if options["smoothing_size"] is None:
        smoothing = diameter
    else:
        smoothing = _pair(options["smoothing_size"])
        if smoothing is None or not all(_is_int(s) and s >= 1 and s & 1 for s in smoothing):
            return "a smoothing_size that is not one or two odd positive integers"
        smoothing = tuple(int(s) for s in smoothing)
    noise = _pair(options["noise_size"])
    if noise is None or not all(_is_real(n) for n in noise):
        return "a noise_size that is not one or two finite numbers"
    if any(n >= s for n, s in zip(noise, smoothing)):
        return "a noise_size not below the smoothing_size (trackpy raises)"
    margin = tuple(math.ceil(max(r, s // 2 - 1, m // 2)) for r, s, m in zip(radius, separation, smoothing))
    dilation = tuple(int(2 * s / np.sqrt(2)) for s in separation)
    return {"radius": radius, "separation": separation, "smoothing_size": smoothing, "noise_size": noise,
            "margin": margin, "dilation_size": dilation}


def _scalars(image: np.ndarray, options: dict) -> dict | str:
    """threshold, percentile, minmass, maxsize, topn, max_iterations, engine."""
    threshold = options["threshold"]
    if threshold is None:
        threshold = 1 / 255.0 if image.dtype.kind == "f" else 1
    if not _is_real(threshold):
        return "a threshold that is not a finite number"
    percentile = options["percentile"]
    # numpy computes the percentile's index in the percentile's precision: float64 only
    if not (isinstance(percentile, (int, float, np.integer)) and _is_real(percentile) and 0 <= percentile <= 100):
        return "a percentile that is not an int or float64 in [0, 100]"
    minmass = 0 if options["minmass"] is None else options["minmass"]
    if not _is_real(minmass):
        return "a minmass that is not a finite number"
    if options["maxsize"] is not None and not _is_real(options["maxsize"]):
        return "a maxsize that is not a finite number"
    topn = options["topn"]
    if topn is not None and not (_is_int(topn) and topn >= 1):
        return "a topn that is not a positive integer"
    if not _is_int(options["max_iterations"]):
        return "a max_iterations that is not an integer"
    if options["engine"] not in ("auto", "numba"):
        return f"trackpy's engine={options['engine']!r} (the fast engine refines with trackpy's numba code)"
    return {"threshold": float(threshold), "percentile": percentile, "minmass": minmass,
            "maxsize": options["maxsize"], "topn": topn, "max_iterations": int(options["max_iterations"]),
            "engine": options["engine"]}


def plan(raw_image, diameter, **options) -> Plan | str:
    """Resolve a ``trackpy.locate(raw_image, diameter, **options)`` call for the fast engine.

    Returns
    -------
    Plan or str
        The resolved call, or why the fast engine leaves it to trackpy.

    Examples
    --------
    >>> p = plan(np.zeros((64, 64), np.uint16), 15, percentile=80, separation=100)
    >>> p.radius, p.dilation_size, p.margin, p.threshold, p.int_dtype
    ((7, 7), (141, 141), (49, 49), 1.0, dtype('uint16'))
    >>> plan(np.zeros((8, 8, 8)), 5)
    '3-D images'
    >>> plan(np.zeros((64, 64)), 15, preprocess=False)
    'preprocess=False'
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        return f"unknown keywords {sorted(unknown)} (trackpy raises)"
    options = {**DEFAULTS, **options}
    for key, supported in (("invert", False), ("preprocess", True), ("characterize", True)):
        if options[key] is not supported:
            return f"{key}={options[key]!r}"
    for key in ("filter_before", "filter_after"):
        if options[key] is not None:
            return f"{key}={options[key]!r}"
    image = _image(raw_image)
    if isinstance(image, str):
        return image
    sizes = _sizes(image, diameter, options)
    if isinstance(sizes, str):
        return sizes
    scalars = _scalars(image, options)
    if isinstance(scalars, str):
        return scalars
    int_dtype = np.dtype(np.uint8) if image.dtype.kind == "f" else image.dtype
    return Plan(image=image, int_dtype=int_dtype, **sizes, **scalars)
