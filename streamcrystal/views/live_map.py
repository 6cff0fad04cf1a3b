"""A live map of the peak intensity per scan point, redrawn in place while a run streams in."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from ..documents.tally import RunTally, Tally
from ..science.maps import grid_coords, grid_index, grid_of
from .plot import plot_real_aspect, show_in_place

__all__ = ["LiveMap"]


class LiveMap(Tally):
    """A live map of the peak intensity found at each grid point, redrawn as events come in.

    Subscribe it to a pipeline's output documents (``pipe.subscribe(LiveMap())``): at each
    analysis start it draws an empty map of the raw scan's grid (``raw_grid`` of the start),
    then adds the ``mass`` of every ``features`` event at its grid point. In a notebook the
    figure is updated in place (IPython display); elsewhere :attr:`figure` can be saved.

    Parameters
    ----------
    every : int
        Redraw after this many processed frames (and at the stop).
    intensity : str
        The feature column summed per grid point.
    """

    def __init__(self, every: int = 5, intensity: str = "mass") -> None:
        super().__init__()
        self.every = every
        self.intensity = intensity
        self.grid = None
        self.figure = None
        self._handle = None
        self._shape = self._snaking = self._extents = self._dims = None

    def opened(self, run: RunTally) -> None:
        raw_grid = run.start.get("raw_grid") or {}
        if not raw_grid.get("shape"):
            self.grid = None  # a run without a grid: nothing to map
            return
        self._shape, self._snaking, self._extents, self._dims = grid_of(raw_grid)
        self.grid = np.zeros(self._shape)
        self._handle = None
        self._draw(run)

    def counted(self, run: RunTally, stream: str, doc: Mapping) -> None:
        if self.grid is None or run is not self.latest:
            return
        if stream == "features":
            try:
                index = tuple(grid_index([doc["data"]["frame"]], self._shape, self._snaking)[0])
            except ValueError:
                return  # beyond the grid (an aborted or longer run): the maps warn about it
            self.grid[index] += float(doc["data"].get(self.intensity, 0.0))
        elif stream == "frames" and run.events % self.every == 0:
            self._draw(run)

    def finished(self, run: RunTally) -> None:
        if self.grid is not None and run is self.latest:
            self._draw(run)

    def _draw(self, run: RunTally) -> None:
        if len(self._shape) != 2:
            return
        coords = grid_coords(self._shape, self._extents) if self._extents else None
        array = self.grid if coords is None else xr.DataArray(self.grid, dims=self._dims, coords=dict(zip(self._dims, coords)))
        self.figure = plot_real_aspect(array)
        self.figure.axes[0].set_title(f"peak intensity, {run.events} frames")
        self._handle = show_in_place(self.figure, self._handle)
