"""Crystal maps: place per-frame values on the scan grid (bluesky ``grid_scan`` conventions).

A feature's ``frame`` is the raw event's ``seq_num`` (1-based). Grid points are visited in
``seq_num`` order, C order over the start document's ``shape`` (the first axis is the
slowest). An axis whose ``snaking`` flag is true runs backwards on odd passes; its pass
number is the C-order step index over the axes before it (so the first axis never snakes).
This is what ``bluesky.utils.snake_cyclers`` does. Pure numpy/pandas/xarray.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import ColumnError
from ..schema import PARTICLE_DTYPES

__all__ = ["grid_index", "place_on_grid", "grid_coords", "grid_of", "scan_memory", "crystal_maps", "maps_to_xarray"]

logger = logging.getLogger("streamcrystal")



def _as_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in np.atleast_1d(shape))
    if not shape or any(n < 0 for n in shape):
        raise ValueError(f"grid shape {shape} must have at least one axis and no negative length")
    return shape


def _as_snaking(snaking: Sequence[bool] | None, shape: tuple[int, ...]) -> tuple[bool, ...]:
    if snaking is None:
        return (False,) * len(shape)
    snaking = tuple(bool(s) for s in snaking)
    if len(snaking) != len(shape):
        raise ValueError(f"snaking {snaking} has {len(snaking)} flags but shape {shape} has {len(shape)} axes; "
                         "give one flag per axis (the start document's 'snaking')")
    return snaking


def _as_seq_nums(seq_nums) -> np.ndarray:
    seq = np.asarray(seq_nums).ravel()
    if seq.dtype.kind == "f":
        fractional = seq[seq != np.round(seq)]
        if fractional.size:
            raise ValueError(f"seq_num {fractional[0]!r} is not an integer; seq_nums are the events' 1-based seq_num")
    return seq.astype(np.int64)


def grid_index(seq_nums, shape: Sequence[int], snaking: Sequence[bool] | None = None) -> np.ndarray:
    """The grid indices, shape ``(n, ndim)``, of 1-based ``seq_nums``.

    Parameters
    ----------
    seq_nums : array_like of int
        Events' ``seq_num`` (1 is the first grid point).
    shape : sequence of int
        The start document's ``shape``.
    snaking : sequence of bool, optional
        The start document's ``snaking``; default: no axis snakes.

    Examples
    --------
    >>> grid_index([1, 4, 5, 8], (2, 4), (False, True)).tolist()
    [[0, 0], [0, 3], [1, 3], [1, 0]]
    """
    shape = _as_shape(shape)
    snaking = _as_snaking(snaking, shape)
    seq = _as_seq_nums(seq_nums)
    size = int(np.prod(shape))
    bad = seq[(seq < 1) | (seq > size)]
    if bad.size:
        raise ValueError(f"seq_num {int(bad[0])} is outside the scan grid of shape {shape}: "
                         f"valid seq_nums are 1..{size} (1-based, as in the events)")
    steps = np.stack(np.unravel_index(seq - 1, shape), axis=1).astype(np.int64).reshape(-1, len(shape))
    index = steps.copy()
    for axis in range(1, len(shape)):
        if snaking[axis]:
            passes = np.ravel_multi_index(tuple(steps[:, :axis].T), shape[:axis])
            odd = passes % 2 == 1
            index[odd, axis] = shape[axis] - 1 - steps[odd, axis]
    return index


def place_on_grid(seq_nums, values, shape: Sequence[int], snaking: Sequence[bool] | None = None) -> np.ndarray:
    """A float64 array of ``shape``: ``values`` at the grid points of ``seq_nums``, zero elsewhere.

    Examples
    --------
    >>> place_on_grid([1, 3], [5.0, 7.0], (2, 2), (False, True))
    array([[5., 0.],
           [0., 7.]])
    """
    seq = _as_seq_nums(seq_nums)
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.shape != seq.shape:
        raise ValueError(f"{len(values)} values for {len(seq)} seq_nums: give one value per seq_num")
    unique, counts = np.unique(seq, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"seq_num {int(unique[counts > 1][0])} is given {int(counts.max())} values but a grid "
                         "point holds one; aggregate per frame first (e.g. groupby('frame').sum())")
    grid = np.zeros(_as_shape(shape), dtype=np.float64)
    grid[tuple(grid_index(seq, shape, snaking).T)] = values
    return grid


def scan_memory(shape: Sequence[int], snaking: Sequence[bool] | None = None) -> int:
    """The ``trackpy.link`` ``memory`` that keeps one grain one particle on this scan grid.

    Linking follows scan order, so a grain seen on two neighbouring grid points is absent
    from every frame taken between them. This is the largest such absence over all pairs
    of neighbours: ``n_cols - 1`` frames on a 2-D grid, but ``2 * n_cols - 2`` when the
    fast axis snakes (a grain at the turning end of one row is seen again only at the far
    end of the next). Smaller values split a grain into one particle per row or so.

    Examples
    --------
    >>> scan_memory((16, 12)), scan_memory((16, 12), (False, True)), scan_memory((5,))
    (11, 22, 0)
    """
    shape = _as_shape(shape)
    size = int(np.prod(shape))
    if size == 0:
        return 0
    order = place_on_grid(np.arange(1, size + 1), np.arange(size), shape, snaking)
    gaps = [np.abs(np.diff(order, axis=axis)).max() - 1 for axis in range(len(shape)) if shape[axis] > 1]
    return int(max(gaps, default=0))


def grid_coords(shape: Sequence[int], extents: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Motor positions along each axis: ``np.linspace(start, stop, n)``.

    Examples
    --------
    >>> [c.tolist() for c in grid_coords((2, 3), ([0, 1], [0, 2]))]
    [[0.0, 1.0], [0.0, 1.0, 2.0]]
    """
    shape = _as_shape(shape)
    if len(extents) != len(shape):
        raise ValueError(f"extents has {len(extents)} axes but shape {shape} has {len(shape)}; "
                         "give one [start, stop] per axis, in the order of shape")
    return [np.linspace(float(start), float(stop), n) for (start, stop), n in zip(extents, shape)]


def grid_of(start_doc: Mapping, num_events: int | None = None
            ) -> tuple[tuple[int, ...], tuple[bool, ...], tuple | None, tuple[str, ...]]:
    """``(shape, snaking, extents, dims)`` of a run, from its start document.

    A run with no ``shape`` gives a 1-D grid over its ``num_events`` events, dim ``seq_num``.
    ``dims`` are the ``motors`` if there is one per axis, else ``dim_0, dim_1, ...``.

    Examples
    --------
    >>> grid_of({"shape": [2, 3], "extents": [[0, 1], [0, 2]], "snaking": [False, True],
    ...          "motors": ["motor1", "motor2"]})
    ((2, 3), (False, True), ((0.0, 1.0), (0.0, 2.0)), ('motor1', 'motor2'))
    >>> grid_of({"plan_name": "count"}, num_events=5)
    ((5,), (False,), None, ('seq_num',))
    """
    if not start_doc.get("shape"):
        return (int(num_events or 0),), (False,), None, ("seq_num",)
    shape = tuple(int(n) for n in start_doc["shape"])
    snaking = tuple(bool(s) for s in (start_doc.get("snaking") or (False,) * len(shape)))
    if len(snaking) != len(shape):
        raise ValueError(f"start document key 'snaking' {list(snaking)} has {len(snaking)} entries but 'shape' "
                         f"{list(shape)} has {len(shape)}; they must have one entry per scan axis")
    extents = start_doc.get("extents")
    if extents is not None:
        if len(extents) != len(shape):
            raise ValueError(f"start document key 'extents' has {len(extents)} entries but 'shape' {list(shape)} "
                             f"has {len(shape)}; they must have one [start, stop] per scan axis")
        extents = tuple((float(a), float(b)) for a, b in extents)
    motors = tuple(start_doc.get("motors") or ())
    dims = motors if len(motors) == len(shape) else tuple(f"dim_{i}" for i in range(len(shape)))
    return shape, snaking, extents, dims


_MAPPED = {column: dtype for column, dtype in PARTICLE_DTYPES.items() if column != "grain"}  # grains come after


def _empty_particles() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _MAPPED.items()})


def crystal_maps(
    tracks: pd.DataFrame, shape: Sequence[int], snaking: Sequence[bool] | None = None, *,
    intensity: str = "mass", min_frames: int = 1, index: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """One crystal map per particle: its ``intensity`` filled into a zero background.

    Parameters
    ----------
    tracks : pandas.DataFrame
        Linked features: ``particle``, ``y``, ``x``, the ``intensity`` column, and where each
        was seen: ``point`` (a sample point, with ``index``) or else ``frame`` (the event's
        1-based ``seq_num``, placed with ``grid_scan``'s conventions). Features beyond the
        grid are dropped with a warning. A table with no rows gives no maps.
    shape : sequence of int
        The maps' grid: the scan grid, or ``(n_points,)`` for points that are not a grid.
    snaking : sequence of bool, optional
        The start document's ``snaking`` (placement by ``frame`` only).
    intensity : str
        The column mapped, e.g. ``"mass"`` or ``"signal"``.
    min_frames : int
        Keep particles seen on at least this many distinct points (or frames).
    index : numpy.ndarray, shape (n_points, len(shape)), optional
        The grid index of each sample point (row ``k``: point ``k``): place features by their
        ``point``. Two features of one particle at one point add up.

    Returns
    -------
    particles : pandas.DataFrame
        ``particle, y, x, n_frames, total_intensity`` (``y, x``: mean detector position), one
        row per kept particle, sorted by particle.
    maps : numpy.ndarray
        float64, shape ``(n_particles, *shape)``, in the order of ``particles``.

    Examples
    --------
    >>> tracks = pd.DataFrame({"frame": [1, 2, 2], "particle": [0, 0, 1], "y": [1.0, 3.0, 9.0],
    ...                        "x": [2.0, 2.0, 9.0], "mass": [10.0, 20.0, 5.0]})
    >>> particles, maps = crystal_maps(tracks, (1, 2), min_frames=2)
    >>> particles[["particle", "y", "n_frames"]].values.tolist(), maps.tolist()
    ([[0.0, 2.0, 2.0]], [[[10.0, 20.0]]])
    >>> by_point = tracks.assign(point=[1, 0, 0])     # points 0 and 1 at grid (0, 1) and (0, 0)
    >>> crystal_maps(by_point, (1, 2), index=np.array([[0, 1], [0, 0]]), min_frames=2)[1].tolist()
    [[[10.0, 20.0]]]
    """
    shape = _as_shape(shape)
    where = "point" if index is not None else "frame"
    if len(tracks) == 0:
        return _empty_particles(), np.zeros((0, *shape), dtype=np.float64)
    if intensity not in tracks.columns:
        raise ColumnError(f"intensity column {intensity!r} is not in the tracks; valid choices: "
                          f"{[str(c) for c in tracks.columns if c not in ('frame', 'particle', 'point')]}")
    missing = [c for c in (where, "particle", "y", "x") if c not in tracks.columns]
    if missing:
        raise ColumnError(f"tracks lack the column(s) {missing} (have {list(tracks.columns)}); crystal maps "
                          f"need linked features: {where!r}, 'particle', 'y', 'x'")
    size = len(index) if index is not None else int(np.prod(shape))
    limit = size - 1 if index is not None else size
    outside = ((tracks[where] > limit) | (tracks[where] < 0)).to_numpy()
    if outside.any():
        logger.warning("%ss %s are beyond the scan grid of shape %s (%d points); their %d features are not "
                       "mapped", where, sorted(int(f) for f in set(tracks.loc[outside, where])), shape, size,
                       int(outside.sum()))
        tracks = tracks[~outside]
    grouped = tracks.groupby("particle", sort=True)
    summary = grouped.agg(y=("y", "mean"), x=("x", "mean"), n_frames=(where, "nunique"),
                          total_intensity=(intensity, "sum"))
    summary = summary[summary["n_frames"] >= min_frames].reset_index()
    maps = np.zeros((len(summary), *shape), dtype=np.float64)
    if index is not None:
        kept = tracks[tracks["particle"].isin(summary["particle"])]
        rows = np.searchsorted(summary["particle"].to_numpy(), kept["particle"].to_numpy())
        cells = np.asarray(index, dtype=np.int64)[kept["point"].to_numpy()]
        np.add.at(maps, (rows, *cells.T), kept[intensity].to_numpy(dtype=np.float64))
    else:
        snaking = _as_snaking(snaking, shape)
        for i, particle in enumerate(summary["particle"]):
            rows = grouped.get_group(particle)
            try:
                maps[i] = place_on_grid(rows["frame"].to_numpy(), rows[intensity].to_numpy(), shape, snaking)
            except ValueError as err:
                raise ValueError(f"particle {particle}: {err}") from err
    if not len(summary):
        return _empty_particles(), maps
    return summary.loc[:, list(_MAPPED)].astype(_MAPPED), maps


def maps_to_xarray(particles: pd.DataFrame, maps: np.ndarray, *, extents=None, dims=None,
                   coords: Mapping[str, np.ndarray] | None = None) -> xr.DataArray:
    """The maps as a ``DataArray`` named ``crystal_map``, dims ``("particle", *dims)``.

    Grid coordinates are ``coords[dim]`` when given (the motor positions of each grid axis,
    possibly non-uniform); else motor positions from ``extents`` (``linspace``); else the
    integer index (1-based for a ``seq_num`` dim, like the events). Maps over the points of a
    scan that is not a grid have the one dim ``point``, and ``coords`` gives each motor's
    position along it. The particle dim carries ``y``, ``x`` and ``n_frames`` (named
    ``peak_y`` etc. if a grid dim has that name).

    Examples
    --------
    >>> particles = pd.DataFrame({"particle": [4], "y": [1.0], "x": [2.0], "n_frames": [1]})
    >>> da = maps_to_xarray(particles, np.ones((1, 2, 3)), extents=((0, 1), (0, 2)), dims=("motor1", "motor2"))
    >>> da.dims, da.coords["motor2"].values.tolist(), da.coords["y"].values.tolist()
    (('particle', 'motor1', 'motor2'), [0.0, 1.0, 2.0], [1.0])
    """
    maps = np.asarray(maps)
    grid_shape = maps.shape[1:]
    if maps.ndim < 2 or len(particles) != maps.shape[0]:
        raise ValueError(f"maps of shape {maps.shape} do not match {len(particles)} particles: "
                         "expected (n_particles, *grid_shape), as returned by crystal_maps")
    dims = tuple(dims) if dims is not None else tuple(f"dim_{i}" for i in range(len(grid_shape)))
    if len(dims) != len(grid_shape):
        raise ValueError(f"dims {dims} name {len(dims)} grid axes but the maps have {len(grid_shape)} "
                         f"(grid shape {grid_shape})")
    given = dict(coords or {})
    if extents is not None:
        axes = grid_coords(grid_shape, extents)
    else:
        axes = [np.arange(n) + (1 if dim == "seq_num" else 0) for dim, n in zip(dims, grid_shape)]
    axes = [np.asarray(given.pop(dim, axis)) for dim, axis in zip(dims, axes)]
    coords_out = {**{"particle": particles["particle"].to_numpy()}, **dict(zip(dims, axes))}
    for column in ("y", "x", "n_frames"):
        if column in particles:
            coords_out[f"peak_{column}" if column in dims or column in given else column] = (
                "particle", particles[column].to_numpy())
    for name, values in given.items():  # positions along the one dim of maps over points
        coords_out[name] = (dims[0], np.asarray(values))
    return xr.DataArray(maps, dims=("particle", *dims), coords=coords_out, name="crystal_map")
