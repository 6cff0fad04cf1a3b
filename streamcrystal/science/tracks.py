"""Accumulate the features of a run and link them into particles with ``trackpy.link``."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from ..schema import feature_columns

__all__ = ["concat_features", "link_features", "quiet_linking"]


def concat_features(tables: Iterable[pd.DataFrame], columns: Iterable[str] = feature_columns()) -> pd.DataFrame:
    """Concatenate per-frame feature tables (each with a ``frame`` column), sorted by frame.

    The sort is stable, so features keep trackpy's order within a frame, and the result does
    not depend on the order in which frames were processed (in parallel, or replayed).

    Examples
    --------
    >>> a = pd.DataFrame({"y": [1.0], "x": [2.0], "frame": [2]})
    >>> b = pd.DataFrame({"y": [3.0], "x": [4.0], "frame": [1]})
    >>> concat_features([a, b])["frame"].tolist()
    [1, 2]
    """
    tables = [table for table in tables if len(table)]
    if not tables:  # ``columns``: those of the empty table
        empty = {column: pd.Series(dtype=np.float64) for column in columns}
        return pd.DataFrame({**empty, "frame": pd.Series(dtype=np.int64)})
    features = pd.concat(tables, ignore_index=True)
    return features.sort_values("frame", kind="stable").reset_index(drop=True)


def link_features(features: pd.DataFrame, search_range: float, **link_kwargs) -> pd.DataFrame:
    """Link features across frames: ``trackpy.link(features, search_range, **link_kwargs)``.

    Parameters
    ----------
    features : pandas.DataFrame
        Columns ``y``, ``x``, ``frame`` (the raw event's ``seq_num``) and any others.
    search_range : float
        Largest distance in pixels a peak may move between frames and stay one particle.
    **link_kwargs
        Any other keyword of ``trackpy.link``. ``memory`` matters for grid scans: frames
        follow scan order, so a grain spanning several rows reappears only after a gap of up
        to one row; ``memory`` of about the number of points per row bridges it, otherwise
        one grain becomes one particle per row.

    Returns
    -------
    pandas.DataFrame
        The features, sorted by frame, with an integer ``particle`` column.

    Examples
    --------
    >>> features = pd.DataFrame({"y": [10.0, 11.0, 90.0], "x": [10.0, 10.5, 90.0], "frame": [1, 2, 2]})
    >>> link_features(features, search_range=5)["particle"].tolist()
    [0, 0, 1]
    """
    import trackpy

    ordered = features.sort_values("frame", kind="stable").reset_index(drop=True)
    if len(ordered) == 0:  # trackpy.link raises IndexError on an empty table
        return ordered.assign(particle=pd.Series(dtype=np.int64))
    with quiet_linking():
        linked = trackpy.link(ordered, search_range, **link_kwargs)
    linked["particle"] = linked["particle"].astype(np.int64)
    return linked.reset_index(drop=True)


@contextlib.contextmanager
def quiet_linking() -> Iterator[None]:
    """Keep ``trackpy.link``'s INFO line per frame out of the log, for the time of a block.

    trackpy logs "Frame N: M trajectories present." at INFO for every frame it links, a
    flood on a scan of thousands of points. Its linking logger's level is raised to WARNING
    inside the block and restored after, so the user's own logging setup (``trackpy.quiet``
    or not) is what it was.

    Examples
    --------
    >>> before = logging.getLogger("trackpy.linking.linking").level
    >>> with quiet_linking():
    ...     logging.getLogger("trackpy.linking.linking").level
    30
    >>> logging.getLogger("trackpy.linking.linking").level == before
    True
    """
    linking_logger = logging.getLogger("trackpy.linking.linking")
    level = linking_logger.level
    linking_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        linking_logger.setLevel(level)
