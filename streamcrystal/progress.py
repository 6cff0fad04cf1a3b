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
