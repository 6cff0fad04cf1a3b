"""Results of a run as pandas/xarray objects, for notebooks."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import pandas as pd
import xarray as xr

from ..records import RunAnalysis
from ..science.maps import maps_to_xarray

__all__ = ["RunResults", "ResultStore"]


@dataclass(frozen=True)
class RunResults:
    """What a pipeline found in one raw run.

    Attributes
    ----------
    raw_uid : str
    features : pandas.DataFrame
        Every located peak; ``frame`` is the raw event's ``seq_num``.
    frames : pandas.DataFrame
        One row per processed raw event: ``frame``, ``n_peaks``, ``total_intensity``,
        ``skipped``, ``skip_reason``.
    tracks : pandas.DataFrame
        The features with their ``particle``.
    particles : pandas.DataFrame
        One row per mapped particle: ``particle``, ``y``, ``x`` (mean detector position),
        ``n_frames``, ``total_intensity``.
    maps : xarray.DataArray
        ``(particle, *grid)`` crystal maps, coordinates from the scan's ``extents``.
    problems : tuple of str
        The skipped events and other problems, as named in the analysis stop's ``reason``.
    failure : str or None
        Why linking or mapping failed, if it did.
    """

    raw_uid: str
    features: pd.DataFrame
    frames: pd.DataFrame
    tracks: pd.DataFrame
    particles: pd.DataFrame
    maps: xr.DataArray
    problems: tuple[str, ...]
    failure: str | None

    @classmethod
    def from_analysis(cls, analysis: RunAnalysis) -> "RunResults":
        grid = analysis.grid
        maps = maps_to_xarray(analysis.particles, analysis.maps, extents=grid["extents"], dims=grid["dims"])
        return cls(analysis.run_uid, analysis.features, analysis.frames, analysis.tracks, analysis.particles, maps,
                   analysis.problems, analysis.failure)


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
