"""``trackpy.locate`` with trackpy's answer, its slow steps replaced by exact kernels.

The steps of ``trackpy.locate`` (trackpy 0.7, ``feature.py``) and what runs here instead:

================================  ===============================================
trackpy                           here
================================  ===============================================
``bandpass`` (scipy filters)      :func:`._bandpass.bandpass_rows`: same float ops
``convert_to_int``                :func:`._integer.to_int_kernel` (+ histogram)
``percentile_threshold``          :func:`.percentile.percentile_threshold`
``grey_dilation`` maxima          :func:`._maxima.maxima_kernel` (van Herk/Gil-Werman)
``refine_com``                    trackpy's own ``refine_com_arr`` (numba)
``where_close`` duplicates        trackpy's own ``where_close``
mass/size filters, ``topn``       the same operations on the refinement's array
``measure_noise``                 :mod:`._coverage` (dilation as bits), :mod:`._noise`
``_static_error``                 trackpy's own ``_static_error``
================================  ===============================================

Every step gives the same numbers as trackpy's, so :func:`locate` returns the DataFrame
``trackpy.locate`` returns (same rows, order, columns, dtypes, index and values) and emits
the same warnings. trackpy makes its DataFrame after the refinement and edits it column by
column; here it is made once, at the end, from the array the steps worked on.

With :func:`.parallel.set_threads` above 1, the image steps run on bands of rows, one per
thread, each computing exactly its rows of the whole-image result: the bandpass (a band
first replays the vertical running sums of the rows above it), the integer conversion
(one histogram per band, added), the dilation (a band reads the rows in reach around
it). The background noise then runs on a worker thread while trackpy's refinement and
the pandas steps run on the calling thread.
"""
from __future__ import annotations

import contextlib
import functools
import time
import warnings

import numpy as np
import pandas as pd

# trackpy's functions imported here, not in the functions (an import statement costs
# microseconds a call); the package's __init__ imports trackpy anyway
from trackpy.find import where_close
from trackpy.masks import N_binary_mask, binary_mask, gaussian_kernel
from trackpy.refine import refine_com
from trackpy.refine.center_of_mass import refine_com_arr
from trackpy.uncertainty import _static_error
from trackpy.utils import pandas_concat

from . import workspace
from ._bandpass import NONFINITE, TINY_PIXELS, bandpass_rows
from ._coverage import count_uncovered, covered_bits, n_words
from ._integer import to_int_kernel
from ._maxima import band_maxima, few_candidates, maxima_kernel
from ._noise import background_values, gather_background, mean_std
from .options import Plan
from .parallel import bands, get_threads, in_background, map_bands, serial
from .percentile import percentile_threshold

__all__ = ["run", "bandpassed", "local_maxima", "background_noise", "NonFiniteImage", "STEPS"]

#: The steps :func:`run` times when given a ``timings`` dict (seconds, added up per step).
#: With threads the background noise is computed beside the refinement and filters: its
#: step is then the wait for what is left of it.
STEPS = ("bandpass", "to_int + histogram", "percentile", "maxima", "refine_com (trackpy)", "where_close",
         "filters", "noise (mask + mean/std)", "ep (_static_error)")

#: Images below this many pixels a thread are located on one thread: handing work to other
#: threads costs more than it saves on them (measured: 0.1 ms a hand-over).
MIN_PIXELS_PER_THREAD = 2**19

#: Share of the rows the first of two bands takes in the bandpass of a float image: the
#: second band first replays the vertical running sums of the rows above it, a fifth of
#: the cost of filtering them (measured: 12 ms of 63 for half a 3072 x 3888 image).
#: Integer images need no replay (their sums are exact in any order).
FIRST_BAND_SHARE = 0.56


class NonFiniteImage(ValueError):
    """The image has NaN or infinite pixels: trackpy's arithmetic on them is left to trackpy."""


@functools.lru_cache(maxsize=16, typed=True)  # typed: a float32 sigma is not a float's
def _gaussian(sigma: float) -> np.ndarray:
    """trackpy's lowpass kernel for one axis; empty where trackpy skips the axis (kept per
    sigma: the kernels only read it)."""
    if not sigma > 0:
        return np.empty(0)
    weights = np.ascontiguousarray(gaussian_kernel(sigma, 4), dtype=np.float64)
    if not np.array_equal(weights, weights[::-1]):
        raise AssertionError("trackpy's Gaussian kernel is no longer symmetric")  # scipy's symmetric branch
    return weights


def _bands(height: int, first_share: float = 0.5) -> list[tuple[int, int]]:
    return bands(height, get_threads(), first_share)


def _bandpass(p: Plan) -> tuple[np.ndarray, np.float64]:
    """trackpy's ``bandpass`` into this thread's float64 scratch, and its maximum."""
    image = workspace.scratch("bandpassed", p.image.shape, np.float64)
    arguments = (p.image, _gaussian(p.noise_size[0]), _gaussian(p.noise_size[1]), p.smoothing_size[0],
                 p.smoothing_size[1], p.image.dtype.kind in "iu", p.threshold, image)
    ranges = _bands(p.image.shape[0], FIRST_BAND_SHARE if p.image.dtype.kind == "f" else 0.5)
    results = map_bands(lambda first, stop: bandpass_rows(*arguments, first, stop), ranges)
    if any(status & TINY_PIXELS for _, status in results):  # divide with the instruction instead
        results = map_bands(lambda first, stop: bandpass_rows(*arguments, first, stop, True), ranges)
    if any(status & NONFINITE for _, status in results):
        raise NonFiniteImage("NaN or infinite pixels in the bandpassed image")
    return image, np.float64(max(image_max for image_max, _ in results))


def _to_int(p: Plan, image: np.ndarray, image_max: np.float64) -> tuple[np.ndarray, np.float64, np.ndarray]:
    """trackpy's ``convert_to_int``: the integer image (scratch), ``scale_factor``, histogram."""
    max_value = _int_max(p.int_dtype)
    scale_factor = np.float64(1.0) if image_max == 0 else max_value / image_max
    integer = workspace.scratch("integer", p.image.shape, p.int_dtype)

    def convert(first: int, stop: int) -> np.ndarray:
        histogram = np.zeros(max_value + 1, dtype=np.int64)
        to_int_kernel(image[first:stop], float(scale_factor), integer[first:stop], histogram)
        return histogram

    histograms = map_bands(convert, _bands(p.image.shape[0]))
    return integer, scale_factor, histograms[0] if len(histograms) == 1 else sum(histograms)


@functools.cache
def _int_max(dtype: np.dtype) -> int:
    """``np.iinfo(dtype).max``, kept per dtype (``np.iinfo`` costs ~10 us a call)."""
    return np.iinfo(dtype).max


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
    return _to_int(p, *_bandpass(p))


def _threshold(p: Plan, histogram: np.ndarray):
    """trackpy's percentile threshold as an integer pixel value (``None``: a black image).

    An integer pixel is above the threshold exactly when it is above its floor."""
    threshold = percentile_threshold(histogram, p.percentile)
    if np.isnan(threshold):
        warnings.warn("Image is completely black.", UserWarning)
        return None
    return np.dtype(p.int_dtype).type(np.floor(threshold))


def _maxima(p: Plan, integer: np.ndarray, cut, n_candidates: int) -> tuple[np.ndarray, int]:
    """The maxima's coordinates off the margins, and how many there are with the margins."""
    dilated = workspace.scratch("dilated", integer.shape, integer.dtype)
    ranges = _bands(integer.shape[0])
    if len(ranges) == 1 or few_candidates(n_candidates, p.dilation_size[0], integer.size):
        return maxima_kernel(integer, *p.dilation_size, cut, *p.margin, dilated, 0, n_candidates)
    bands_found = map_bands(lambda first, stop: band_maxima(integer, *p.dilation_size, cut, *p.margin, first, stop,
                                                            dilated), ranges)
    return np.concatenate([coords for coords, _ in bands_found]), sum(n for _, n in bands_found)


def _local_maxima(p: Plan, integer: np.ndarray, histogram: np.ndarray, clock) -> np.ndarray:
    with clock("percentile"):
        cut = _threshold(p, histogram)
    if cut is None:
        return np.empty((0, 2))
    with clock("maxima"):
        coords, n_maxima = _maxima(p, integer, cut, int(histogram[int(cut) + 1:].sum()))
    if n_maxima == 0:
        warnings.warn("Image contains no local maxima.", UserWarning)
        return np.empty((0, 2))
    if len(coords) == 0:
        warnings.warn("All local maxima were in the margins.", UserWarning)
        return np.empty((0, 2))
    return coords


def local_maxima(p: Plan, integer: np.ndarray, histogram: np.ndarray) -> np.ndarray:
    """trackpy's ``grey_dilation(image, separation, percentile, margin, precise=False)``."""
    return _local_maxima(p, integer, histogram, _Clock(None))


@functools.lru_cache(maxsize=16)
def _half_widths(radius: tuple[int, int]) -> np.ndarray:
    """Half-width of trackpy's ``binary_mask(radius)`` on each row off its centre (kept per
    radius, ~0.07 ms to make: the kernels only read it)."""
    mask = binary_mask(radius, 2)
    columns = np.arange(mask.shape[1]) - radius[1]
    return np.array([np.abs(columns[mask[radius[0] + d]]).max() for d in range(radius[0] + 1)], dtype=np.int64)


def _background(raw: np.ndarray, integer: np.ndarray, half_widths: np.ndarray, n_nonzero: int,
                covered: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """``measure_noise``'s mean and std, with the scratch arrays given (see :func:`background_noise`)."""
    height, width = integer.shape
    ranges = _bands(height)
    if len(ranges) == 1:
        n = background_values(raw, integer, half_widths, n_nonzero, covered, values)
    else:  # the mask by bands, then each band's pixels after those of the bands above
        map_bands(lambda first, stop: covered_bits(integer, half_widths, n_nonzero, covered, first, stop), ranges)
        counts = [count_uncovered(covered, first, stop, width) for first, stop in ranges]
        # each band's own places, exactly (gather_background may write one past its pixels)
        places = {band: values[start:start + count] for band, start, count in
                  zip(ranges, np.cumsum([0] + counts), counts)}
        map_bands(lambda first, stop: gather_background(raw, covered, first, stop, places[first, stop]), ranges)
        n = sum(counts)
    return (np.nan, np.nan) if n == 0 else mean_std(values, n)


def _background_task(p: Plan, integer: np.ndarray, n_nonzero: int):
    """:func:`background_noise` as a task (:func:`.parallel.in_background`): with threads,
    it runs on a worker while trackpy refines and filters the features on this thread.

    Its scratch is this thread's, taken here: the float image's (free once the integer
    image is made) for the background values.
    """
    height, width = integer.shape
    covered = workspace.scratch("covered", (height, n_words(width)), np.uint64)
    values = workspace.scratch("bandpassed", p.image.shape, np.float64).reshape(-1)
    return in_background(_background, p.image, integer, _half_widths(p.radius), n_nonzero, covered, values)


def background_noise(p: Plan, integer: np.ndarray, n_nonzero: int) -> tuple[float, float]:
    """trackpy's ``measure_noise(integer, raw, radius)``: mean and std of the raw pixels
    outside the dilated mask."""
    return _background_task(p, integer, n_nonzero).result()


class _Clock:
    """Adds the seconds each step takes to ``timings[step]`` (nothing when ``timings`` is None)."""

    def __init__(self, timings: dict | None):
        self.timings = timings

    def __call__(self, step: str):
        # untimed (every call but profiles): a context that does nothing, without making
        # a generator each step (~4 us)
        return _UNTIMED if self.timings is None else self._timed(step)

    @contextlib.contextmanager
    def _timed(self, step: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - start


#: The columns of trackpy's ``refine_com`` for a 2-D image and one radius, in the order of the
#: array ``refine_com_arr`` returns (``y, x``, ``mass``, ``size``, ``ecc, signal, raw_mass``).
COLUMNS = ("y", "x", "mass", "size", "ecc", "signal", "raw_mass")
_Y, _X, _MASS, _SIZE, _ECC, _SIGNAL, _RAW_MASS = range(len(COLUMNS))

# The column labels as pandas Indexes, made once: making one from strings costs ~0.06 ms
# (dtype inference), a view of one ~2 us. Each DataFrame gets its own view (as
# ``DataFrame.copy`` does), so renaming one's columns leaves the others alone.
_COLUMNS = pd.Index(COLUMNS, dtype=object)
_COLUMNS_EP = pd.Index([*COLUMNS, "ep"], dtype=object)


_UNTIMED = contextlib.nullcontext()


def _drop_duplicates(p: Plan, refined: np.ndarray) -> np.ndarray:
    """Flat peaks give several maxima: trackpy keeps the brightest (its own ``where_close``).

    trackpy hands ``where_close`` the ``y, x`` columns of its DataFrame, drops the rows it
    names by label and renumbers them (labels are positions there): the same values as an
    array and ``np.delete`` give the same rows, without pandas' per-call cost (~1 ms).
    """
    if np.all(np.greater(p.separation, 0)):
        duplicates = where_close(refined[:, :2], p.separation, refined[:, _MASS])
        if len(duplicates):
            refined = np.delete(refined, duplicates, axis=0)
    return refined


def _filter(p: Plan, refined: np.ndarray, scale_factor) -> tuple[np.ndarray, pd.Index]:
    """trackpy's mass/size filters and ``topn`` on the rows, and the index its DataFrame
    then has; warns as trackpy does.

    trackpy runs these steps on its DataFrame (``/=``, ``.loc[mask]``, ``.iloc[order]``);
    they are the same numpy operations on the columns, and the index is made by the
    ``take`` pandas runs for ``.loc``/``.iloc``, at a fraction of the DataFrame's cost.
    """
    refined[:, _MASS] /= scale_factor
    refined[:, _SIGNAL] /= scale_factor
    index = pd.RangeIndex(len(refined))
    keep = refined[:, _MASS] > p.minmass
    if p.maxsize is not None:
        keep &= refined[:, _SIZE] < p.maxsize
    if not keep.all():
        rows = np.flatnonzero(keep)
        refined, index = refined[rows], index.take(rows)
    if len(refined) == 0:
        warnings.warn("No maxima survived mass- and size-based filtering. Be advised that the mass "
                      "computation was changed from version 0.2.4 to 0.3.0 and from 0.3.3 to 0.4.0. "
                      "See the documentation and the convenience functions 'minmass_v03_change' and "
                      "'minmass_v04_change'.")
        return refined, index
    if p.topn is not None and len(refined) > p.topn:
        mass = refined[:, _MASS]
        rows = [np.argmax(mass)] if p.topn == 1 else np.argsort(mass)[-p.topn:]
        refined, index = refined[rows], index.take(rows)
    return refined, index


def run(p: Plan, timings: dict | None = None) -> pd.DataFrame:
    """``trackpy.locate`` for a supported call (see :func:`.options.plan`).

    ``timings``: a dict that receives the seconds of each of :data:`STEPS` (added to what
    it holds), for profiles.

    Examples
    --------
    >>> import trackpy
    >>> from streamcrystal.science.fastlocate.options import plan
    >>> image = trackpy.artificial.draw_spots((48, 64), [(20, 30)], 3, noise_level=5)
    >>> run(plan(image, 9, separation=12)).equals(trackpy.locate(image, 9, separation=12))
    True
    """
    with contextlib.nullcontext() if p.image.size >= MIN_PIXELS_PER_THREAD * get_threads() else serial():
        return _run(p, _Clock(timings))


def _run(p: Plan, clock: _Clock) -> pd.DataFrame:
    """:func:`run`'s steps, timed by ``clock``.

    trackpy builds its DataFrame from the refinement and then changes it a column at a
    time; here the refinement's array goes through the same steps and becomes the
    DataFrame once, at the end (pandas costs ~0.1 ms an operation: most of a small
    image's time).
    """
    if 3 in p.image.shape or 4 in p.image.shape:
        warnings.warn("I am interpreting the image as 2-dimensional. If it is actually a "
                      "1-dimensional color image, convert it to grayscale first.")
    with clock("bandpass"):
        image, image_max = _bandpass(p)
    with clock("to_int + histogram"):
        integer, scale_factor, histogram = _to_int(p, image, image_max)
    coords = _local_maxima(p, integer, histogram, clock)
    if len(coords) == 0:  # trackpy's empty DataFrame (object columns)
        return refine_com(p.image, integer, p.radius, coords, max_iterations=p.max_iterations,
                          engine=p.engine, characterize=True)
    background = _background_task(p, integer, int(histogram[1:].sum()))
    with clock("refine_com (trackpy)"):
        refined = _refine(p, integer, coords)
    with clock("where_close"):
        refined = _drop_duplicates(p, refined)
    with clock("filters"):
        refined, index = _filter(p, refined, scale_factor)
    if len(refined) == 0:
        background.settle()
        return pd.DataFrame(refined, columns=_COLUMNS.view(), index=index)
    with clock("noise (mask + mean/std)"):  # with threads: what is left to wait for
        black_level, noise = background.result()
    with clock("ep (_static_error)"):
        return _with_errors(p, refined, index, black_level, noise)


def _refine(p: Plan, integer: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """trackpy's ``refine_com`` (numba engine) as the array it makes its DataFrame of."""
    return refine_com_arr(p.image, integer, p.radius, coords, max_iterations=p.max_iterations, engine=p.engine,
                          characterize=True)


def _with_errors(p: Plan, refined: np.ndarray, index: pd.Index, black_level, noise) -> pd.DataFrame:
    """The features' DataFrame with trackpy's ``ep`` column (``ep_y, ep_x`` for per-axis noise sizes)."""
    mass = refined[:, _RAW_MASS] - N_binary_mask(p.radius, 2) * black_level
    ep = _static_error(mass, noise, p.radius, p.noise_size)
    if ep.ndim == 1:
        return pd.DataFrame(np.column_stack([refined, ep]), columns=_COLUMNS_EP.view(), index=index)
    # trackpy joins the two columns by index (gaps after the filters: NaN rows), as here
    features = pd.DataFrame(refined, columns=_COLUMNS.view(), index=index)
    return pandas_concat([features, pd.DataFrame(ep, columns=["ep_y", "ep_x"])], axis=1)
