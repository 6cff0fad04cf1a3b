"""Crystal maps: place per-frame values on the scan grid (bluesky ``grid_scan`` conventions).

A feature's ``frame`` is the raw event's ``seq_num`` (1-based). Grid points are visited in
C order over the start document's ``shape``; an axis whose ``snaking`` flag is true runs
backwards on odd passes, a pass being one sweep of that axis (counted in C order over the
axes before it). Pure numpy/pandas/xarray.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["grid_index", "place_on_grid", "grid_coords", "grid_of", "crystal_maps", "maps_to_xarray"]

logger = logging.getLogger("streamcrystal")

PARTICLE_COLUMNS = ("particle", "y", "x", "n_frames", "total_intensity")


def grid_index(seq_nums, shape: Sequence[int], snaking: Sequence[bool] | None = None) -> np.ndarray:
    """The grid indices, shape ``(n, ndim)``, of 1-based ``seq_nums``.

    Examples
    --------
    >>> grid_index([1, 4, 5, 8], (2, 4), (False, True)).tolist()
    [[0, 0], [0, 3], [1, 3], [1, 0]]
    """
    shape = tuple(int(n) for n in shape)
    snaking = tuple(snaking) if snaking is not None else (False,) * len(shape)
    seq = np.asarray(seq_nums, dtype=np.int64).ravel()
    size = int(np.prod(shape))
    bad = seq[(seq < 1) | (seq > size)]
    if bad.size:
        raise ValueError(f"seq_num {int(bad[0])} is outside the scan grid of shape {shape} (valid: 1..{size})")
    steps = np.stack(np.unravel_index(seq - 1, shape), axis=1) if seq.size else np.zeros((0, len(shape)), np.int64)
    index = steps.copy()
    for axis, snakes in enumerate(snaking):
        if snakes and axis > 0:
            passes = np.ravel_multi_index(tuple(steps[:, :axis].T), shape[:axis]) if seq.size else np.zeros(0, np.int64)
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
    seq = np.asarray(seq_nums, dtype=np.int64).ravel()
    if len(np.unique(seq)) != len(seq):
        raise ValueError("two values for one grid point: seq_nums must be unique")
    grid = np.zeros(tuple(shape), dtype=np.float64)
    index = grid_index(seq, shape, snaking)
    grid[tuple(index.T)] = np.asarray(values, dtype=np.float64).ravel()
    return grid


def grid_coords(shape: Sequence[int], extents: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """Motor positions along each axis: ``np.linspace(start, stop, n)``.

    Examples
    --------
    >>> [c.tolist() for c in grid_coords((2, 3), ([0, 1], [0, 2]))]
    [[0.0, 1.0], [0.0, 1.0, 2.0]]
    """
    if len(extents) != len(shape):
        raise ValueError(f"extents has {len(extents)} axes but shape {tuple(shape)} has {len(shape)}")
    return [np.linspace(float(start), float(stop), int(n)) for (start, stop), n in zip(extents, shape)]


def grid_of(start: Mapping, num_events: int | None = None) -> tuple[tuple[int, ...], tuple[bool, ...], tuple | None, tuple[str, ...]]:
    """``(shape, snaking, extents, dims)`` of a run, from its start document.

    A run with no ``shape`` gives a 1-D grid over its ``num_events`` events.

    Examples
    --------
    >>> grid_of({"shape": [2, 3], "extents": [[0, 1], [0, 2]], "snaking": [False, True], "motors": ["y", "x"]})
    ((2, 3), (False, True), ((0.0, 1.0), (0.0, 2.0)), ('y', 'x'))
    >>> grid_of({}, num_events=5)
    ((5,), (False,), None, ('seq_num',))
    """
    if not start.get("shape"):
        return (int(num_events or 0),), (False,), None, ("seq_num",)
    shape = tuple(int(n) for n in start["shape"])
    snaking = tuple(bool(s) for s in start.get("snaking") or (False,) * len(shape))
    if len(snaking) != len(shape):
        raise ValueError(f"start key 'snaking' has {len(snaking)} entries but 'shape' {shape} has {len(shape)}")
    extents = start.get("extents")
    if extents is not None:
        extents = tuple((float(a), float(b)) for a, b in extents)
        if len(extents) != len(shape):
            raise ValueError(f"start key 'extents' has {len(extents)} entries but 'shape' {shape} has {len(shape)}")
    motors = start.get("motors") or ()
    dims = tuple(motors) if len(motors) == len(shape) else tuple(f"dim_{i}" for i in range(len(shape)))
    return shape, snaking, extents, dims


def crystal_maps(
    tracks: pd.DataFrame, shape: Sequence[int], snaking: Sequence[bool] | None = None, *, intensity: str = "mass",
    min_frames: int = 1,
) -> tuple[pd.DataFrame, np.ndarray]:
    """One crystal map per particle: its ``intensity`` filled into a zero background.

    Returns
    -------
    particles : pandas.DataFrame
        ``particle, y, x, n_frames, total_intensity`` (mean detector position), one row per
        particle seen on at least ``min_frames`` frames, sorted by particle.
    maps : numpy.ndarray, shape ``(n_particles, *shape)``

    Examples
    --------
    >>> tracks = pd.DataFrame({"frame": [1, 2, 2], "particle": [0, 0, 1], "y": [1.0, 3.0, 9.0],
    ...                        "x": [2.0, 2.0, 9.0], "mass": [10.0, 20.0, 5.0]})
    >>> particles, maps = crystal_maps(tracks, (1, 2), min_frames=2)
    >>> particles[["particle", "y", "n_frames"]].values.tolist(), maps.tolist()
    ([[0.0, 2.0, 2.0]], [[[10.0, 20.0]]])
    """
    shape = tuple(int(n) for n in shape)
    if intensity not in tracks.columns:
        raise KeyError(f"intensity column {intensity!r} is not in the tracks; valid choices: {sorted(tracks.columns)}")
    size = int(np.prod(shape))
    outside = tracks["frame"] > size
    if outside.any():
        logger.warning("frames %s are outside the scan grid of shape %s; not mapped", sorted(set(tracks.loc[outside, "frame"])), shape)
        tracks = tracks[~outside]
    grouped = tracks.groupby("particle", sort=True)
    summary = grouped.agg(y=("y", "mean"), x=("x", "mean"), n_frames=("frame", "nunique"), total_intensity=(intensity, "sum"))
    summary = summary[summary["n_frames"] >= min_frames].reset_index()
    maps = np.zeros((len(summary), *shape), dtype=np.float64)
    for i, particle in enumerate(summary["particle"]):
        rows = grouped.get_group(particle)
        maps[i] = place_on_grid(rows["frame"].to_numpy(), rows[intensity].to_numpy(), shape, snaking)
    particles = summary.loc[:, list(PARTICLE_COLUMNS)].astype(
        {"particle": np.int64, "y": np.float64, "x": np.float64, "n_frames": np.int64, "total_intensity": np.float64}
    )
    return particles, maps


def maps_to_xarray(particles: pd.DataFrame, maps: np.ndarray, *, extents=None, dims=None) -> xr.DataArray:
    """The maps as a ``DataArray`` named ``crystal_map``, dims ``("particle", *dims)``.

    Coordinates along the grid come from ``extents`` (motor positions) when given; the
    particle dimension carries ``y``, ``x`` and ``n_frames``.

    Examples
    --------
    >>> particles = pd.DataFrame({"particle": [4], "y": [1.0], "x": [2.0], "n_frames": [1]})
    >>> da = maps_to_xarray(particles, np.ones((1, 2, 3)), extents=((0, 1), (0, 2)), dims=("y_motor", "x_motor"))
    >>> da.dims, da.coords["x_motor"].values.tolist()
    (('particle', 'y_motor', 'x_motor'), [0.0, 1.0, 2.0])
    """
    grid_shape = maps.shape[1:]
    dims = tuple(dims) if dims is not None else tuple(f"dim_{i}" for i in range(len(grid_shape)))
    coords: dict = {"particle": particles["particle"].to_numpy()}
    for column in ("y", "x", "n_frames"):
        if column in particles:
            coords[f"peak_{column}" if column in dims else column] = ("particle", particles[column].to_numpy())
    axes = grid_coords(grid_shape, extents) if extents is not None else [np.arange(n) for n in grid_shape]
    coords.update({dim: axis for dim, axis in zip(dims, axes)})
    return xr.DataArray(maps, dims=("particle", *dims), coords=coords, name="crystal_map")
