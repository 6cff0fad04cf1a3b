"""The grains of a run, drawn while it goes on: which grain is where, and each grain's map."""
from __future__ import annotations

from collections.abc import Mapping

from ..documents.tally import RunTally, Tally
from .plot import plot_grains, show_in_place

__all__ = ["LiveGrains"]


class LiveGrains(Tally):
    """A live view of the grains: the grain-label map and the per-grain maps, redrawn in place.

    Subscribe it to a pipeline, giving it the pipeline (``pipe.subscribe(LiveGrains(pipe))``):
    every ``every`` processed events, and at the stop, it asks the pipeline for the run's
    results so far (``pipe.results(raw_uid)``: the maps and grains of the tracks so far) and
    draws them with :func:`~streamcrystal.views.plot.plot_grains`, on the motors' coordinates
    with the real aspect ratio. In a notebook the figure is updated in place (IPython
    display); elsewhere :attr:`figure` can be saved.

    Parameters
    ----------
    pipeline : Pipeline
        The pipeline subscribed to (anything with ``results(raw_uid)``).
    every : int
        Events between two drawings (each computes the maps and grains so far: a few ms on a
        demo's scan, more on a large one).

    Attributes
    ----------
    figure : matplotlib.figure.Figure or None
        The last drawing.
    results : RunResults or None
        The results it was drawn from.
    """

    def __init__(self, pipeline, *, every: int = 10) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.every = every
        self.figure = None
        self.results = None
        self._handle = None

    def opened(self, run: RunTally) -> None:
        self._handle = None

    def counted(self, run: RunTally, stream: str, doc: Mapping) -> None:
        if stream == "frames" and run is self.latest and run.events % self.every == 0 and not doc["data"].get(
                "superseded"):
            self._draw(run)

    def finished(self, run: RunTally) -> None:
        if run is self.latest:
            self._draw(run)

    def _draw(self, run: RunTally) -> None:
        try:
            self.results = self.pipeline.results(run.raw_uid)
        except KeyError:
            return
        if self.results.grain_maps is None:
            return
        state = "complete" if self.results.complete else "so far"
        self.figure = plot_grains(self.results.grain_labels, self.results.grain_maps,
                                  title=f"{run.events} events {state}")
        self._handle = show_in_place(self.figure, self._handle)
