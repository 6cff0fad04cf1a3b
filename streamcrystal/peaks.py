"""Locate Bragg peaks on one processed image: ``trackpy.locate``'s answer, found fast.

The only place where trackpy's (x, y) naming enters; everything else in the package is
(row, col). The default engine is :mod:`streamcrystal.fastlocate`, which returns exactly
``trackpy.locate``'s DataFrame (and hands the calls it does not support to trackpy);
``engine="trackpy"`` runs trackpy itself.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = ["FEATURE_COLUMNS", "locate", "empty_features", "noise_minmass"]

#: The columns of a located feature, in trackpy's order (``ep`` last).
FEATURE_COLUMNS: tuple[str, ...] = ("y", "x", "mass", "size", "ecc", "signal", "raw_mass", "ep")

#: "fast" is :mod:`streamcrystal.fastlocate`; "trackpy" is trackpy's own locate; trackpy's
#: engine names select trackpy's locate with that refinement engine.
_ENGINES = ("fast", "trackpy", "auto", "python", "numba")


def empty_features() -> pd.DataFrame:
    """A feature table with no rows and every column in float64.

    Examples
    --------
    >>> list(empty_features().columns)
    ['y', 'x', 'mass', 'size', 'ecc', 'signal', 'raw_mass', 'ep']
    """
    return pd.DataFrame({column: pd.Series(dtype=np.float64) for column in FEATURE_COLUMNS})


def locate(image: np.ndarray, diameter: int, *, engine: str = "fast", **kwargs) -> pd.DataFrame:
    """Find the Bragg peaks of one 2-D image; ``trackpy.locate(image, diameter, **kwargs)``.

    Parameters
    ----------
    image : numpy.ndarray, shape (rows, cols)
        The processed (averaged, background-subtracted, clipped) image.
    diameter : int
        Odd feature diameter in pixels, as in trackpy.
    engine : {"fast", "trackpy", "auto", "python", "numba"}
        The peak finder: ``"fast"`` is :func:`streamcrystal.fastlocate.locate` (the same
        features as trackpy, 10x faster or more on detector images); ``"trackpy"`` is
        ``trackpy.locate`` as it is; trackpy's own engine names are passed on to it.
    **kwargs
        Any other keyword of ``trackpy.locate`` (``percentile``, ``separation``, ``minmass``,...).

    Returns
    -------
    pandas.DataFrame
        One row per peak with :data:`FEATURE_COLUMNS` (all float64, also when there is no
        peak: trackpy then omits ``ep`` and returns object columns).

    Examples
    --------
    >>> import trackpy
    >>> image = trackpy.artificial.draw_spots((64, 64), [(20, 30)], 5, noise_level=0, bitdepth=8)
    >>> features = locate(image, 9, separation=20)
    >>> features[["y", "x"]].round(0).values.tolist()
    [[20.0, 30.0]]
    """
    if engine not in _ENGINES:
        raise ValueError(f"engine {engine!r} is not one of the valid engines {_ENGINES!r}")
    # imported here: trackpy and numba take a while to import
    if engine == "fast":
        from .fastlocate import locate as find
    else:
        from trackpy import locate as find

        if engine != "trackpy":
            kwargs["engine"] = engine
    with warnings.catch_warnings():
        # A frame with no peak is normal here (and visible in the ``frames`` stream).
        warnings.filterwarnings("ignore", message="No maxima survived", category=UserWarning)
        warnings.filterwarnings("ignore", message="All local maxima were in the margins", category=UserWarning)
        features = find(image, diameter, **kwargs)
    if len(features) == 0:
        return empty_features()
    if "ep" not in features.columns:
        features["ep"] = np.nan
    return features.loc[:, list(FEATURE_COLUMNS)].astype(np.float64).reset_index(drop=True)


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
    masses = locate(noise, diameter, **locate_kwargs)["mass"]
    return float(factor * masses.max()) if len(masses) else 0.0
