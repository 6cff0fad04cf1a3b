"""Results of a run as pandas/xarray objects, for notebooks."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ..records import RunAnalysis
from ..science.maps import maps_to_xarray

__all__ = ["RunResults", "ResultStore", "maps_as_xarray"]


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
        One row per sample point: ``point``, one column per scan dimension, ``seq_num`` of its
        current reading and, on a grid, its index along each dimension (``index_<dim>``).
    placement : dict
        How the readings were placed and linked (as in the analysis start).
    complete : bool
        Whether the run has stopped.
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

    @classmethod
    def from_analysis(cls, analysis: RunAnalysis, *, complete: bool = True) -> "RunResults":
        placement = dict(analysis.placement)
        return cls(analysis.run_uid, analysis.features, analysis.frames, analysis.tracks, analysis.particles,
                   maps_as_xarray(analysis.particles, analysis.maps, analysis.grid, analysis.points),
                   analysis.problems, analysis.failure, analysis.points if analysis.points is not None else
                   pd.DataFrame(), placement, complete)


def maps_as_xarray(particles: pd.DataFrame, maps: np.ndarray, grid: dict, points: pd.DataFrame | None) -> xr.DataArray:
    """The maps with their coordinates: the grid's axes, or each point's motor positions."""
    dims = list(grid["dims"])
    if dims == ["point"] and points is not None:
        motors = [column for column in points.columns if column not in ("point", "seq_num")]
        coords = {"point": points["point"].to_numpy(), **{m: points[m].to_numpy() for m in motors}}
    else:
        coords = dict(zip(dims, grid.get("coords") or ()))
    return maps_to_xarray(particles, maps, dims=dims, coords=coords)


class ResultStore:
    """The results of the last ``keep`` runs, newest last (the ``results`` sink's memory)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._runs: OrderedDict[str, RunAnalysis] = OrderedDict()

    def add(self, analysis: RunAnalysis) -> None:
        self._runs[analysis.run_uid] = analysis
        while len(self._runs) > self.keep:
            self._runs.popitem(last=False)

    def get(self, raw_uid: str | None = None) -> RunResults:
        if not self._runs:
            raise KeyError("no run has been completed by this pipeline yet")
        if raw_uid is None:
            raw_uid = next(reversed(self._runs))
        if raw_uid not in self._runs:
            raise KeyError(
                f"no results for raw run {raw_uid!r}; this pipeline keeps the last {self.keep} "
                f"completed runs: {list(self._runs)}"
            )
        return RunResults.from_analysis(self._runs[raw_uid])
