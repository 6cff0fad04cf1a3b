"""The output tables, once: their columns, their dtypes, and their event-model data keys.

Every table a pipeline emits (as documents in the streams of an analysis run, as pandas in
:class:`~streamcrystal.graph.results.RunResults`, and read back from a catalog) is described
here and nowhere else:

``features``  one row per located peak: trackpy's columns (below), ``frame`` (the raw ``seq_num``),
              ``reading`` (the raw event's number in the run) and ``point`` (its sample point);
``frames``    one row per processed raw event (:data:`FRAME_DTYPES`) and where the sample was
              (one column per scan dimension);
``tracks``    the features with their ``particle``, linked as they come;
``relabels``  particle ids a reading joined (``merge``: a bridging point) or parted (``split``);
``points``    at the stop, one row per sample point: its coordinates, ``frame`` (the ``seq_num``
              of its current reading) and, on a grid, its grid index (``index_<dimension>``);
``maps``      one row per mapped particle (:data:`PARTICLE_DTYPES`) and its ``map`` over the scan;
``grains``    at the stop, one row per grain (:data:`GRAIN_DTYPES`) and its ``map``: the sum of its
              Bragg peaks' maps, each normalised to its maximum.

The feature columns are trackpy's, and depend on how ``trackpy.locate`` is called: with one
diameter ``y, x, mass, size, ecc, signal, raw_mass, ep``; with one diameter per axis
``size_y, size_x`` and ``ep_y, ep_x`` instead of ``size`` and ``ep``; without
``characterize`` only ``y, x, mass``.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

__all__ = ["STREAMS", "FRAME_DTYPES", "RELABEL_DTYPES", "PARTICLE_DTYPES", "GRAIN_DTYPES", "feature_columns", "empty_features", "conform_features",
           "typed", "data_keys"]

#: The streams of an analysis run, in the order their descriptors come.
STREAMS = ("features", "frames", "tracks", "relabels", "points", "maps", "grains")

#: The ``frames`` table: one row per processed raw event (``superseded``: a later reading of the
#: same point replaces it; ``masked_fraction``: the share of masked pixels; ``latency``: seconds
#: from the raw event's time to its features placed and linked).
FRAME_DTYPES = {"frame": np.int64, "reading": np.int64, "point": np.int64, "n_peaks": np.int64,
                "total_intensity": np.float64, "masked_fraction": np.float64, "superseded": np.bool_,
                "skipped": np.bool_, "skip_reason": object, "latency": np.float64}

#: The ``relabels`` table: ``particle`` became ``into`` at ``reading`` (``kind``: merge or split).
RELABEL_DTYPES = {"frame": np.int64, "reading": np.int64, "particle": np.int64, "into": np.int64, "kind": object}

#: The ``particles`` table (the ``maps`` stream without its maps): one row per mapped particle,
#: ``y, x`` its mean detector position (pixels), ``n_frames`` the scan points it was seen on,
#: ``grain`` the grain it belongs to (0: none).
PARTICLE_DTYPES = {"particle": np.int64, "y": np.float64, "x": np.float64, "n_frames": np.int64,
                   "total_intensity": np.float64, "grain": np.int64}

#: The ``grains`` table (the ``grains`` stream without its maps): one row per grain, its Bragg
#: peaks (``n_reflections``), their particles, and its ``footprint`` (points it covers).
GRAIN_DTYPES = {"grain": np.int64, "n_reflections": np.int64, "n_particles": np.int64, "footprint": np.int64}

_INTEGERS = {"frame", "reading", "point", "particle", "into", "n_peaks", "n_frames", "seq_num", "grain",
             "n_reflections", "n_particles", "footprint"}
_WHERE = ("frame", "reading", "point")  # where a feature was seen
_SOURCE = "streamcrystal"


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
    columns = list(columns)
    # one float64 block: a tenth of the time of a Series per column (about 0.1 against 1.1 ms,
    # paid by every frame without peaks)
    return pd.DataFrame(np.empty((0, len(columns))), columns=columns)


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
    # filled column by column into one float64 block rather than reindex + astype + reset_index:
    # the same table, in two thirds of the time (per frame, on the workers)
    values = np.full((len(found), len(columns)), np.nan)
    for k, column in enumerate(columns):
        if column in found.columns:
            values[:, k] = found[column].to_numpy(dtype=np.float64)
    return pd.DataFrame(values, columns=columns)


def typed(table: pd.DataFrame, dtypes: dict) -> pd.DataFrame:
    """``table`` with exactly the columns of ``dtypes``, in their order and dtypes (read back from a catalog).

    Examples
    --------
    A column the table lacks (a run written by an older version) is filled with 0 if it is an
    integer or boolean column (``grain`` 0: none), NaN otherwise.

    >>> read_back = pd.DataFrame({"x": [1], "particle": [2.0], "y": [0], "total_intensity": [5], "n_frames": [3.0]})
    >>> old = typed(read_back, PARTICLE_DTYPES)
    >>> old.dtypes.tolist(), old["grain"].tolist()
    ([dtype('int64'), dtype('float64'), dtype('float64'), dtype('int64'), dtype('float64'), dtype('int64')], [0])
    """
    missing = {column: (0 if np.dtype(dtype).kind in "iub" else np.nan)
               for column, dtype in dtypes.items() if column not in table.columns}
    return table.reindex(columns=list(dtypes)).fillna(missing).astype(dtypes)


def _key(column: str) -> dict:
    if column in _INTEGERS:
        dtype = "integer"
    elif column in ("skipped", "superseded"):
        dtype = "boolean"
    elif column in ("skip_reason", "kind"):
        dtype = "string"
    else:
        dtype = "number"
    return {"dtype": dtype, "shape": [], "source": _SOURCE}


def data_keys(stream: str, *, feature_columns: Iterable[str] = feature_columns(), dimensions: Iterable[str] = (),
              grid_shape=(), grid_dims=(), max_members: int = 1) -> dict:
    """The event-model ``data_keys`` of an analysis run's ``stream``.

    ``feature_columns`` are those of the ``features`` and ``tracks`` streams; ``dimensions``
    the scan's position fields (columns of ``frames`` and ``points``); ``grid_shape`` and
    ``grid_dims`` the shape and dimension names of a ``maps`` or ``grains`` stream's ``map``;
    ``max_members`` the length of a ``grains`` event's ``particles`` (its member particles,
    padded with -1 to the largest grain's count: event-model arrays have one shape per stream).

    Examples
    --------
    >>> sorted(data_keys("frames", dimensions=["sample_x"]))[:4]
    ['frame', 'latency', 'masked_fraction', 'n_peaks']
    >>> data_keys("maps", grid_shape=(4, 5), grid_dims=("sample_y", "sample_x"))["map"]["shape"]
    [4, 5]
    """
    dimensions = list(dimensions)
    if stream == "features":
        columns = [*feature_columns, *_WHERE]
    elif stream == "tracks":
        columns = [*feature_columns, *_WHERE, "particle"]
    elif stream == "frames":
        columns = [*FRAME_DTYPES, *dimensions]
    elif stream == "relabels":
        columns = list(RELABEL_DTYPES)
    elif stream == "points":
        columns = ["point", "frame", *dimensions, *(f"index_{d}" for d in dimensions)]
    elif stream in ("maps", "grains"):
        keys = {column: _key(column) for column in (PARTICLE_DTYPES if stream == "maps" else GRAIN_DTYPES)}
        keys["map"] = {"dtype": "array", "shape": list(grid_shape), "dtype_numpy": "<f8", "dims": list(grid_dims),
                       "source": _SOURCE}
        if stream == "grains":
            keys["particles"] = {"dtype": "array", "shape": [int(max_members)], "dtype_numpy": "<i8",
                                 "source": _SOURCE}
        return keys
    else:
        raise ValueError(f"no stream {stream!r} in an analysis run; valid streams: {list(STREAMS)}")
    return {column: _key(column) for column in columns}
