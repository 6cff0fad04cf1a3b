"""The items that travel along the edges of a pipeline graph.

Plain frozen dataclasses: the graph's nodes take one and return another, so each node is a
function that can be tested (and shipped to a Dask worker) on its own.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Routed", "FrameReference", "FrameTask", "FrameResult", "Placed", "RunOpened", "RunFeatures", "RunAnalysis",
           "replace", "log_skipped"]

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

    ``frames`` holds the raw frames, or a :class:`FrameReference` to read them where the work
    runs; ``image`` the processed image. ``readings`` are the event's scalar readings (the
    motor positions among them: where the sample was), ``time`` the event's time. Once
    ``problem`` is set, later steps pass the task on untouched and it ends as a skipped frame.
    """

    run_uid: str
    seq_num: int
    stream: str
    frames: Any = None
    background: np.ndarray | None = None
    image: np.ndarray | None = None
    problem: str | None = None
    time: float = 0.0
    readings: Mapping[str, float] = field(default_factory=dict)
    masked: int = 0


@dataclass(frozen=True)
class FrameResult:
    """The outcome of one raw event: its features (``frame`` = the event's ``seq_num``).

    No image is kept: once the features are out, the frame's memory is released.
    ``masked`` counts the masked pixels (no signal) of the processed image, ``masked_fraction``
    is their share.
    """

    run_uid: str
    seq_num: int
    features: pd.DataFrame
    total_intensity: float = 0.0
    problem: str | None = None
    time: float = 0.0
    readings: Mapping[str, float] = field(default_factory=dict)
    masked: int = 0
    masked_fraction: float = 0.0

    @property
    def n_peaks(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class Placed:
    """A frame result placed on the sample, and linked as it came (the ``runs`` node's output).

    Attributes
    ----------
    result : FrameResult
    reading : int
        The reading's number in its run, 1-based (a re-taken point has its ``seq_num`` again,
        not its reading number).
    point : int
        The sample point (:class:`streamcrystal.science.placement.Placement`), -1 if unplaced.
    position : tuple of float
        Where the sample was, one value per scan dimension (empty if unplaced).
    supersedes : tuple of Placed
        The earlier readings this one replaces (the same point read again).
    particles : numpy.ndarray
        The live particle id of each feature.
    relabelled : dict
        Particle ids that this reading joined to others, ``{old: new}`` (a bridging point
        merges two particles) or split (a superseded reading was the only link).
    latency : float
        Seconds from the raw event's time to its features placed and linked (NaN if the
        event had no time).
    """

    result: FrameResult
    reading: int
    point: int
    position: tuple
    supersedes: tuple = ()
    particles: np.ndarray | None = None
    relabelled: Mapping[int, int] = field(default_factory=dict)
    latency: float = float("nan")

    @property
    def run_uid(self) -> str:
        return self.result.run_uid


@dataclass(frozen=True)
class RunOpened:
    """A raw run started: its start document, and how its readings are placed and linked."""

    run_uid: str
    start: dict
    placement: dict


@dataclass(frozen=True)
class RunFeatures:
    """A raw run at its stop: its current readings (superseded ones left out), the problems,
    the placement of its points, and its live linking."""

    run_uid: str
    start: dict
    stop: dict
    readings: tuple[Placed, ...]
    problems: tuple[str, ...] = ()
    placement: Any = None
    superseded: tuple[Placed, ...] = ()
    tracks: pd.DataFrame | None = None
    placement_info: Mapping = field(default_factory=dict)
    failure: str | None = None

    @property
    def results(self) -> tuple[FrameResult, ...]:
        """Every reading's frame result, superseded ones too, in reading order."""
        return tuple(p.result for p in sorted((*self.readings, *self.superseded), key=lambda p: p.reading))


@dataclass(frozen=True)
class RunAnalysis:
    """The end-of-run analysis of one raw run: features, linked tracks, crystal maps, grains.

    ``grid`` holds where the maps are drawn: ``shape`` and ``dims`` of the maps' grid (the
    dimension names; ``("point",)`` for a scan whose points are not a grid) and ``coords``
    (the coordinates of each dim); ``points`` the table of the run's sample points;
    ``particles``/``maps``/``grains`` are filled by the ``map`` node; ``failure`` says why
    linking or mapping failed (the features are kept all the same).
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
    points: pd.DataFrame | None = None
    grains: Any = None
    placement: Mapping = field(default_factory=dict)
