"""Replay a stored run through a pipeline and store its analysis run (the seed's Filler loop).

The run's documents are read back from the catalog in order; frames of StreamResource /
Resource documents are read from their files by the pipeline itself (h5py, or
``event_model.Filler`` with the area-detector handlers), one event at a time.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .results import RunResults

__all__ = ["ReplayReport", "replay"]

logger = logging.getLogger("streamcrystal")


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did: the raw run, its new analysis run (None if not written) and results."""

    raw_uid: str
    analysis_uid: str | None
    results: RunResults

    def summary(self) -> str:
        r = self.results
        n_particles = int(r.tracks["particle"].nunique()) if len(r.tracks) else 0
        skipped = int(r.frames["skipped"].sum()) if len(r.frames) else 0
        status = "success" if r.failure is None else f"failed: {r.failure}"
        return (f"raw run {self.raw_uid}: {len(r.frames)} events ({skipped} skipped), {len(r.features)} peaks, "
                f"{n_particles} particles, {r.maps.sizes['particle']} mapped; {status}\n"
                f"analysis run {self.analysis_uid or '(not stored)'}")


def replay(db, uid: str, pipeline, *, write: bool = True, progress: bool = False,
           writer: Callable[[str, dict], None] | None = None) -> ReplayReport:
    """Pipe the stored run ``uid`` of ``db`` through ``pipeline``; store the analysis run.

    Parameters
    ----------
    db : databroker.Broker
        From :func:`streamcrystal.catalog`.
    uid : str
        The raw run (a uid, a unique uid prefix, or a negative index such as ``-1``).
    pipeline : Pipeline
        E.g. ``load_pipeline("peak_tracking").make_pipeline(...)``.
    write : bool
        Store the analysis run in ``db`` (a new run every time: nothing is overwritten).
    progress : bool
        A progress bar of events processed, peaks found and events/s.
    writer : callable, optional
        Where the analysis documents go instead of ``db`` (default
        :func:`~streamcrystal.writeback.catalog_writer`).
    """
    from .progress import LiveProgress
    from .writeback import catalog_writer

    header = db[uid]
    raw_uid = header.start["uid"]
    if "analysis_stage" in header.start:
        raise ValueError(f"run {raw_uid} is an analysis run ({header.start['analysis_stage']}) of raw run "
                         f"{header.start.get('raw_uid')}: replay the raw run")
    analysis_uid: list[str] = []
    tokens = []
    if write:
        tokens.append(pipeline.subscribe(writer or catalog_writer(db)))
    tokens.append(pipeline.subscribe(lambda name, doc: analysis_uid.append(doc["uid"]) if name == "start" else None))
    stop = header.stop or {}
    total = (stop.get("num_events") or {}).get(pipeline.parameters.get("stream_name", "primary"))
    live = LiveProgress(total=total, disable=not progress, desc=f"replay {raw_uid[:8]}")
    tokens.append(pipeline.subscribe(live))
    try:
        for name, doc in header.documents(fill=False):
            pipeline(name, dict(doc))
    finally:
        live.close()
        for token in tokens:
            pipeline.unsubscribe(token)
    return ReplayReport(raw_uid, analysis_uid[0] if (write and analysis_uid) else None, pipeline.results(raw_uid))
