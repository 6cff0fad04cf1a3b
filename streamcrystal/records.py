"""The items that travel along the edges of a pipeline graph.

Plain frozen dataclasses: the graph's nodes take one and return another, so each node is a
function that can be tested (and shipped to a Dask worker) on its own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Routed", "FrameReference", "FrameTask", "FrameResult", "RunFeatures", "RunAnalysis", "replace",
           "log_skipped"]

logger = logging.getLogger("streamcrystal")


def log_skipped(run_uid: str | None, seq_num, problem: str, *, level: int = logging.WARNING) -> None:
    """Log a document or frame that is skipped: ``run <uid> seq_num <n>: <problem>; skipped``.

    The one phrase every skipped item is logged with (logger ``streamcrystal``), so that a
    beamline log says which scan and which point to look at.
    """
    where = f"run {run_uid or '<unknown>'}" + (f" seq_num {seq_num}" if seq_num is not None else "")
    logger.log(level, "%s: %s; skipped", where, problem)


@dataclass(frozen=True)
class Routed:
    """A raw document with the run and stream it belongs to.

    ``problem`` is set when the document cannot be attributed or used (an event before any
    start, an unknown descriptor, a second stop); such documents are logged and skipped.
    """

    name: str
    doc: dict
    run_uid: str | None = None
    stream: str | None = None
    problem: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FrameReference:
    """Where the frames of one event live in an HDF5 file, for the process that reads them.

    A task whose ``frames`` is a reference travels as a few hundred bytes: a Dask worker
    reads the frames itself (:func:`streamcrystal.documents.read_reference`), so no image
    crosses the network.

    ``index`` is the event's index in the StreamDatum's ``indices``: the dataset holds either
    one event per leading index (``(n, *event_shape)``) or the frames of each event back to
    back along its first axis.
    """

    data_key: str
    uri: str
    path: str
    dataset: str
    index: int
    event_shape: tuple[int, ...]


@dataclass(frozen=True)
class FrameTask:
    """The per-frame work of one raw event: frames in, processed image, then features out.

    ``frames`` holds the raw frames (or, for external data, ``None`` until filled, or a
    :class:`FrameReference` when the frames are read where the work runs); ``image``
    the processed image once averaged. Once ``problem`` is set, later steps pass the task on
    untouched and it ends as a skipped frame. ``clipped`` says the image is already
    background-subtracted and clipped (the average step did all three in one pass).
    """

    run_uid: str
    seq_num: int
    stream: str
    frames: Any = None
    background: np.ndarray | None = None
    image: np.ndarray | None = None
    problem: str | None = None
    time: float = 0.0
    clipped: bool = False


@dataclass(frozen=True)
class FrameResult:
    """The outcome of one raw event: its features (``frame`` = the event's ``seq_num``).

    No image is kept: once the features are out, the frame's memory is released.
    """

    run_uid: str
    seq_num: int
    features: pd.DataFrame
    total_intensity: float = 0.0
    problem: str | None = None

    @property
    def n_peaks(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class RunFeatures:
    """Every frame result of one raw run, gathered at its stop document."""

    run_uid: str
    start: dict
    stop: dict
    results: tuple[FrameResult, ...]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunAnalysis:
    """The end-of-run analysis of one raw run: features, linked tracks and crystal maps.

    ``grid`` holds the scan grid (``shape``, ``snaking``, ``extents``, ``dims``);
    ``particles``/``maps`` are filled by the ``map`` node; ``failure`` says why linking or
    mapping failed (the features are kept all the same).
    """

    run_uid: str
    start: dict
    stop: dict
    features: pd.DataFrame
    frames: pd.DataFrame
    tracks: pd.DataFrame
    particles: pd.DataFrame | None
    maps: np.ndarray | None
    grid: dict
    problems: tuple[str, ...] = ()
    failure: str | None = None
