"""Results of a run as pandas/xarray objects, for notebooks."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ..records import RunAnalysis
from ..science.maps import maps_to_xarray

__all__ = ["RunResults", "ResultStore", "maps_as_xarray", "grid_coords"]


@dataclass(frozen=True)
class RunResults:
    """What a pipeline found in one raw run.

    Attributes
    ----------
    raw_uid : str
    features : pandas.DataFrame
        Every located peak of the current readings: trackpy's columns, ``frame`` (the raw
        event's ``seq_num``), ``reading`` and ``point`` (where the sample was).
    frames : pandas.DataFrame
        One row per reading: ``frame``, ``reading``, ``point``, ``n_peaks``,
        ``total_intensity``, ``masked_fraction``, ``superseded`` (a later reading of the same
        point replaced it), ``skipped``, ``skip_reason``, and one column per scan dimension.
    tracks : pandas.DataFrame
        The features with their ``particle`` (the id a merged particle was merged into).
    particles : pandas.DataFrame
        One row per mapped particle: ``particle``, ``y``, ``x`` (mean detector position),
        ``n_frames``, ``total_intensity``.
    maps : xarray.DataArray
        ``(particle, *grid)`` crystal maps with the motors' coordinates; ``(particle, point)``
        (the motors' positions as coordinates along ``point``) for a scan that is not a grid.
    problems : tuple of str
        The skipped events and other problems, as named in the analysis stop's ``reason``.
    failure : str or None
        Why linking or mapping failed, if it did.
    points : pandas.DataFrame
        One row per sample point: ``point``, one column per scan dimension, ``frame`` (the
        ``seq_num`` of its current reading) and, on a grid, its index along each dimension
        (``index_<dim>``).
    placement : dict
        How the readings were placed and linked (as in the analysis start).
    complete : bool
        Whether the run has stopped (results during a run are those of its readings so far).
    grains : pandas.DataFrame
        One row per mapped particle: ``particle``, ``grain`` (1, 2, ...; 0 for none) and
        ``reflection`` (the Bragg peak: fragments of one peak share it).
    grain_table : pandas.DataFrame
        One row per grain (index ``grain``): its ``particles``, ``n_reflections``,
        ``n_particles``, ``footprint`` (points it covers), ``peaks`` (detector positions).
    grain_maps : xarray.DataArray
        ``(grain, *grid)``: each grain's map, the sum of its Bragg peaks' maps, each normalised
        to its maximum, with the motors' coordinates.
    grain_labels : xarray.DataArray
        ``grid``-shaped: which grain is strongest at each point, 0 where none.
    """

    raw_uid: str
    features: pd.DataFrame
    frames: pd.DataFrame
    tracks: pd.DataFrame
    particles: pd.DataFrame
    maps: xr.DataArray
    problems: tuple[str, ...]
    failure: str | None
    points: pd.DataFrame = field(default_factory=pd.DataFrame)
    placement: dict = field(default_factory=dict)
    complete: bool = True
    grains: pd.DataFrame = field(default_factory=pd.DataFrame)
    grain_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    grain_maps: xr.DataArray | None = None
    grain_labels: xr.DataArray | None = None

    @classmethod
    def from_analysis(cls, analysis: RunAnalysis, *, complete: bool = True) -> "RunResults":
        maps = maps_as_xarray(analysis.particles, analysis.maps, analysis.grid, analysis.points)
        points = analysis.points if analysis.points is not None else pd.DataFrame()
        grains = analysis.grains
        if grains is None:
            return cls(analysis.run_uid, analysis.features, analysis.frames, analysis.tracks, analysis.particles, maps,
                       analysis.problems, analysis.failure, points, dict(analysis.placement), complete)
        per_particle = pd.DataFrame({"particle": analysis.particles["particle"].to_numpy(),
                                     "grain": grains.labels, "reflection": grains.reflections})
        grain_maps = xr.DataArray(grains.maps.reshape(len(grains.maps), *maps.shape[1:]),
                                  dims=("grain", *maps.dims[1:]), name="grain_map",
                                  coords={"grain": grains.table.index.to_numpy(), **grid_coords(maps)})
        labels = xr.DataArray(grains.label_map.reshape(maps.shape[1:]), dims=maps.dims[1:], name="grain",
                              coords=grid_coords(maps))
        return cls(analysis.run_uid, analysis.features, analysis.frames, analysis.tracks, analysis.particles, maps,
                   analysis.problems, analysis.failure, points, dict(analysis.placement), complete, per_particle,
                   grains.table, grain_maps, labels)


def grid_coords(maps: xr.DataArray) -> dict:
    """The coordinates of the maps' grid (or points), without those along ``particle``."""
    return {name: coord for name, coord in maps.coords.items() if "particle" not in coord.dims}


def maps_as_xarray(particles: pd.DataFrame, maps: np.ndarray, grid: dict, points: pd.DataFrame | None) -> xr.DataArray:
    """The maps with their coordinates: the grid's axes, or each point's motor positions."""
    dims = list(grid["dims"])
    if dims == ["point"] and points is not None:
        motors = [column for column in points.columns if column not in ("point", "frame")]
        coords = {"point": points["point"].to_numpy(), **{m: points[m].to_numpy() for m in motors}}
    else:
        coords = dict(zip(dims, grid.get("coords") or ()))
    return maps_to_xarray(particles, maps, dims=dims, coords=coords)


class ResultStore:
    """The runs of a pipeline, newest last: those going on, and the last ``keep`` completed.

    A run going on answers with its results so far (``RunState.snapshot``); a completed one
    with its analysis. Thread-safe: ``pipe.results()`` may be called while the graph runs on
    another thread.
    """

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._runs: OrderedDict[str, object] = OrderedDict()  # raw uid -> RunState, or RunAnalysis when done
        self._lock = threading.Lock()

    def open(self, run) -> None:
        """A run started (a :class:`~streamcrystal.graph.runs.RunState`)."""
        with self._lock:
            self._runs.pop(run.run_uid, None)
            self._runs[run.run_uid] = run

    def add(self, analysis: RunAnalysis) -> None:
        """A run completed."""
        with self._lock:
            self._runs[analysis.run_uid] = analysis
            done = [uid for uid, run in self._runs.items() if isinstance(run, RunAnalysis)]
            for uid in done[:max(0, len(done) - self.keep)]:
                del self._runs[uid]

    def get(self, raw_uid: str | None = None) -> RunResults:
        with self._lock:
            if not self._runs:
                raise KeyError("no run has started in this pipeline yet")
            if raw_uid is None:
                raw_uid = next(reversed(self._runs))
            run = self._runs.get(raw_uid)
            if run is None:
                raise KeyError(f"no results for raw run {raw_uid!r}; this pipeline keeps the runs going on and the "
                               f"last {self.keep} completed: {list(self._runs)}")
        if isinstance(run, RunAnalysis):
            return RunResults.from_analysis(run)
        return run.snapshot()
