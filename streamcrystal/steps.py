"""What the nodes of a pipeline graph do: each a function of one record (or of a node's state).

The numerics live in ``frames``, ``peaks``, ``tracks`` and ``maps``; these functions apply
them to the records that travel along the graph and state the failure policy: a frame that
fails is logged with its run uid and ``seq_num``, becomes a skipped frame, and the run goes
on. Nothing here imports streamz, so the same functions run in a Dask worker.
"""
from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from .documents import read_reference
from .frames import average_frames, clip_negative, image_problem, subtract_background
from .maps import crystal_maps, grid_of, scan_memory
from .peaks import locate, realign_per_axis_errors
from .records import FrameReference, FrameResult, FrameTask, Routed, RunAnalysis, RunFeatures, replace
from .schema import conform_features, empty_features, feature_columns
from .tracks import concat_features, link_features

__all__ = [
    "read_step",
    "frame_step",
    "skipped_result",
    "average_step",
    "subtract_step",
    "clip_step",
    "locate_step",
    "apply_background",
    "collect_run",
    "link_step",
    "map_step",
    "frames_table",
]

logger = logging.getLogger("streamcrystal")


def _guarded(step: Callable[..., FrameTask]) -> Callable[..., FrameTask]:
    """Pass failed tasks through untouched; turn an exception into a skipped frame."""

    @functools.wraps(step)
    def guarded(task: FrameTask, *args, **kwargs) -> FrameTask:
        if task.problem is not None:
            return task
        try:
            return step(task, *args, **kwargs)
        except Exception as err:  # analysis must go on with the next frame
            problem = f"{step.__name__} failed: {type(err).__name__}: {err}"
            logger.warning("run %s seq_num %s: %s; skipped", task.run_uid, task.seq_num, problem)
            return replace(task, frames=None, image=None, background=None, problem=problem)

    return guarded


def read_step(task: FrameTask) -> FrameTask:
    """Read the frames of a task that holds a :class:`~streamcrystal.records.FrameReference`.

    Other tasks pass unchanged. A file that cannot be read makes a skipped frame, with the
    message of the serial pipeline (which reads StreamDatum frames as they arrive).
    """
    ref = task.frames
    if task.problem is not None or not isinstance(ref, FrameReference):
        return task
    try:
        return replace(task, frames=read_reference(ref))
    except Exception as err:
        problem = f"cannot read {ref.data_key!r} from {ref.uri}: {type(err).__name__}: {err}"
        logger.warning("run %s seq_num %s: %s; skipped", task.run_uid, task.seq_num, problem)
        return replace(task, frames=None, problem=problem)


@_guarded
def average_step(task: FrameTask) -> FrameTask:
    """Average the frames of the event into one float64 image; reject NaN or all-zero data.

    Integer frames with a float64 background of their shape (or none), the detector's
    case, are averaged, background-subtracted and clipped in one pass
    (:func:`streamcrystal.fastlocate.frames.average_subtract_clip`, bit for bit what the
    three steps give); the subtract and clip steps then pass the task on.
    """
    from .fastlocate.frames import average_subtract_clip, supports_frames

    if supports_frames(task.frames, task.background):
        image, nonzero = average_subtract_clip(task.frames, task.background)
        if not nonzero:  # integer frames have no NaN: image_problem's only other verdict
            raise ValueError("image is all zero")
        return replace(task, frames=None, image=image, background=None, clipped=True)
    image = average_frames(task.frames)
    problem = image_problem(image)
    if problem is not None:
        raise ValueError(problem)
    return replace(task, frames=None, image=image)


@_guarded
def subtract_step(task: FrameTask) -> FrameTask:
    """Subtract the task's background (if any) from its image."""
    if task.clipped:
        return task
    return replace(task, image=subtract_background(task.image, task.background), background=None)


@_guarded
def clip_step(task: FrameTask) -> FrameTask:
    """Set the negative pixels of the image to zero."""
    if task.clipped:
        return task
    return replace(task, image=clip_negative(task.image), clipped=True)


def skipped_result(task: FrameTask, problem: str, columns=feature_columns()) -> FrameResult:
    """The result of a frame that was skipped: no features, the problem."""
    return FrameResult(task.run_uid, task.seq_num, empty_features(columns).assign(frame=np.int64(0))[:0], problem=problem)


def locate_step(task: FrameTask, *, diameter, engine: str = "fast", columns=None, **locate_kwargs) -> FrameResult:
    """Locate the peaks of a processed task; the result keeps the features, not the image.

    The features are ``trackpy.locate``'s, as the pipeline's table: ``columns`` (default
    :func:`~streamcrystal.schema.feature_columns` of ``diameter``) in float64, plus
    ``frame``, the event's ``seq_num`` (with per-axis diameters, each feature keeps its own
    position errors: :func:`~streamcrystal.peaks.realign_per_axis_errors`).
    """
    if columns is None:
        columns = feature_columns(diameter, characterize=locate_kwargs.get("characterize", True))
    if task.problem is not None:
        return skipped_result(task, task.problem, columns)
    image = task.image
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
        problem = f"locate failed: {type(err).__name__}: {err}"
        logger.warning("run %s seq_num %s: %s; skipped", task.run_uid, task.seq_num, problem)
        return skipped_result(task, problem, columns)
    features["frame"] = np.int64(task.seq_num)
    return FrameResult(task.run_uid, task.seq_num, features, total_intensity=float(image.sum()))


def frame_step(task: FrameTask, *, diameter: int, engine: str = "fast", **locate_kwargs) -> FrameResult:
    """All the per-frame work of one task in one call: read, average, subtract, clip, locate.

    The same steps as the serial graph's nodes, so the features are the same. It never
    raises: whatever fails becomes a skipped frame, logged with the run uid and ``seq_num``
    (where it runs, a Dask worker must return a result for every frame it is given).

    Examples
    --------
    >>> task = FrameTask("r1", 7, "primary", frames=np.zeros((2, 16, 16)))
    >>> frame_step(task, diameter=5).problem
    'average_step failed: ValueError: image is all zero'
    """
    try:
        processed = clip_step(subtract_step(average_step(read_step(task))))
        return locate_step(processed, diameter=diameter, engine=engine, **locate_kwargs)
    except Exception as err:  # a bug, not bad data: the run goes on all the same
        problem = f"frame work failed: {type(err).__name__}: {err}"
        logger.error("run %s seq_num %s: %s; skipped", task.run_uid, task.seq_num, problem)
        return skipped_result(task, problem)


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


def collect_run(state: dict, item) -> tuple[dict, list[RunFeatures]]:
    """Gather a run's frame results and problems; emit them all at its stop (``collect`` node)."""
    if isinstance(item, FrameResult):
        if item.run_uid in state:
            state[item.run_uid]["results"].append(item)
        return state, []
    if item.name == "start":
        state[item.run_uid] = {"start": item.doc, "results": [], "problems": []}
        return state, []
    if item.problem is not None:
        if item.run_uid in state:
            seq = f"seq_num {item.doc['seq_num']}: " if "seq_num" in item.doc else ""
            state[item.run_uid]["problems"].append(f"{item.name} {seq}{item.problem}")
        return state, []
    run = state.pop(item.run_uid, None)  # the stop
    if run is None:
        return state, []
    results = tuple(sorted(run["results"], key=lambda r: r.seq_num))
    return state, [RunFeatures(item.run_uid, run["start"], item.doc, results, tuple(run["problems"]))]


def frames_table(results) -> pd.DataFrame:
    """One row per processed raw event: frame, n_peaks, total_intensity, skipped, skip_reason."""
    return pd.DataFrame(
        {
            "frame": pd.Series([r.seq_num for r in results], dtype=np.int64),
            "n_peaks": pd.Series([r.n_peaks for r in results], dtype=np.int64),
            "total_intensity": pd.Series([r.total_intensity for r in results], dtype=np.float64),
            "skipped": pd.Series([r.problem is not None for r in results], dtype=bool),
            "skip_reason": pd.Series([r.problem or "" for r in results], dtype=object),
        }
    )


def link_step(run: RunFeatures, *, search_range: float, stream: str = "primary", columns=feature_columns(),
              **link_kwargs) -> RunAnalysis:
    """Link the run's features (the ``link`` node). A failure keeps the features and says why.

    ``stream`` is the processed stream, whose event count sizes a run without a grid;
    ``columns`` the feature columns (of a run without features).
    ``memory="grid"`` is :func:`~streamcrystal.maps.scan_memory` of the run's own grid.
    """
    problems = list(run.problems)
    problems += [f"event seq_num {r.seq_num}: {r.problem}" for r in run.results if r.problem]
    features = concat_features((r.features for r in run.results), columns)
    if not run.results:
        logger.warning("run %s: no events in stream %r", run.run_uid, stream)
        problems.append(f"no events in stream {stream!r}")
    if run.stop.get("exit_status", "success") != "success":
        logger.warning("run %s stopped with exit_status %r: %s", run.run_uid, run.stop.get("exit_status"), run.stop.get("reason", ""))
    failure = None
    num_events = max((r.seq_num for r in run.results), default=0)
    num_events = run.stop.get("num_events", {}).get(stream, num_events)
    shape, snaking, extents, dims = grid_of(run.start, num_events)
    grid = {"shape": list(shape), "snaking": list(snaking), "extents": extents, "dims": list(dims)}
    if link_kwargs.get("memory") == "grid":
        link_kwargs = {**link_kwargs, "memory": scan_memory(shape, snaking)}
    try:
        tracks = link_features(features, search_range, **link_kwargs)
    except Exception as err:
        failure = f"linking failed: {type(err).__name__}: {err}"
        logger.error("run %s: %s", run.run_uid, failure)
        tracks = features.iloc[:0].assign(particle=pd.Series(dtype=np.int64))
    return RunAnalysis(
        run.run_uid, run.start, run.stop, features, frames_table(run.results), tracks,
        particles=None, maps=None, grid=grid, problems=tuple(problems), failure=failure,
    )


def map_step(analysis: RunAnalysis, *, intensity: str = "mass", min_frames: int = 1) -> RunAnalysis:
    """Make one crystal map per particle seen on at least ``min_frames`` frames (``map`` node)."""
    shape, snaking = tuple(analysis.grid["shape"]), tuple(analysis.grid["snaking"])
    try:
        particles, maps = crystal_maps(analysis.tracks, shape, snaking, intensity=intensity, min_frames=min_frames)
    except Exception as err:
        failure = f"crystal maps failed: {type(err).__name__}: {err}"
        logger.error("run %s: %s", analysis.run_uid, failure)
        particles, maps = crystal_maps(analysis.tracks.iloc[:0], shape, snaking, intensity="mass")
        return replace(analysis, particles=particles, maps=maps, failure=analysis.failure or failure)
    return replace(analysis, particles=particles, maps=maps)
