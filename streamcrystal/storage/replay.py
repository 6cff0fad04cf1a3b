"""Replay a stored run through a pipeline and store its analysis run (the seed's Filler loop).

The run's documents are read back from the catalog in order; frames of StreamResource /
Resource documents are read from their files by the pipeline itself (h5py, or
``event_model.Filler`` with the area-detector handlers), one event at a time.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..documents.tally import RunTally, Tally
from ..graph.results import RunResults
from .writeback import catalog_writer

__all__ = ["ReplayReport", "replay"]

logger = logging.getLogger("streamcrystal")

Callback = Callable[[str, dict], object]


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did: the raw run, its analysis run (None if not written), its tally and results."""

    raw_uid: str
    analysis_uid: str | None
    tally: RunTally
    results: RunResults

    def summary(self) -> str:
        """The analysis run in one line (:meth:`~streamcrystal.documents.tally.RunTally.line`) and where it went."""
        return f"{self.tally.line()}; {'stored' if self.analysis_uid else 'not stored'}"


def replay(db, uid: str | int, pipeline, *, write: bool = True, writer: Callback | None = None,
           callbacks: Iterable[Callback] = ()) -> ReplayReport:
    """Pipe the stored run ``uid`` of ``db`` through ``pipeline``; store the analysis run.

    Parameters
    ----------
    db : databroker.Broker
        From :func:`streamcrystal.catalog`.
    uid : str or int
        The raw run (a uid, a unique uid prefix, or a negative index such as ``-1``).
    pipeline : Pipeline
        E.g. ``load_pipeline("peak_tracking").make_pipeline(...)``.
    write : bool
        Store the analysis run in ``db`` (a new run every time: nothing is overwritten).
    writer : callable, optional
        Where the analysis documents go instead of ``db`` (default
        :func:`~streamcrystal.storage.writeback.catalog_writer`).
    callbacks : iterable of callables
        Also subscribed to the pipeline for this replay, e.g.
        ``streamcrystal.LiveProgress(total=...)`` for a progress bar.

    Raises
    ------
    ValueError
        If ``uid`` is an analysis run (replay its raw run).
    KeyError
        If ``db`` has no such run.
    """
    header = db[uid]
    raw_uid = header.start["uid"]
    if "analysis_stage" in header.start:
        raise ValueError(f"run {raw_uid} is an analysis run ({header.start['analysis_stage']}) of raw run "
                         f"{header.start.get('raw_uid')}: replay the raw run")
    tally = Tally()
    subscribers = [tally, *callbacks]
    if write:
        subscribers.append(writer or catalog_writer(db))
    tokens = [pipeline.subscribe(callback) for callback in subscribers]
    try:
        for name, doc in header.documents(fill=False):
            pipeline(name, dict(doc))
    finally:
        for callback in callbacks:
            getattr(callback, "close", lambda: None)()
        for token in tokens:
            pipeline.unsubscribe(token)
    run = next(run for run in tally.runs.values() if run.raw_uid == raw_uid)
    return ReplayReport(raw_uid, run.analysis_uid if write else None, run, pipeline.results(raw_uid))
