"""What the nodes of a pipeline graph do: each a function of one record (or of a node's state).

The numerics live in :mod:`streamcrystal.science`; these functions apply them to the
records that travel along the graph, and :func:`frame_step` states the failure policy once:
a frame that fails is logged with its run uid and ``seq_num``, becomes a skipped frame, and
the run goes on (with ``STREAMCRYSTAL_DEBUG=1`` in the environment the error is raised
instead, to debug a step). Nothing here imports streamz, so the same functions run in a Dask
worker.

The per-frame channel carries, in order, a run's frame tasks and, after them, its problem
documents and its stop (:class:`~streamcrystal.records.Routed`): the frame steps pass
those on unchanged, so that on a Dask cluster, where frames finish in any order, a stop still
reaches ``collect`` after its run's last frame.
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from ..documents.hdf5 import read_reference
from ..records import FrameReference, FrameResult, FrameTask, Routed, RunAnalysis, RunFeatures, log_skipped, replace
from ..schema import FRAME_DTYPES, conform_features, empty_features, feature_columns
from ..science.frames import average_frames, processed_image
from ..science.grains import Grains, group_grains
from ..science.maps import crystal_maps
from ..science.peaks import locate, realign_per_axis_errors
from ..science.tracks import concat_features

__all__ = [
    "DEBUG_VARIABLE",
    "frame_step",
    "process_step",
    "locate_step",
    "skipped_result",
    "apply_background",
    "link_step",
    "map_step",
    "frames_table",
]

logger = logging.getLogger("streamcrystal")

#: Set it (to anything but ``0``) to let errors of the frame steps through, rather than skip the frame.
DEBUG_VARIABLE = "STREAMCRYSTAL_DEBUG"


def debugging() -> bool:
    """Whether ``$STREAMCRYSTAL_DEBUG`` asks errors to be raised rather than logged."""
    return os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0")


def frame_step(step: Callable) -> Callable:
    """The failure policy of a per-frame step, as a decorator.

    The step sees only frame tasks: a stop or a problem document in the channel passes
    unchanged. An exception in the step becomes the task's ``problem`` (``"<step> failed:
    <error>"``), logged with its run uid and ``seq_num``; later steps pass a failed task on and
    :func:`locate_step` makes it a skipped frame. With ``$STREAMCRYSTAL_DEBUG`` set, the
    exception is raised.

    Examples
    --------
    >>> @frame_step
    ... def scale(task):
    ...     return replace(task, image=task.image * (1 / (2 - task.seq_num)))
    >>> scale(FrameTask("r1", 1, "primary", image=np.ones(2))).image
    array([1., 1.])
    >>> scale(FrameTask("r1", 2, "primary", image=np.ones(2))).problem
    'scale failed: ZeroDivisionError: division by zero'
    >>> scale(Routed("stop", {}, "r1")).name
    'stop'
    """

    @functools.wraps(step)
    def guarded(item, *args, **kwargs):
        if not isinstance(item, FrameTask) or item.problem is not None:
            return item
        try:
            return step(item, *args, **kwargs)
        except Exception as err:
            if debugging():
                raise
            problem = f"{step.__name__} failed: {type(err).__name__}: {err}"
            log_skipped(item.run_uid, item.seq_num, problem)
            return replace(item, frames=None, image=None, background=None, problem=problem)

    return guarded


@frame_step
def process_step(task: FrameTask, *, mask=None) -> FrameTask:
    """Read (if the task holds a reference), average, subtract the background and clip (``process`` node).

    Integer frames take one fused pass (:func:`streamcrystal.science.frames.processed_image`).
    Masked pixels (NaN, or ``mask``: a boolean image or ``"saturated"``) are set to zero and
    counted; a frame with nothing usable (every pixel masked, or all zero) is refused with
    the reason.

    Examples
    --------
    >>> task = FrameTask("r1", 7, "primary", frames=np.zeros((2, 16, 16), np.uint16))
    >>> process_step(task).problem
    'process_step failed: ValueError: image is all zero'
    """
    frames = task.frames
    if isinstance(frames, FrameReference):
        try:
            frames = read_reference(frames)
        except Exception as err:  # a missing or unreadable file: the frame is skipped, with where it was
            if debugging():
                raise
            problem = f"cannot read {frames.data_key!r} from {frames.uri}: {type(err).__name__}: {err}"
            log_skipped(task.run_uid, task.seq_num, problem)
            return replace(task, frames=None, background=None, problem=problem)
    image, problem, masked = processed_image(frames, task.background, mask=mask)
    if problem is not None:
        raise ValueError(problem)
    return replace(task, frames=None, image=image, background=None, masked=masked)


def skipped_result(task: FrameTask, problem: str, columns=feature_columns()) -> FrameResult:
    """The result of a frame that was skipped: no features, the problem."""
    return FrameResult(task.run_uid, task.seq_num, empty_features(columns).assign(frame=np.int64(0))[:0],
                       problem=problem, time=task.time, readings=task.readings)


def locate_step(task: FrameTask | Routed, *, diameter, engine: str = "fast", columns=None, **locate_kwargs
                ) -> FrameResult | Routed:
    """Locate the peaks of a processed task (``locate`` node); the result keeps the features, not the image.

    The features are ``trackpy.locate``'s, as the pipeline's table: ``columns`` (default
    :func:`~streamcrystal.schema.feature_columns` of ``diameter``) in float64, plus
    ``frame``, the event's ``seq_num`` (with per-axis diameters, each feature keeps its own
    position errors: :func:`~streamcrystal.peaks.realign_per_axis_errors`).
    """
    if not isinstance(task, FrameTask):
        return task  # a stop or a problem document, in its place in the channel
    if columns is None:
        columns = feature_columns(diameter, characterize=locate_kwargs.get("characterize", True))
    if task.problem is not None:
        return skipped_result(task, task.problem, columns)
    # distributed deserialises an array sent between workers in place in its message buffer,
    # where a float64 may start at any byte: numpy sums such an image in another order (the
    # total intensity then differs in its last digit from the serial pipeline's). One copy
    # when it happens keeps the results identical wherever the task ran.
    image = np.require(task.image, requirements="CA")
    try:
        # trackpy's percentile threshold is undefined on an all-zero image (a frame equal to
        # its background): it has no peaks, which is an answer, not a failure.
        if np.any(image):
            with warnings.catch_warnings():  # a frame with no peak is normal here (see the frames stream)
                warnings.filterwarnings("ignore", message="No maxima survived", category=UserWarning)
                warnings.filterwarnings("ignore", message="All local maxima were in the margins", category=UserWarning)
                found = locate(image, diameter, engine=engine, **locate_kwargs)
        else:
            found = empty_features(columns)
        features = conform_features(realign_per_axis_errors(found), columns)
    except Exception as err:
        if debugging():
            raise
        problem = f"locate failed: {type(err).__name__}: {err}"
        log_skipped(task.run_uid, task.seq_num, problem)
        return skipped_result(task, problem, columns)
    features["frame"] = np.int64(task.seq_num)
    return FrameResult(task.run_uid, task.seq_num, features, total_intensity=float(image.sum()), time=task.time,
                       readings=task.readings, masked=task.masked, masked_fraction=task.masked / image.size)


def apply_background(
    state: dict, item: FrameTask | Routed, *, stream: str, dark_stream: str | None, subtrahend: np.ndarray | None
) -> tuple[dict, list[FrameTask]]:
    """Give each task of ``stream`` its background (the ``background`` node).

    The background is ``subtrahend`` if given, else the running mean of the run's
    ``dark_stream`` frames received so far, else none. Dark tasks are consumed here (dark
    frames given by reference are read here); a stop document clears its run's dark mean.
    The tasks between two dark frames share one background array, which a Dask pipeline
    sends to its workers once.
    """
    if isinstance(item, Routed):  # the stop of a run
        state.pop(item.run_uid, None)
        return state, []
    if item.stream == dark_stream and item.stream != stream:
        if item.problem is None and subtrahend is None:
            try:
                frames = read_reference(item.frames) if isinstance(item.frames, FrameReference) else item.frames
                dark = average_frames(frames)
            except Exception as err:
                logger.warning("run %s dark seq_num %s: unusable dark frame (%s); ignored", item.run_uid, item.seq_num, err)
                return state, []
            total, count, _ = state.get(item.run_uid, (0.0, 0, None))
            state[item.run_uid] = (total + dark, count + 1, (total + dark) / (count + 1))
        return state, []
    if item.stream != stream:
        return state, []
    if subtrahend is not None:
        background = subtrahend
    elif item.run_uid in state:
        background = state[item.run_uid][2]
    else:
        background = None
    return state, [replace(item, background=background)]


def frames_table(readings, dimensions=()) -> pd.DataFrame:
    """The ``frames`` table of some placed readings (:data:`~streamcrystal.schema.FRAME_DTYPES`):
    one row per reading, in reading order, with where the sample was (one column per dimension)."""
    readings = sorted(readings, key=lambda placed: placed.reading)
    superseded = {old.reading for placed in readings for old in placed.supersedes}
    columns = {
        "frame": [p.result.seq_num for p in readings],
        "reading": [p.reading for p in readings],
        "point": [p.point for p in readings],
        "n_peaks": [p.result.n_peaks for p in readings],
        "total_intensity": [p.result.total_intensity for p in readings],
        "masked_fraction": [p.result.masked_fraction for p in readings],
        "superseded": [p.reading in superseded for p in readings],
        "skipped": [p.result.problem is not None for p in readings],
        "skip_reason": [p.result.problem or "" for p in readings],
        "latency": [p.latency for p in readings],
    }
    table = pd.DataFrame({name: pd.Series(values, dtype=FRAME_DTYPES[name]) for name, values in columns.items()})
    for k, dim in enumerate(dimensions):
        table[dim] = pd.Series([p.position[k] if p.position else np.nan for p in readings], dtype=np.float64)
    return table


def placed_features(placed) -> list[pd.DataFrame]:
    """The feature tables of readings (:class:`~streamcrystal.records.Placed`), as one table
    with each reading's ``point`` and ``reading`` (int64 columns after the features'), in a
    list for :func:`~streamcrystal.science.tracks.concat_features`; empty if no reading has
    features.

    One ``concat`` and two ``np.repeat``: the same table as ``assign(point=..., reading=...)``
    per reading and a concat, without a pandas call per reading (ten thousand readings took
    seconds).
    """
    placed = [p for p in placed if len(p.result.features)]
    if not placed:
        return []
    counts = [len(p.result.features) for p in placed]
    features = pd.concat([p.result.features for p in placed], ignore_index=True)
    features["point"] = np.repeat(np.array([p.point for p in placed], dtype=np.int64), counts)
    features["reading"] = np.repeat(np.array([p.reading for p in placed], dtype=np.int64), counts)
    return [features]


def link_step(run: RunFeatures, *, stream: str = "primary", columns=feature_columns(), live: bool = False
              ) -> RunAnalysis:
    """The run's analysis at its stop (the ``link`` node): its features, frames, points and tracks.

    The features were linked as they came (``runs`` node); here the superseded readings are
    left out, the merged particles given the id they were merged into, and the problems
    gathered. A failure keeps the features and says why. ``stream`` is the processed stream
    (a run without events is named), ``columns`` the feature columns (of a run without features).
    ``live``: a run still going on (nothing logged).
    """
    problems = list(run.problems)
    problems += [f"event seq_num {r.seq_num}: {r.problem}" for r in run.results if r.problem]
    placed = sorted(run.readings, key=lambda p: p.reading)
    features = concat_features(placed_features(placed), columns)
    if not run.results and not live:
        logger.warning("run %s: no events in stream %r", run.run_uid, stream)
        problems.append(f"no events in stream {stream!r}")
    if run.stop.get("exit_status", "success") != "success":
        logger.warning("run %s stopped with exit_status %r: %s", run.run_uid, run.stop.get("exit_status"),
                       run.stop.get("reason", ""))
    dimensions = run.placement_info.get("dimensions", ())
    frames = frames_table((*run.readings, *run.superseded), dimensions)
    points = run.placement.points().rename(columns={"seq_num": "frame"}) if run.placement is not None else None
    grid = run.placement.grid() if run.placement is not None and run.placement.n_points else None
    if grid is not None:
        points = points.join(pd.DataFrame(grid.index, columns=[f"index_{d}" for d in dimensions]))
        where = {"shape": [len(axis) for axis in grid.coords], "dims": list(dimensions),
                 "coords": [axis for axis in grid.coords], "index": grid.index}
    else:
        n = 0 if points is None else len(points)
        where = {"shape": [n], "dims": ["point"], "coords": [np.arange(n)], "index": np.arange(n)[:, None]}
    failure = None
    if run.tracks is None:
        failure = run.failure or "linking failed: the features are kept, without tracks"
        tracks = features.iloc[:0].assign(particle=pd.Series(dtype=np.int64))
    else:
        tracks = run.tracks.sort_values("reading", kind="stable").reset_index(drop=True)
    return RunAnalysis(run.run_uid, run.start, run.stop, features, frames, tracks, particles=None, maps=None,
                       grid=where, problems=tuple(problems), failure=failure, points=points,
                       placement=run.placement_info)


def map_step(analysis: RunAnalysis, *, intensity: str = "mass", min_frames: int = 1,
             grain_options: Mapping | None = None) -> RunAnalysis:
    """One crystal map per particle seen on at least ``min_frames`` points, and the grains that
    group them (``map`` node; :func:`streamcrystal.science.grains.group_grains`)."""
    grid = analysis.grid
    try:
        particles, maps = crystal_maps(analysis.tracks, grid["shape"], intensity=intensity, min_frames=min_frames,
                                       index=grid["index"])
    except Exception as err:
        failure = f"crystal maps failed: {type(err).__name__}: {err}"
        logger.error("run %s: %s", analysis.run_uid, failure)
        particles, maps = crystal_maps(analysis.tracks.iloc[:0], grid["shape"], index=grid["index"])
        grains = grains_of(particles, maps, grid, analysis.points, grain_options)
        return replace(analysis, particles=particles.assign(grain=np.int64(0)), maps=maps, grains=grains,
                       failure=analysis.failure or failure)
    try:
        grains = grains_of(particles, maps, grid, analysis.points, grain_options)
        particles = particles.assign(grain=grains.labels)
    except Exception as err:  # the maps are kept; the run says why it has no grains
        failure = f"grain grouping failed: {type(err).__name__}: {err}"
        logger.error("run %s: %s", analysis.run_uid, failure)
        grains = grains_of(particles.iloc[:0], maps[:0], grid, analysis.points, grain_options)
        particles = particles.assign(grain=np.int64(0))
        return replace(analysis, particles=particles, maps=maps, grains=grains, failure=analysis.failure or failure)
    return replace(analysis, particles=particles, maps=maps, grains=grains)


def grains_of(particles: pd.DataFrame, maps: np.ndarray, grid: Mapping, points: pd.DataFrame | None,
              options: Mapping | None = None) -> Grains:
    """The grains of a run's mapped particles: on a grid, its grid; else the points' positions."""
    options = dict(options or {})
    positions = particles[["y", "x"]].to_numpy()
    flat = maps.reshape(len(maps), int(np.prod(maps.shape[1:])))  # (particles, points), also when empty
    if list(grid["dims"]) == ["point"]:
        columns = [] if points is None else [c for c in points.columns if c not in ("point", "frame")]
        coords = points[columns].to_numpy() if columns and len(points) == flat.shape[1] \
            else np.arange(flat.shape[1], dtype=np.float64)[:, None]  # no positions: the order of the points
        return group_grains(flat, positions, ids=particles["particle"].to_numpy(), coords=coords, **options)
    return group_grains(flat, positions, ids=particles["particle"].to_numpy(), grid_shape=maps.shape[1:], **options)
