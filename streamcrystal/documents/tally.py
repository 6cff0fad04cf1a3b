"""Read analysis runs as they go by: counts per stream and the one-line summary of each run.

:class:`Tally` is an event-model ``DocumentRouter`` over the documents a pipeline emits. It
follows any number of analysis runs at once (a server sees several), keeps a
:class:`RunTally` for each, and calls :meth:`Tally.counted` for each event and
:meth:`Tally.finished` at each stop: the progress bar, the live map and the server's status
line are subclasses that override these two hooks; the replay and the demo print
:meth:`RunTally.line`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import event_model

__all__ = ["RunTally", "Tally"]


@dataclass
class RunTally:
    """What an analysis run holds so far.

    Attributes
    ----------
    raw_uid, analysis_uid : str
        The raw run analysed and its analysis run.
    start : dict
        The analysis start document (its ``raw_grid``, ``pipeline``, ...).
    events, skipped : int
        Raw events processed (``frames`` events) and those skipped.
    peaks : int
        Located peaks (``features`` events).
    tracks, particles, grains : int
        Linked features (``tracks`` events), mapped particles (``maps`` events), grains
        (``grains`` events).
    exit_status, reason : str
        Of the analysis stop, once it came (``complete``).
    """

    raw_uid: str
    analysis_uid: str
    start: dict
    events: int = 0
    skipped: int = 0
    peaks: int = 0
    tracks: int = 0
    particles: int = 0
    grains: int = 0
    exit_status: str = ""
    reason: str = ""
    complete: bool = False

    def line(self) -> str:
        """The run in one line: events, skipped, peaks, particles, the analysis run, its status.

        Examples
        --------
        >>> RunTally("raw1", "ana1", {}, events=12, skipped=1, peaks=30, particles=4, grains=2, exit_status="success").line()
        'run raw1: 12 events (1 skipped), 30 peaks, 4 particles -> analysis ana1 [success], 2 grains'
        """
        status = self.exit_status or "in progress"
        reason = f" reason: {self.reason}" if self.reason and self.exit_status != "success" else ""
        return (f"run {self.raw_uid}: {self.events} events ({self.skipped} skipped), {self.peaks} peaks, "
                f"{self.particles} particles -> analysis {self.analysis_uid} [{status}], {self.grains} grains{reason}")


class Tally(event_model.DocumentRouter):
    """Count the streams of every analysis run that goes by; the runs by analysis uid in :attr:`runs`.

    Parameters
    ----------
    on_stop : callable, optional
        ``on_stop(run_tally)`` at each analysis stop.
    keep : int
        Finished runs kept in :attr:`runs` (the open ones are all kept).

    Examples
    --------
    >>> tally = Tally()
    >>> for name, doc in [("start", {"uid": "a1", "raw_uid": "r1"}),
    ...                   ("descriptor", {"uid": "d1", "run_start": "a1", "name": "frames"}),
    ...                   ("event", {"descriptor": "d1", "data": {"n_peaks": 3, "skipped": False}}),
    ...                   ("stop", {"run_start": "a1", "exit_status": "success"})]:
    ...     _ = tally(name, doc)
    >>> tally.latest.line()
    'run r1: 1 events (0 skipped), 0 peaks, 0 particles -> analysis a1 [success], 0 grains'
    """

    #: The record made for each run (a subclass may add fields).
    run_class = RunTally

    def __init__(self, on_stop: Callable[[RunTally], Any] | None = None, *, keep: int = 8) -> None:
        super().__init__()
        self.on_stop = on_stop
        self.keep = keep
        self.runs: dict[str, RunTally] = {}
        self.latest: RunTally | None = None
        self._streams: dict[str, tuple[str, str]] = {}  # descriptor uid -> (analysis uid, stream)

    # -- hooks for subclasses -----------------------------------------------------------------

    def opened(self, run: RunTally) -> None:
        """Called at each analysis start, once its :class:`RunTally` exists."""

    def counted(self, run: RunTally, stream: str, doc: Mapping) -> None:
        """Called after each event of an analysis run has been counted."""

    def finished(self, run: RunTally) -> None:
        """Called at each analysis stop, after ``on_stop``."""

    # -- the DocumentRouter's handlers ---------------------------------------------------------

    def start(self, doc):
        run = self.run_class(str(doc.get("raw_uid")), doc["uid"], dict(doc))
        self.runs[doc["uid"]] = self.latest = run
        self.opened(run)

    def _run_of(self, doc) -> str | None:
        """The analysis run a descriptor or stop belongs to (the newest, if the document does not say)."""
        return doc.get("run_start") or (self.latest.analysis_uid if self.latest else None)

    def descriptor(self, doc):
        self._streams[doc["uid"]] = (self._run_of(doc), doc.get("name"))

    def event_page(self, doc):
        for event in event_model.unpack_event_page(doc):
            self.event(event)

    def event(self, doc):
        run_uid, stream = self._streams.get(doc["descriptor"], (None, None))
        run = self.runs.get(run_uid)
        if run is None:
            return
        data = doc["data"]
        if stream == "frames" and not data.get("superseded"):  # (a superseded reading is marked again)
            run.events += 1
            run.skipped += bool(data.get("skipped"))
        elif stream == "features":
            run.peaks += 1
        elif stream == "tracks":
            run.tracks += 1
        elif stream == "maps":
            run.particles += 1
        elif stream == "grains":
            run.grains += 1
        self.counted(run, stream, doc)

    def stop(self, doc):
        run_uid = self._run_of(doc)
        run = self.runs.get(run_uid)
        self._streams = {uid: entry for uid, entry in self._streams.items() if entry[0] != run_uid}
        if run is None:
            return
        run.exit_status, run.reason, run.complete = doc.get("exit_status", ""), doc.get("reason", ""), True
        finished = [uid for uid, other in self.runs.items() if other.complete]
        for uid in finished[:max(0, len(finished) - self.keep)]:
            del self.runs[uid]
        if self.on_stop is not None:
            self.on_stop(run)
        self.finished(run)
