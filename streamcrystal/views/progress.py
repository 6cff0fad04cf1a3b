"""Live feedback: a progress bar over a pipeline's output documents (tqdm.auto)."""
from __future__ import annotations

import time
from collections.abc import Mapping

from ..documents.tally import RunTally, Tally

__all__ = ["LiveProgress"]


class LiveProgress(Tally):
    """Subscribe to a pipeline: a bar of events processed, with peaks found and events/s.

    ``tqdm.auto`` draws a widget in a notebook and a text bar in a terminal.

    Parameters
    ----------
    total : int, optional
        Events expected per run (else open-ended).
    disable : bool
        No bar (counting still happens), e.g. when output is not a terminal.
    desc : str
        The bar's label.

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

    def __init__(self, total: int | None = None, *, disable: bool = False, desc: str = "events") -> None:
        super().__init__()
        self.total = total
        self.disable = disable
        self.desc = desc
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
        from tqdm.auto import tqdm  # imported when a run starts: tqdm.auto looks for a notebook

        self.close()
        self._t0 = time.perf_counter()
        self._bar = tqdm(total=self.total, desc=self.desc, unit="ev", disable=self.disable, leave=True)

    def counted(self, run: RunTally, stream: str, doc: Mapping) -> None:
        if stream == "frames" and run is self.latest and self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(peaks=run.peaks, refresh=False)

    def finished(self, run: RunTally) -> None:
        if run is self.latest:
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
