"""Live feedback: a progress bar over a pipeline's output documents (tqdm.auto)."""
from __future__ import annotations

import time
from collections.abc import Mapping

from ..documents.tally import RunTally, Tally

__all__ = ["LiveProgress"]


class LiveProgress(Tally):
    """Subscribe to a pipeline: a bar of events processed, with events/s, peaks found, the lag
    and the grains found so far.

    ``tqdm.auto`` draws a widget in a notebook and a text bar in a terminal.

    Parameters
    ----------
    total : int, optional
        Events expected per run (else the start document's ``num_points``, else open-ended).
    disable : bool
        No bar (counting still happens), e.g. when output is not a terminal.
    desc : str
        The bar's label.
    pipeline : Pipeline, optional
        The pipeline subscribed to: its ``lag`` (raw events waiting, ``thread=True``) and,
        every ``every`` events, the number of grains in its results so far are shown.
    every : int
        Events between two counts of the grains (a look at the results costs a few ms).

    Examples
    --------
    >>> progress = LiveProgress(total=2, disable=True)
    >>> for name, doc in [("start", {"uid": "a", "raw_uid": "r"}),
    ...                   ("descriptor", {"uid": "f", "run_start": "a", "name": "features"}),
    ...                   ("descriptor", {"uid": "d", "run_start": "a", "name": "frames"}),
    ...                   ("event", {"descriptor": "f", "data": {"mass": 5.0}}),
    ...                   ("event", {"descriptor": "d", "data": {"n_peaks": 1}})]:
    ...     _ = progress(name, doc)
    >>> progress.events, progress.peaks
    (1, 1)
    """

    def __init__(self, total: int | None = None, *, disable: bool = False, desc: str = "events", pipeline=None,
                 every: int = 20) -> None:
        super().__init__()
        self.total = total
        self.disable = disable
        self.desc = desc
        self.pipeline = pipeline
        self.every = every
        self.grains = 0
        self._bar = None
        self._t0: float | None = None

    @property
    def events(self) -> int:
        """Raw events processed in the newest run."""
        return self.latest.events if self.latest else 0

    @property
    def peaks(self) -> int:
        """Peaks located in the newest run."""
        return self.latest.peaks if self.latest else 0

    def opened(self, run: RunTally) -> None:
        from tqdm.auto import (
            tqdm,  # imported when a run starts: tqdm.auto looks for a notebook
        )

        self.close()
        self._t0 = time.perf_counter()
        self.grains = 0
        total = self.total or (run.start.get("raw_grid") or {}).get("num_points")
        self._bar = tqdm(total=total, desc=self.desc, unit="ev", disable=self.disable, leave=True)

    def counted(self, run: RunTally, stream: str, doc: Mapping) -> None:
        if stream == "frames" and run is self.latest and self._bar is not None and not doc["data"].get("superseded"):
            if self.pipeline is not None and run.events % self.every == 0:
                self.grains = self._grains(run)
            self._bar.update(1)
            self._bar.set_postfix(self._figures(run), refresh=False)
        elif stream == "grains":
            self.grains = run.grains

    def _grains(self, run: RunTally) -> int:
        try:
            return len(self.pipeline.results(run.raw_uid).grain_table)
        except Exception:  # a look at the results must not disturb the bar
            return self.grains

    def _figures(self, run: RunTally) -> dict:
        figures = {"peaks": run.peaks}
        if self.pipeline is not None:
            figures.update(lag=self.pipeline.lag, grains=self.grains)
        return figures

    def finished(self, run: RunTally) -> None:
        if run is self.latest:
            if self._bar is not None:
                self._bar.set_postfix(self._figures(run) | {"grains": run.grains}, refresh=True)
            self.close()

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
