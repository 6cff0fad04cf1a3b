"""Locate Bragg peaks on one processed image: ``trackpy.locate``'s answer, found fast.

The only place where trackpy's (x, y) naming enters; everything else in the package is
(row, col). The default engine is :mod:`streamcrystal.science.fastlocate`, which returns exactly
``trackpy.locate``'s DataFrame (and hands the calls it does not support to trackpy);
``engine="trackpy"`` runs trackpy itself. The pipeline's fixed feature table (the columns
of :func:`streamcrystal.schema.feature_columns`, float64) is made by its locate step, not
here.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from . import fastlocate

__all__ = ["locate", "realign_per_axis_errors", "check_locate_arguments", "noise_minmass"]

#: "fast" is :mod:`streamcrystal.science.fastlocate`; "trackpy" is trackpy's own locate; trackpy's
#: engine names select trackpy's locate with that refinement engine.
_ENGINES = ("fast", "trackpy", "auto", "python", "numba")


def locate(image: np.ndarray, diameter: int | tuple[int, ...], *, engine: str = "fast", **kwargs) -> pd.DataFrame:
    """Find the Bragg peaks of an image: exactly ``trackpy.locate(image, diameter, **kwargs)``.

    The DataFrame, the warnings and the errors are trackpy's, for every input trackpy
    accepts (per-axis diameters, 3-D images, ``characterize=False``, empty results); only
    the time differs.

    Parameters
    ----------
    image : numpy.ndarray, shape (rows, cols) or (planes, rows, cols)
        The processed (averaged, background-subtracted, clipped) image.
    diameter : int or tuple of int
        Odd feature diameter in pixels, one per axis or the same for all, as in trackpy.
    engine : {"fast", "trackpy", "auto", "python", "numba"}
        The peak finder: ``"fast"`` is :func:`streamcrystal.science.fastlocate.locate` (the same
        DataFrame, 10x faster or more on detector images; calls it does not support go to
        trackpy); ``"trackpy"`` is ``trackpy.locate`` as it is; trackpy's own engine names
        are passed on to it.
    **kwargs
        Any other keyword of ``trackpy.locate`` (``percentile``, ``separation``, ``minmass``,...).

    Returns
    -------
    pandas.DataFrame
        ``trackpy.locate``'s: one row per peak, columns ``y, x, mass, size, ecc, signal,
        raw_mass, ep`` for a 2-D image and one diameter (``size_y, size_x`` and ``ep_y,
        ep_x`` with per-axis diameters; ``z`` first for 3-D; ``y, x, mass`` without
        ``characterize``). With no peak, trackpy gives no ``ep`` column and object dtypes.

    Raises
    ------
    ValueError
        For an unknown ``engine``; otherwise whatever ``trackpy.locate`` raises.

    Examples
    --------
    >>> import trackpy
    >>> image = trackpy.artificial.draw_spots((64, 64), [(20, 30)], 5, noise_level=0, bitdepth=8)
    >>> features = locate(image, 9, separation=20)
    >>> features[["y", "x"]].round(0).values.tolist()
    [[20.0, 30.0]]
    >>> features.equals(trackpy.locate(image, 9, separation=20))
    True
    """
    if engine not in _ENGINES:
        raise ValueError(f"engine {engine!r} is not one of the valid engines {_ENGINES!r}")
    if engine == "fast":
        find = fastlocate.locate
    else:
        # trackpy's own function, bound where it is defined: a user who replaces the
        # top-level ``trackpy.locate`` with the fast engine must not make this call itself
        from trackpy.feature import locate as find

        if engine != "trackpy":
            kwargs["engine"] = engine
    return find(image, diameter, **kwargs)


def realign_per_axis_errors(found: pd.DataFrame) -> pd.DataFrame:
    """trackpy's features with per-axis diameters, each row with its own ``ep_y, ep_x``.

    With one diameter per axis, ``trackpy.locate`` (0.7) joins the position errors to the
    features by index after ``minmass``/``maxsize`` filtering has left gaps in it: the
    answer has rows of NaN positions holding errors, and features with another feature's
    errors or none (trackpy issue 609, open). trackpy computes the k-th error for the k-th
    remaining feature, so the features (finite ``y``) are given, in order, the errors of
    index labels 0, 1, ..., k-1. Other tables are returned as they are.

    Examples
    --------
    >>> found = pd.DataFrame({"y": [np.nan, 10.0, np.nan, 20.0], "x": [np.nan, 1.0, np.nan, 2.0],
    ...                       "ep_y": [0.1, np.nan, 0.2, np.nan]}, index=[0, 3, 1, 5])
    >>> realign_per_axis_errors(found).to_dict("list")
    {'y': [10.0, 20.0], 'x': [1.0, 2.0], 'ep_y': [0.1, 0.2]}
    """
    errors = [column for column in found.columns if str(column).startswith("ep_")]
    if not errors or len(found) == 0 or not found["y"].isna().any():
        return found
    features = found[found["y"].notna()].copy()
    features[errors] = found.loc[list(range(len(features))), errors].to_numpy()
    return features.reset_index(drop=True)


def check_locate_arguments(diameter, **kwargs) -> None:
    """Raise now what ``trackpy.locate(image, diameter, **kwargs)`` would raise on every image.

    A pipeline calls it at construction, so that arguments trackpy refuses (an even
    diameter, ``maxsize`` with per-axis diameters, an unknown keyword, ...) are refused
    once, with trackpy's reason, rather than skipping every event of a run. trackpy is run
    on a small test image with two spots (about 10 ms).

    Raises
    ------
    ValueError
        With trackpy's message, and the arguments.

    Examples
    --------
    >>> check_locate_arguments(15, percentile=80, separation=100)
    >>> check_locate_arguments((9, 7), maxsize=3)
    Traceback (most recent call last):
    ...
    ValueError: trackpy.locate refuses diameter=(9, 7), maxsize=3: ValueError: Filtering by size is not available for anisotropic features. (give one diameter, or no maxsize)
    """
    from trackpy.artificial import draw_spots
    from trackpy.feature import locate as trackpy_locate

    sizes = [int(d) for d in np.atleast_1d(diameter)] if np.ndim(diameter) <= 1 else []
    shape = tuple(max(64, 6 * d) for d in (sizes * 2)[:2]) if sizes else (64, 64)
    image = draw_spots(shape, [(shape[0] // 3, shape[1] // 3), (2 * shape[0] // 3, 2 * shape[1] // 3)],
                       max(sizes, default=3), noise_level=5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trackpy_locate(image, diameter, **kwargs)
    except Exception as err:
        arguments = ", ".join([f"diameter={diameter!r}", *(f"{k}={v!r}" for k, v in kwargs.items())])
        hint = " (give one diameter, or no maxsize)" if "anisotropic" in str(err) else ""
        raise ValueError(f"trackpy.locate refuses {arguments}: {type(err).__name__}: {err}{hint}") from err


def noise_minmass(first: np.ndarray, second: np.ndarray, diameter: int, *, factor: float = 2.0,
                  **locate_kwargs) -> float:
    """A ``minmass`` above the noise: ``factor`` times the largest mass located on pure noise.

    ``first`` and ``second`` are two independent processed (averaged) exposures of the same
    empty spot (air only, no sample); ``clip(second - first, 0)`` holds only their noise, so
    every feature :func:`locate` finds on it is a noise maximum. Features of real peaks
    weaker than twice the strongest noise maximum are rare enough to drop.

    Parameters
    ----------
    first, second : ndarray
        Two 2-D images of the same empty grid point, taken independently.
    diameter : int
        As for :func:`locate`.
    factor : float
        Safety margin over the strongest noise maximum.
    **locate_kwargs
        The other keywords of :func:`locate` (``percentile``, ``separation``, ...), as used in
        the pipeline.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(100, 10, (2, 128, 128))
    >>> cut = noise_minmass(a, b, 9, separation=20)
    >>> bool(cut > 0)
    True
    """
    noise = np.clip(np.asarray(second, np.float64) - np.asarray(first, np.float64), 0, None)
    with warnings.catch_warnings():  # a noise image may well have no maximum above minmass
        warnings.simplefilter("ignore", UserWarning)
        masses = locate(noise, diameter, **locate_kwargs)["mass"]
    return float(factor * masses.max()) if len(masses) else 0.0
