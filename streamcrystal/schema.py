"""The output tables, once: their columns, their dtypes, and their event-model data keys.

Every table a pipeline emits (as documents, as pandas in :class:`~streamcrystal.results.RunResults`,
and read back from a catalog) is described here and nowhere else.

The feature columns are trackpy's, and depend on how ``trackpy.locate`` is called: with one
diameter ``y, x, mass, size, ecc, signal, raw_mass, ep``; with one diameter per axis
``size_y, size_x`` and ``ep_y, ep_x`` instead of ``size`` and ``ep``; without
``characterize`` only ``y, x, mass``.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = ["feature_columns", "empty_features", "conform_features"]


def feature_columns(diameter: int | Iterable[int] = 1, *, characterize: bool = True) -> tuple[str, ...]:
    """The columns ``trackpy.locate`` gives for a 2-D image, in its order.

    Parameters
    ----------
    diameter : int or (int, int)
        As given to ``trackpy.locate``: one diameter, or one per axis (rows, columns).
    characterize : bool
        ``trackpy.locate``'s keyword: without it, only positions and mass.

    Examples
    --------
    >>> feature_columns(15)
    ('y', 'x', 'mass', 'size', 'ecc', 'signal', 'raw_mass', 'ep')
    >>> feature_columns((9, 7))
    ('y', 'x', 'mass', 'size_y', 'size_x', 'ecc', 'signal', 'raw_mass', 'ep_y', 'ep_x')
    >>> feature_columns(15, characterize=False)
    ('y', 'x', 'mass')
    """
    if not characterize:
        return ("y", "x", "mass")
    sizes = np.atleast_1d(diameter)
    if len(sizes) > 1 and len(set(int(d) for d in sizes)) > 1:
        return ("y", "x", "mass", "size_y", "size_x", "ecc", "signal", "raw_mass", "ep_y", "ep_x")
    return ("y", "x", "mass", "size", "ecc", "signal", "raw_mass", "ep")


def empty_features(columns: Iterable[str] = feature_columns()) -> pd.DataFrame:
    """A feature table with no rows, every column float64.

    Examples
    --------
    >>> empty_features().dtypes.unique().tolist()
    [dtype('float64')]
    """
    return pd.DataFrame({column: pd.Series(dtype=np.float64) for column in columns})


def conform_features(found: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """trackpy's DataFrame as the pipeline's feature table: ``columns`` only, float64, index 0..n-1.

    trackpy omits ``ep`` (and gives object columns) when it finds nothing, and adds no
    ``ep`` column when its noise estimate fails: such columns are NaN here.

    Examples
    --------
    >>> found = pd.DataFrame({"y": [1.0], "x": [2.0], "mass": [3], "extra": ["?"]}, index=[7])
    >>> conform_features(found, ("y", "x", "mass", "ep")).to_dict("list")
    {'y': [1.0], 'x': [2.0], 'mass': [3.0], 'ep': [nan]}
    """
    columns = list(columns)
    if len(found) == 0:
        return empty_features(columns)
    return found.reindex(columns=columns).astype(np.float64).reset_index(drop=True)
