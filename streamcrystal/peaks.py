"""Locate Bragg peaks on one processed image with ``trackpy.locate``.

The only place where trackpy's (x, y) naming enters; everything else in the package is
(row, col). The fast exact engine of a later release plugs in behind :func:`locate`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["FEATURE_COLUMNS", "locate", "empty_features"]

#: The columns of a located feature, in trackpy's order (``ep`` last).
FEATURE_COLUMNS: tuple[str, ...] = ("y", "x", "mass", "size", "ecc", "signal", "raw_mass", "ep")

#: "trackpy" is trackpy's own locate; trackpy's engine names select its inner engine.
_ENGINES = ("trackpy", "auto", "python", "numba")


def empty_features() -> pd.DataFrame:
    """A feature table with no rows and every column in float64.

    Examples
    --------
    >>> list(empty_features().columns)
    ['y', 'x', 'mass', 'size', 'ecc', 'signal', 'raw_mass', 'ep']
    """
    return pd.DataFrame({column: pd.Series(dtype=np.float64) for column in FEATURE_COLUMNS})


def locate(image: np.ndarray, diameter: int, *, engine: str = "trackpy", **kwargs) -> pd.DataFrame:
    """Find the Bragg peaks of one 2-D image; ``trackpy.locate(image, diameter, **kwargs)``.

    Parameters
    ----------
    image : numpy.ndarray, shape (rows, cols)
        The processed (averaged, background-subtracted, clipped) image.
    diameter : int
        Odd feature diameter in pixels, as in trackpy.
    engine : {"trackpy", "auto", "python", "numba"}
        The peak finder: ``"trackpy"`` is ``trackpy.locate`` as it is; trackpy's own engine
        names are passed on to it.
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
    import trackpy  # imported here: trackpy pulls in numba and pandas plotting at import

    if engine != "trackpy":
        kwargs["engine"] = engine
    features = trackpy.locate(image, diameter, **kwargs)
    if len(features) == 0:
        return empty_features()
    if "ep" not in features.columns:
        features["ep"] = np.nan
    return features.loc[:, list(FEATURE_COLUMNS)].astype(np.float64).reset_index(drop=True)
