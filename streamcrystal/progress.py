"""Live feedback: a progress bar over a pipeline's output documents (tqdm.auto)."""
from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = ["LiveProgress"]


class LiveProgress:
    """Subscribe to a pipeline: a bar of events processed, with peaks found and events/s.

    ``tqdm.auto`` draws a widget in a notebook and a text bar in a terminal. The total is
    the raw start's ``num_points`` when the analysis start names it (else open-ended).

    Parameters
    ----------
    total : int, optional
        Events expected per run.
    disable : bool
        No bar (counting still happens), e.g. when output is not a terminal.

    Examples
    --------
    >>> progress = LiveProgress(total=2, disable=True)
    >>> progress("start", {"uid": "a"})
    >>> progress("descriptor", {"uid": "d", "name": "frames"})
    >>> progress("event", {"descriptor": "d", "data": {"n_peaks": 3}})
    >>> progress.events, progress.peaks
    (1, 3)
    """

    def __init__(self, total: int | None = None, *, disable: bool = False, desc: str = "events") -> None:
        self.total = total
        self.disable = disable
        self.desc = desc
        self.events = 0
        self.peaks = 0
        self._frames_descriptors: set[str] = set()
        self._bar = None
        self._t0 = None

    def __call__(self, name: str, doc: Mapping) -> None:
        if name == "start":
            from tqdm.auto import tqdm

            self.events, self.peaks, self._t0 = 0, 0, time.perf_counter()
            self._bar = tqdm(total=self.total, desc=self.desc, unit="ev", disable=self.disable, leave=True)
        elif name == "descriptor" and doc.get("name") == "frames":
            self._frames_descriptors.add(doc["uid"])
        elif name == "event" and doc.get("descriptor") in self._frames_descriptors:
            self.events += 1
            self.peaks += int(doc["data"].get("n_peaks", 0))
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix(peaks=self.peaks, refresh=False)
        elif name == "stop" and self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        """Close the bar of a run that never stopped (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def events_per_second(self) -> float:
        """Events processed per second since the last start."""
        if not self._t0 or not self.events:
            return 0.0
        return self.events / (time.perf_counter() - self._t0)


class LiveMap:
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
        self.every = every
        self.intensity = intensity
        self.grid = None
        self.figure = None
        self._handle = None
        self._shape = self._snaking = None
        self._features: set[str] = set()
        self._frames: set[str] = set()
        self._frames_seen = 0

    def __call__(self, name: str, doc: Mapping) -> None:
        if name == "start":
            self._open(doc)
        elif name == "descriptor":
            {"features": self._features, "frames": self._frames}.get(doc.get("name"), set()).add(doc["uid"])
        elif name == "event" and self.grid is not None:
            if doc["descriptor"] in self._features:
                self._add(doc["data"]["frame"], float(doc["data"].get(self.intensity, 0.0)))
            elif doc["descriptor"] in self._frames:
                self._frames_seen += 1
                if self._frames_seen % self.every == 0:
                    self._draw()
        elif name == "stop" and self.grid is not None:
            self._draw()

    def _open(self, start: Mapping) -> None:
        import numpy as np

        from .maps import grid_of

        raw_grid = start.get("raw_grid") or {}
        if not raw_grid.get("shape"):
            self.grid = None  # a run without a grid: nothing to map
            return
        self._shape, self._snaking, extents, dims = grid_of(raw_grid)
        self.grid = np.zeros(self._shape)
        self._extents, self._dims = extents, dims
        self._frames_seen = 0
        self._features.clear(), self._frames.clear()
        self._handle = None
        self._draw()

    def _add(self, seq_num: int, value: float) -> None:
        from .maps import grid_index

        try:
            index = tuple(grid_index([seq_num], self._shape, self._snaking)[0])
        except ValueError:
            return  # beyond the grid (an aborted or longer run): the maps warn about it
        self.grid[index] += value

    def _draw(self) -> None:
        import xarray as xr

        from .maps import grid_coords
        from .plot import plot_real_aspect

        coords = grid_coords(self._shape, self._extents) if self._extents and len(self._shape) == 2 else None
        array = self.grid if coords is None else xr.DataArray(self.grid, dims=self._dims, coords=dict(zip(self._dims, coords)))
        if len(self._shape) != 2:
            return
        self.figure = plot_real_aspect(array)
        self.figure.axes[0].set_title(f"peak intensity, {self._frames_seen} frames")
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        if self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)
