"""Each run as its readings arrive: where each reading was on the sample, and its linking, live.

The ``runs`` node of the graph keeps a :class:`RunState` per raw run. At the run's start it
decides how readings are placed (:func:`placement_plan`): by the motor positions each event
records (the fields of the start document's ``hints["dimensions"]``, else its ``motors``), or,
only when a run records none, by ``seq_num`` over its ``shape`` (bluesky's ``grid_scan``
conventions), which the log and the analysis start say. Each frame result is then placed on a
sample point (:class:`~streamcrystal.science.placement.Placement`; a point read again
supersedes its earlier reading) and its features are linked at once:

- ``linking="sample"``: features seen at neighbouring points whose detector positions are
  within ``search_range`` are one particle (:class:`~streamcrystal.science.linking.SampleLinker`);
  a bridging reading merges two particles, and says so;
- ``linking="trackpy"``: the seed's scan-order ``trackpy.link``, fed one frame at a time to
  trackpy's own ``Linker``, level by level as ``trackpy.link`` would (every ``seq_num``
  between the first and the last, empty frames included), with ``memory="grid"`` the longest
  scan-order gap between neighbours on the planned scan.

Particle ids given live never change; the results report the id a particle was merged into.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
from trackpy.linking.linking import Linker

from ..records import FrameResult, Placed, RunFeatures, RunOpened
from ..schema import feature_columns
from ..science.linking import SampleLinker
from ..science.maps import grid_coords, grid_index, grid_of, scan_memory
from ..science.placement import Placement, plan_steps, scan_dimensions
from .results import ResultStore, RunResults
from .steps import link_step, map_step, placed_features

__all__ = ["LINKINGS", "RunState", "TrackpyLinker", "placement_plan", "planned_memory"]

logger = logging.getLogger("streamcrystal")

#: The ways of linking a run's features into particles.
LINKINGS = ("sample", "trackpy")


def _snaking(start: Mapping, ndim: int) -> tuple[bool, ...]:
    """The snaking axes of a grid plan: ``snaking`` (``grid_scan``), or ``snake_axes``
    (``list_grid_scan`` writes ``repr(snake_axes)``: True snakes every axis but the first)."""
    if start.get("snaking"):
        return tuple(bool(s) for s in start["snaking"])
    snake = str(start.get("snake_axes", "False"))
    if snake == "True":
        return (False,) + (True,) * (ndim - 1)
    motors = list(start.get("motors") or ())
    return tuple(any(f"'{m}'" in snake for m in motors[k:k + 1]) for k in range(ndim)) if motors else (False,) * ndim


def planned_memory(start: Mapping) -> int | None:
    """``trackpy.link``'s ``memory`` for scan-order linking, from the plan in the start document.

    The longest scan-order gap between two neighbouring points of the planned grid
    (:func:`~streamcrystal.science.maps.scan_memory`: ``n_cols - 1``, ``2 n_cols - 2`` when the
    fast axis snakes); for a scan without ``shape``, None.

    Examples
    --------
    >>> planned_memory({"shape": [16, 12], "snaking": [False, True]})
    22
    >>> planned_memory({"shape": [4, 5], "snake_axes": "True"})
    8
    """
    shape = start.get("shape")
    if not shape:
        return None
    return scan_memory(tuple(int(n) for n in shape), _snaking(start, len(shape)))


def placement_plan(start: Mapping, *, linking: str, memory=None, steps=None, neighbour_distance=None,
                   recorded=None) -> dict:
    """How a run's readings will be placed and linked: what the analysis start records.

    ``recorded`` are the data keys the processed stream's events record (its descriptor's):
    when they hold none of the position fields, readings are placed by ``seq_num``.

    Examples
    --------
    >>> start = {"hints": {"dimensions": [[["sy"], "primary"], [["sx"], "primary"]]}, "shape": [3, 4],
    ...          "extents": [[0, 1], [0, 1.5]], "motors": ["sy", "sx"]}
    >>> plan = placement_plan(start, linking="sample", recorded=["sy", "sx", "det_image"])
    >>> plan["method"], plan["dimensions"], plan["steps"], plan["steps_from"]
    ('positions', ['sy', 'sx'], [0.5, 0.5], 'shape and extents')
    >>> placement_plan(start, linking="trackpy", memory="grid", recorded=["det_image"])["method"]
    'seq_num'
    """
    dims = scan_dimensions(start)
    plan: dict = {"linking": linking}
    if dims is not None and recorded is not None and not set(dims) <= set(recorded):
        reason = f"the events record none of the position fields {dims}" if not set(dims) & set(recorded) else (
            f"the events record only {sorted(set(dims) & set(recorded))} of the position fields {dims}")
        dims = None
    else:
        reason = "the run names no position fields (no hints['dimensions'], no motors)"
    if dims is None:
        shape, snaking, extents, names = grid_of(start)
        plan.update(method="seq_num", dimensions=list(names), snaking=list(snaking), reason=reason)
    else:
        plan.update(method="positions", dimensions=list(dims))
        if steps is None and neighbour_distance is not None:
            steps = [float(neighbour_distance)] * len(dims)
        if steps is not None:
            plan.update(steps=[None if s is None else float(s) for s in np.broadcast_to(steps, len(dims))],
                        steps_from="given")
        else:
            found = plan_steps(start, dims)
            plan.update(steps=list(found.steps) if found else [None] * len(dims),
                        resolution=list(found.resolution) if found else [None] * len(dims),
                        steps_from=found.source if found else "learned from the first readings")
    if linking == "trackpy":
        if memory == "grid":
            planned = planned_memory(start)
            memory = planned if planned is not None else max(int(start.get("num_points") or 1) - 1, 0)
        plan["memory"] = int(memory or 0)
    return plan


class TrackpyLinker:
    """``trackpy.link``, one frame at a time: the same levels, so the same links at the end.

    trackpy's ``Linker`` is given every integer frame from the first frame with features on,
    an empty one where an event had no features or no event came, as ``trackpy.link`` does
    with a table of features. Ids are this object's own (trackpy numbers its tracks with a
    counter that every new ``Linker`` resets), given to trackpy's track objects as they appear.

    Examples
    --------
    >>> linker = TrackpyLinker(5, memory=1)
    >>> [linker.add(t, yx).tolist() for t, yx in [(1, [[10, 10]]), (2, []), (3, [[11, 10], [50, 50]])]]
    [[0], [], [0, 1]]
    """

    def __init__(self, search_range: float, **link_kwargs) -> None:
        self._linker = Linker(search_range, **link_kwargs)
        self._last: int | None = None
        self._next_id = 0

    def add(self, frame: int, features_yx) -> np.ndarray:
        """Link the features ``(n, 2)`` (y, x) of ``frame``; returns their particle ids."""
        yx = np.asarray(features_yx, dtype=np.float64).reshape(-1, 2)
        if self._last is None:
            if not len(yx):
                return np.empty(0, np.int64)
            self._linker.init_level(yx, frame)
        else:
            for empty in range(self._last + 1, frame):  # frames without features are levels too
                self._linker.next_level(np.empty((0, 2)), empty)
            self._linker.next_level(yx, frame)
        self._last = max(frame, self._last if self._last is not None else frame)
        ids = []
        for point in self._linker.hash.points:
            track = point.track
            if not hasattr(track, "streamcrystal_id"):
                track.streamcrystal_id = self._next_id
                self._next_id += 1
            ids.append(track.streamcrystal_id)
        return np.array(ids, dtype=np.int64)


class RunState:
    """A raw run while it goes on: its placement, its live linking, its readings so far.

    Parameters
    ----------
    start : dict
        The raw start document.
    plan : dict
        From :func:`placement_plan`.
    search_range : float
        Detector distance (pixels) within which features link.
    link_kwargs : dict
        More keywords of ``trackpy.link`` (``linking="trackpy"``).
    tolerance, precision
        For :class:`~streamcrystal.science.placement.Placement` (``precision``: the digits each
        motor shows, from the descriptor's data keys).
    """

    def __init__(self, start: Mapping, plan: Mapping, *, search_range: float, link_kwargs: Mapping | None = None,
                 tolerance=None, precision: Mapping | None = None, map_options: Mapping | None = None) -> None:
        self.start = dict(start)
        self.map_options = dict(map_options or {})
        self._lock = threading.Lock()  # results() may look while the graph's thread adds
        self.plan = dict(plan)
        self.run_uid = start["uid"]
        resolution = plan.get("resolution") if plan["method"] == "positions" else None
        self.placement = Placement(plan["dimensions"], steps=self._steps(), tolerance=tolerance, precision=precision,
                                   resolution=resolution if resolution and any(r is not None for r in resolution) else None)
        if plan["linking"] == "sample":
            self.linker = SampleLinker(self.placement.neighbours, search_range)
        else:
            options = {k: v for k, v in (link_kwargs or {}).items() if k != "memory"}
            self.linker = TrackpyLinker(search_range, memory=plan.get("memory", 0), **options)
        self.readings: list[Placed] = []
        self.current: dict[int, Placed] = {}   # point -> its current reading
        self.superseded: list[Placed] = []
        self.problems: list[str] = []
        self.failure: str | None = None
        self._masked_logged = False
        self._unplaced_logged = False
        if plan["method"] == "seq_num":
            logger.warning("run %s: %s; readings placed by seq_num over the start document's shape", self.run_uid,
                           plan["reason"])
            self._fallback = grid_of(self.start)

    def _steps(self):
        if self.plan["method"] == "positions":
            return self.plan.get("steps")
        shape, _, extents, _ = grid_of(self.start)
        if not extents:
            return [1.0] * len(shape)
        return [abs(b - a) / (n - 1) if n > 1 and a != b else 1.0 for (a, b), n in zip(extents, shape)]

    def position(self, result: FrameResult) -> tuple[float, ...] | None:
        """Where the sample was for ``result``: its readings of the dimensions, or its place by seq_num."""
        if self.plan["method"] == "seq_num":
            shape, snaking, extents, _ = self._fallback
            if not self.start.get("shape"):
                return (float(result.seq_num),)
            try:
                index = grid_index([result.seq_num], shape, snaking)[0]
            except ValueError:
                return None  # beyond the grid of an aborted or longer run
            if extents is None:
                return tuple(float(i) for i in index)
            return tuple(float(axis[i]) for axis, i in zip(grid_coords(shape, extents), index))
        missing = [d for d in self.plan["dimensions"] if d not in result.readings]
        if missing:
            if not self._unplaced_logged:
                logger.warning("run %s seq_num %s: the event records no %s; its features are kept but not placed, "
                               "linked or mapped", self.run_uid, result.seq_num, missing)
                self._unplaced_logged = True
            self.problems.append(f"event seq_num {result.seq_num}: no position (key {missing[0]!r})")
            return None
        return tuple(float(result.readings[d]) for d in self.plan["dimensions"])

    def add(self, result: FrameResult) -> Placed:
        """Place and link one frame result; returns what the ``runs`` node emits for it."""
        with self._lock:
            return self._add(result)

    def _add(self, result: FrameResult) -> Placed:
        if result.masked and not self._masked_logged:
            logger.info("run %s seq_num %s: %d masked pixels (%.2f %%) count as no signal", self.run_uid,
                        result.seq_num, result.masked, 100 * result.masked_fraction)
            self._masked_logged = True
        reading = len(self.readings) + 1
        position = self.position(result)
        if position is None:
            placed = Placed(result, reading, -1, (), particles=np.full(result.n_peaks, -1, np.int64))
            self.readings.append(placed)
            return placed
        point, supersedes = self.placement.add(result.seq_num, position)
        old = tuple(self._supersede(earlier) for earlier in supersedes)
        # column by column: a DataFrame's [["y", "x"]] costs ~0.7 ms, most of an event's linking
        features = result.features
        yx = np.column_stack((features["y"].to_numpy(), features["x"].to_numpy())) if result.n_peaks \
            else np.empty((0, 2))
        merged: dict[int, int] = {}
        try:
            if isinstance(self.linker, SampleLinker):
                for earlier in old:
                    if earlier.point != point:
                        self._relabels(self.linker.discard(earlier.point), merged)
                update = self.linker.add(point, yx)
                particles = update.particles
                self._relabels(update, merged)
            else:
                particles = self.linker.add(result.seq_num, yx)
        except Exception as err:  # the run's features are kept; it ends without tracks
            self.failure = self.failure or f"linking failed: {type(err).__name__}: {err}"
            logger.error("run %s seq_num %s: %s", self.run_uid, result.seq_num, self.failure)
            particles = np.full(len(yx), -1, np.int64)
        coords = self.placement.position(point)
        latency = time.time() - result.time if result.time else float("nan")
        placed = Placed(result, reading, point, coords, old, particles, merged, latency)
        self.readings.append(placed)
        self.current[point] = placed
        if old:
            logger.info("run %s seq_num %s: point %d read again; reading %d replaces reading %s", self.run_uid,
                        result.seq_num, point, reading, [p.reading for p in old])
        return placed

    def _supersede(self, earlier) -> Placed:
        placed = self.current.pop(earlier.point)
        self.superseded.append(placed)
        return placed

    @staticmethod
    def _relabels(update, merged: dict[int, int]) -> None:
        merged.update(update.merged)
        for old, parts in update.split.items():
            merged.update({new: old for new in parts if new != old})

    def tracks(self) -> pd.DataFrame:
        """The features of the current readings with their ``point``, ``reading`` and final ``particle``."""
        current = sorted(self.current.values(), key=lambda p: p.reading)
        tables = placed_features(p for p in current if p.result.n_peaks)
        if not tables:
            return pd.DataFrame({"frame": pd.Series(dtype=np.int64), "point": pd.Series(dtype=np.int64),
                                 "reading": pd.Series(dtype=np.int64), "particle": pd.Series(dtype=np.int64)})
        [features] = tables
        if isinstance(self.linker, SampleLinker):
            labels = self.linker.labels().set_index(["point", "feature"])["particle"]
            index = pd.MultiIndex.from_arrays([features["point"], features.groupby("reading").cumcount()])
            particle = labels.reindex(index).to_numpy()
        else:
            particle = np.concatenate([p.particles for p in current if p.result.n_peaks])
        return features.assign(particle=np.asarray(particle, dtype=np.int64))

    def finish(self, stop: Mapping, problems=()) -> RunFeatures:
        """The run at its stop: its current readings, the superseded ones, its tracks."""
        with self._lock:
            return self._features(stop, problems, log=True)

    def snapshot(self) -> RunResults:
        """The run's results so far (``complete`` False): what :meth:`finish` and the ``link``
        and ``map`` steps would give if it stopped now."""
        with self._lock:
            features = self._features({}, (), log=False)
        analysis = link_step(features, live=True, columns=self.map_options.get("columns", feature_columns()))
        options = {k: v for k, v in self.map_options.items() if k != "columns"}
        return RunResults.from_analysis(map_step(analysis, **options), complete=False)

    def _features(self, stop: Mapping, problems, *, log: bool) -> RunFeatures:
        superseded = tuple(sorted(self.superseded, key=lambda p: p.reading))
        if superseded and log:
            logger.warning("run %s: %d reading(s) superseded by a later reading of the same point (a pause, a "
                           "suspender, another pass): %s", self.run_uid, len(superseded),
                           [(p.result.seq_num, p.reading) for p in superseded])
        current = tuple(sorted(self.current.values(), key=lambda p: p.reading))
        unplaced = tuple(p for p in self.readings if p.point < 0)
        return RunFeatures(self.run_uid, self.start, dict(stop), current + unplaced, (*problems, *self.problems),
                           self.placement, superseded, None if self.failure else self.tracks(),
                           {**self.plan, "steps": list(self.placement.steps)}, self.failure)


def run_step(state: dict, item, *, processed_stream: str, plan_options: Mapping, search_range: float,
             link_kwargs: Mapping, tolerance=None, map_options: Mapping | None = None,
             store: ResultStore | None = None) -> tuple[dict, list]:
    """The ``runs`` node: per raw run, placed and linked readings as they come.

    A start is kept until the descriptor of ``processed_stream`` tells which fields its events
    record; then the run opens (a :class:`RunState`, given to ``store`` so that its results
    can be looked at while it goes on; emits :class:`RunOpened`). A frame result is placed and
    linked (emits :class:`Placed`), a problem is noted, the stop closes the run (emits
    :class:`RunFeatures`).
    """
    opening = {"plan_options": plan_options, "search_range": search_range, "link_kwargs": link_kwargs,
               "tolerance": tolerance, "map_options": map_options, "store": store}
    if isinstance(item, FrameResult):
        run = state.get(item.run_uid)
        if run is None:
            return state, []
        opened = _open(run, None, **opening)
        return state, [*opened, run["state"].add(item)]
    if item.name == "start":
        state[item.run_uid] = {"start": item.doc, "state": None, "problems": []}
        return state, []
    run = state.get(item.run_uid)
    if run is None:
        return state, []
    if item.name == "descriptor":
        recorded = item.doc.get("data_keys", {}) if item.stream == processed_stream else None
        return state, _open(run, recorded, **opening) if recorded else []
    if item.problem is not None:
        seq = f"seq_num {item.doc['seq_num']}: " if "seq_num" in item.doc else ""
        run["problems"].append(f"{item.name} {seq}{item.problem}")
        return state, []
    del state[item.run_uid]  # the stop
    opened = _open(run, None, **opening)
    return state, [*opened, run["state"].finish(item.doc, run["problems"])]


def _open(run: dict, recorded, *, plan_options, search_range, link_kwargs, tolerance, map_options,
          store) -> list[RunOpened]:
    """Open a run's state once: [RunOpened] the first time, [] after."""
    if run["state"] is not None:
        return []
    start = run["start"]
    plan = placement_plan(start, recorded=recorded, **plan_options)
    precision = {field: spec.get("precision") for field, spec in (recorded or {}).items()
                 if field in plan["dimensions"] and spec.get("precision") is not None}
    run["state"] = RunState(start, plan, search_range=search_range, link_kwargs=link_kwargs, tolerance=tolerance,
                            precision=precision or None, map_options=map_options)
    if store is not None:
        store.open(run["state"])
    return [RunOpened(start["uid"], start, plan)]
