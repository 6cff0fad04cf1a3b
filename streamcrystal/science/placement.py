"""Where each reading was on the sample: points, grids and neighbours from motor positions.

A scan visits positions on the sample; :class:`Placement` turns each reading's position
(one float per scan dimension, read from the event) into a *point*: a small integer given
first-come, never changed, shared by every reading of the same position. Pure Python/numpy.

Rules
-----
**Grouping (tolerance).** Positions are grouped per axis: a value joins the nearest existing
value group of its axis within ``tolerance``, else it starts a new group whose coordinate is
that first value, for good (coordinates never drift as readings arrive). A point is a tuple of
groups, one per axis; its coordinates are the position of its first reading. The tolerance of
an axis is, first found: the ``tolerance`` given; a quarter of the axis *resolution* (the
smallest spacing the plan makes: the step of a uniform grid, the smallest gap of a list, see
:func:`plan_steps`); one unit of the last digit the motor shows (the descriptor's
``precision``: ``10**-precision``); else ``DEFAULT_TOLERANCE``. Steps learned from the
readings (below) raise it to a quarter of the axis's step (or, while the axis has none yet, of
the smallest step known), so that readback jitter never starts a column.

**Grid detection.** The points form a grid when they fill at least ``min_fill`` (default half)
of the cells of the product of the per-axis groups, whatever order they came in: a full grid in
any order (C, snaking, descending lists, ``spiral_square``) fills all of it, an aborted
row-by-row scan at least half (``k`` full rows and part of the next). Spirals and arbitrary
2-D lists have nearly one group per point on each axis and fill ``~1/n``: points only.

**Neighbours.** Points ``a`` and ``b`` are neighbours on the sample when on every axis
``|coord_a - coord_b| <= step + tolerance`` (a box: 8-connectivity on a uniform 2-D grid). The
relation is pairwise and does not depend on the order in which points were visited, so a
linker joining each reading with its visited neighbours as it arrives gets exactly the
components a batch linker gets. Steps come, first found, from the user (``steps``, or one
``neighbour_distance`` for all axes), from the start document (:func:`plan_steps`: uniform
grids ``extent / (n - 1)``; lists the *largest* gap of each sorted list, so that every pair of
adjacent values is bridged (an arbitrary path: the longest edge of its minimum spanning tree); spirals the ring and angular spacing from ``dr``), else they are
learned in scan order: an axis's step is its first change between two consecutive readings that
exceeds its tolerance and a quarter of the smallest step known (of the largest change of that
reading, while no step is known), fixed from then on. Before it is learned every point shares
the axis's one value, so every pair judged then is judged the same way afterwards. Learning
assumes the axes share units (a sample stage) and steps within a factor four of each other:
else pass ``steps``, ``precision`` or ``tolerance``.

Examples
--------
>>> placement = Placement(["sample_y", "sample_x"], steps=[0.5, 0.5])
>>> [placement.add(s, p).point for s, p in enumerate([(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 0.0001)], 1)]
[0, 1, 2, 3]
>>> placement.add(5, (0.5, 0.0)).supersedes   # the same point again: seq_num 4 is superseded
(Reading(point=3, seq_num=4),)
>>> placement.grid().index.tolist(), placement.neighbours(0).tolist()
([[0, 0], [0, 1], [1, 1], [1, 0]], [1, 2, 3])
"""
from __future__ import annotations

import bisect
import itertools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_TOLERANCE", "Grid", "Placed", "Placement", "PlanSteps", "Reading", "plan_steps",
           "scan_dimensions", "scan_order_memory"]

logger = logging.getLogger("streamcrystal")

#: Tolerance (motor units) when nothing else tells the scale: only float noise is absorbed.
DEFAULT_TOLERANCE = 1e-6
#: Phyllotaxis (Fermat spiral) points are ~sqrt(pi) * dr / factor apart; 2.5 * dr / factor
#: reaches the six nearest of each.
FERMAT_REACH = 2.5


class Reading(NamedTuple):
    """A reading of a point: the event's ``seq_num``."""
    point: int
    seq_num: int


class Placed(NamedTuple):
    """What :meth:`Placement.add` returns: the point, and the earlier readings it supersedes."""
    point: int
    supersedes: tuple[Reading, ...]


class Grid(NamedTuple):
    """Visited points on a grid: ``coords`` per axis (ascending, float64) and ``index``
    ``(n_points, ndim)`` int64, the grid index of each point (row ``k`` is point ``k``)."""
    coords: tuple[np.ndarray, ...]
    index: np.ndarray


class PlanSteps(NamedTuple):
    """Per-axis neighbour ``steps`` and ``resolution`` (smallest spacing) from a start document;
    ``None`` for an axis the document does not tell."""
    steps: tuple[float | None, ...]
    resolution: tuple[float | None, ...]
    source: str


def scan_dimensions(start: Mapping) -> list[str] | None:
    """The position fields of a run, one per scan dimension, from its start document.

    The first field of each entry of ``hints["dimensions"]`` (``[[fields...], stream]``),
    skipping the ``time`` pseudo-dimension; every field of an entry moved together by several
    motors (``scan`` or ``list_scan`` of two motors: ``[["y", "x"], "primary"]``), since they
    move the sample along different directions. Else the ``motors``. None when there are none.

    Examples
    --------
    >>> scan_dimensions({"hints": {"dimensions": [[["sample_y"], "primary"], [["sample_x"], "primary"]]}})
    ['sample_y', 'sample_x']
    >>> scan_dimensions({"hints": {"dimensions": [[["time"], "primary"]]}}) is None
    True
    >>> scan_dimensions({"motors": ["m1"]})
    ['m1']
    """
    fields: list[str] = []
    for entry in (start.get("hints") or {}).get("dimensions") or ():
        names = list(entry[0]) if entry and entry[0] else []
        for name in names if len(names) > 1 else names[:1]:
            if name != "time" and name not in fields:
                fields.append(str(name))
    if not fields:
        fields = [str(m) for m in start.get("motors") or ()]
    return fields or None


def _motor_name(text) -> str | None:
    match = re.search(r"name='([^']+)'", str(text))
    return match.group(1) if match else None


def _by_field(dims: Sequence[str], motors: Sequence, values: Sequence) -> list | None:
    """Values given per motor (reprs) in plan order, put in ``dims`` order (by name, else order)."""
    names = [_motor_name(m) for m in motors]
    out = []
    for k, dim in enumerate(dims):
        hits = [i for i, n in enumerate(names) if n and (dim == n or dim.startswith(n + "_"))]
        if hits:
            out.append(values[hits[0]])
        elif len(values) == len(dims):
            out.append(values[k])
        else:
            return None
    return out


def _gaps(values) -> tuple[float | None, float | None]:
    gaps = np.diff(np.unique(np.asarray(values, dtype=float)))
    gaps = gaps[gaps > 0]
    return (float(gaps.max()), float(gaps.min())) if gaps.size else (None, None)


def _path_reach(points: np.ndarray) -> tuple[float | None, float | None]:
    """For points visited together on several axes: the longest edge of their minimum spanning
    tree (the smallest box half-width that connects them all) and the least distance between
    two of them, both in the max-norm (per axis). Falls back to per-axis gaps above 3000 points."""
    from scipy.sparse.csgraph import minimum_spanning_tree

    points = np.unique(points, axis=0)
    if len(points) < 2:
        return None, None
    if len(points) > 3000:
        gaps = [_gaps(column) for column in points.T]
        return max(g[0] or 0 for g in gaps) or None, min(g[1] or np.inf for g in gaps)
    distance = np.abs(points[:, None, :] - points[None, :, :]).max(axis=2)
    reach = float(minimum_spanning_tree(distance).max())
    np.fill_diagonal(distance, np.inf)
    return reach, float(distance.min())


def plan_steps(start: Mapping, dimensions: Sequence[str] | None = None) -> PlanSteps | None:
    """Neighbour steps and resolution per dimension, from a bluesky plan's start document.

    ``list_grid_scan`` (``plan_pattern_args`` lists): step = the largest gap of each sorted
    list, resolution = the smallest. ``list_scan`` of several motors (an arbitrary path): on
    every axis the longest edge of the points' minimum spanning tree in the max-norm (so that
    they are all connected; for one motor it is the largest gap), resolution the least
    distance between two points. ``scan``/``rel_scan``: ``|stop - start| /
    (num - 1)``. ``spiral``: step ``max(s, hypot(dr, s / 2))`` with ``s = 2 pi dr / nth`` the
    spacing along a ring, resolution ``min(dr, 2 dr sin(pi / nth))``. ``spiral_fermat``: step
    ``FERMAT_REACH * dr / factor``, resolution ``dr / factor`` (``dr_y`` scales the y axis).
    Else ``shape`` and ``extents`` (``grid_scan``, ``rel_grid_scan``, ``spiral_square``):
    ``|stop - start| / (n - 1)``. None when none of these applies.

    Examples
    --------
    >>> start = {"hints": {"dimensions": [[["y"], "primary"], [["x"], "primary"]]}, "shape": [3, 5],
    ...          "extents": [[0, 1], [2, 0]]}
    >>> plan_steps(start)
    PlanSteps(steps=(0.5, 0.5), resolution=(0.5, 0.5), source='shape and extents')
    """
    dims = list(dimensions or scan_dimensions(start) or ())
    if not dims:
        return None
    pattern, args = start.get("plan_pattern"), start.get("plan_pattern_args") or {}
    result = None
    if pattern == "inner_list_product" and args.get("args") and len(args["args"]) > 2:
        path = _by_field(dims, args["args"][0::2], list(args["args"][1::2]))
        if path:
            step, res = _path_reach(np.array(path, dtype=float).T)
            result = [step] * len(dims), [res] * len(dims)
    elif pattern in ("outer_list_product", "inner_list_product") and args.get("args"):
        lists = _by_field(dims, args["args"][0::2], [_gaps(v) for v in args["args"][1::2]])
        if lists:
            result = [g[0] for g in lists], [g[1] for g in lists]
    elif pattern == "inner_product" and args.get("args") and int(args.get("num") or 0) > 1:
        spans = [abs(float(b) - float(a)) / (int(args["num"]) - 1) or None
                 for a, b in zip(args["args"][1::3], args["args"][2::3])]
        spans = _by_field(dims, args["args"][0::3], spans)
        if spans:
            result = spans, spans
    elif pattern in ("spiral", "spiral_fermat") and args.get("dr"):
        dr = float(args["dr"])
        aspect = float(args["dr_y"]) / dr if args.get("dr_y") else 1.0
        if pattern == "spiral":
            ring = 2 * math.pi * dr / float(args["nth"])
            step, res = max(ring, math.hypot(dr, ring / 2)), min(dr, 2 * dr * math.sin(math.pi / float(args["nth"])))
        else:
            step, res = FERMAT_REACH * dr / float(args["factor"]), dr / float(args["factor"])
        scaled = _by_field(dims, [args.get("x_motor"), args.get("y_motor")], [(step, res), (step * aspect, res * aspect)])
        if scaled:
            result = [s[0] for s in scaled], [s[1] for s in scaled]
    if result is None and start.get("shape") and start.get("extents"):
        shape, extents = list(start["shape"]), list(start["extents"])
        if len(shape) == len(extents) == len(dims):
            spans = [abs(float(b) - float(a)) / (int(n) - 1) if int(n) > 1 and a != b else None
                     for (a, b), n in zip(extents, shape)]
            return PlanSteps(tuple(spans), tuple(spans), "shape and extents")
    if result is None:
        return None
    return PlanSteps(tuple(result[0]), tuple(result[1]), f"plan_pattern {pattern}")


def _per_axis(value, ndim: int, name: str) -> list:
    if value is None or np.isscalar(value):
        return [value] * ndim
    value = list(value)
    if len(value) != ndim:
        raise ValueError(f"{name} has {len(value)} entries for {ndim} scan dimensions; give one per dimension "
                         f"(None for 'not known') or a single number")
    return value


class Placement:
    """Points, grid and neighbours of the readings of one run, built as readings arrive.

    Parameters
    ----------
    dimensions : sequence of str
        The position fields (see :func:`scan_dimensions`), one per axis.
    steps : float or sequence of (float or None), optional
        Neighbour steps per axis (motor units), or one ``neighbour_distance`` for all axes;
        None entries are learned in scan order (module docstring).
    resolution : float or sequence, optional
        Smallest spacing per axis; the tolerance defaults to a quarter of it. Default: ``steps``.
    tolerance : float or sequence, optional
        Grouping tolerance per axis (motor units); overrides the rules of the module docstring.
    precision : int, sequence or mapping of field to int, optional
        Digits the motors show (the descriptor's ``data_keys[field]["precision"]``).
    min_fill : float
        Least fraction of grid cells the points must fill to be a grid.

    Raises
    ------
    ValueError
        No dimension, a per-axis option of the wrong length, a negative step or tolerance.
    """

    def __init__(self, dimensions: Sequence[str], *, steps=None, resolution=None, tolerance=None,
                 precision=None, min_fill: float = 0.5) -> None:
        self.dimensions = tuple(str(d) for d in dimensions)
        ndim = len(self.dimensions)
        if not ndim:
            raise ValueError("a Placement needs at least one position field; without any, place by seq_num")
        self._steps = [None if s is None else float(s) for s in _per_axis(steps, ndim, "steps")]
        resolution = _per_axis(resolution, ndim, "resolution") if resolution is not None else self._steps
        if isinstance(precision, Mapping):
            precision = [precision.get(d) for d in self.dimensions]
        precision = _per_axis(precision, ndim, "precision")
        tolerance = _per_axis(tolerance, ndim, "tolerance")
        self._explicit_tolerance = [t is not None for t in tolerance]
        self._base_tolerance = [10.0 ** -int(p) if p is not None else DEFAULT_TOLERANCE for p in precision]
        self.tolerance = [
            float(t) if t is not None else r / 4 if r else 10.0 ** -int(p) if p is not None else DEFAULT_TOLERANCE
            for t, r, p in zip(tolerance, resolution, precision)]
        if any(t < 0 for t in self.tolerance) or any(s is not None and s < 0 for s in self._steps):
            raise ValueError(f"steps {self._steps} and tolerance {self.tolerance} must not be negative")
        self.min_fill = float(min_fill)
        self._groups = [[] for _ in range(ndim)]    # per axis: group coordinates, by group id
        self._sorted = [[] for _ in range(ndim)]    # per axis: (coordinate, group id), sorted
        self._point_of: dict[tuple[int, ...], int] = {}
        self._keys: list[tuple[int, ...]] = []      # per point: its group on each axis
        self._coords: list[tuple[float, ...]] = []  # per point: the position of its first reading
        self._current: list[int | None] = []        # per point: seq_num of its current reading
        self._reading_at: dict[int, int] = {}       # seq_num -> point of its current reading
        self._previous: tuple[float, ...] | None = None
        self._buckets: dict[tuple[int, ...], list[int]] = {}

    @classmethod
    def from_start(cls, start: Mapping, *, steps=None, neighbour_distance: float | None = None, **options
                   ) -> Placement | None:
        """A Placement for a run, its steps from the user else from the start document
        (:func:`plan_steps`); None when the run has no position fields (place by seq_num).

        Examples
        --------
        >>> start = {"hints": {"dimensions": [[["y"], "primary"]]}, "shape": [5], "extents": [[0, 2]]}
        >>> placement = Placement.from_start(start)
        >>> placement.dimensions, placement.steps, placement.tolerance
        (('y',), (0.5,), [0.125])
        """
        dims = scan_dimensions(start)
        if dims is None:
            return None
        if steps is None and neighbour_distance is not None:
            steps = float(neighbour_distance)
        if steps is None:
            found = plan_steps(start, dims)
            if found is not None:
                steps = found.steps
                options.setdefault("resolution", found.resolution)
        return cls(dims, steps=steps, **options)

    @property
    def steps(self) -> tuple[float | None, ...]:
        """Neighbour step per axis, None while not yet learned."""
        return tuple(self._steps)

    @property
    def n_points(self) -> int:
        return len(self._coords)

    def _group(self, axis: int, value: float) -> int:
        ordered, tol = self._sorted[axis], self.tolerance[axis]
        k = bisect.bisect_left(ordered, (value, -1))
        near = [ordered[i] for i in (k - 1, k) if 0 <= i < len(ordered)]
        if near:
            coord, group = min(near, key=lambda cg: abs(cg[0] - value))
            if abs(coord - value) <= tol:
                return group
        group = len(self._groups[axis])
        self._groups[axis].append(value)
        bisect.insort(ordered, (value, group))
        return group

    def _bucket(self, coords: Sequence[float]) -> tuple[int, ...]:
        return tuple(0 if s is None else math.floor(c / (s + t))
                     for c, s, t in zip(coords, self._steps, self.tolerance))

    def _learn(self, position: tuple[float, ...]) -> None:
        previous, self._previous = self._previous, position
        if previous is None or all(s is not None for s in self._steps):
            return
        changes = [abs(a - b) for a, b in zip(position, previous)]
        known = [s for s in self._steps if s]
        least = min(known) / 4 if known else max(changes) / 4
        learned = [a for a, (s, d, t) in enumerate(zip(self._steps, changes, self.tolerance))
                   if s is None and d > t and d >= least]
        for axis in learned:
            self._steps[axis] = changes[axis]
            if not self._explicit_tolerance[axis]:
                self.tolerance[axis] = max(self._base_tolerance[axis], changes[axis] / 4)
            logger.info("placement: step of %s learned from the scan: %g", self.dimensions[axis], changes[axis])
        if learned:
            least = min(s for s in self._steps if s) / 4
            for axis, s in enumerate(self._steps):
                if s is None and not self._explicit_tolerance[axis]:
                    self.tolerance[axis] = max(self.tolerance[axis], least)
            self._buckets = {}
            for point, xy in enumerate(self._coords):
                self._buckets.setdefault(self._bucket(xy), []).append(point)

    def add(self, seq_num: int, position: Sequence[float]) -> Placed:
        """Place one reading: its point, and the earlier readings it supersedes.

        A reading supersedes the earlier reading of its point (a point visited again: a
        re-taken point after a pause, another pass) and an earlier reading with the same
        ``seq_num`` at another point; their features are to be dropped.

        Raises
        ------
        ValueError
            ``position`` has not one finite number per dimension.
        """
        position = tuple(float(v) for v in np.ravel(position))
        if len(position) != len(self.dimensions) or not all(map(math.isfinite, position)):
            raise ValueError(f"seq_num {seq_num}: position {position} must have one finite number per dimension "
                             f"{list(self.dimensions)}; take them from the event's data")
        self._learn(position)
        key = tuple(self._group(a, v) for a, v in enumerate(position))
        supersedes = []
        point = self._point_of.get(key)
        if point is None:
            point = self._point_of[key] = len(self._coords)
            self._coords.append(position)
            self._keys.append(key)
            self._current.append(None)
            self._buckets.setdefault(self._bucket(position), []).append(point)
        elif self._current[point] is not None:
            supersedes.append(Reading(point, self._current[point]))
            del self._reading_at[self._current[point]]
        other = self._reading_at.get(int(seq_num))
        if other is not None:
            supersedes.append(Reading(other, int(seq_num)))
            self._current[other] = None
        self._current[point] = int(seq_num)
        self._reading_at[int(seq_num)] = point
        return Placed(point, tuple(supersedes))

    def coordinates(self) -> np.ndarray:
        """``(n_points, ndim)`` float64: the position of each point's first reading (row ``k``:
        point ``k``); on a grid the column's coordinate is in :meth:`grid`."""
        return np.array(self._coords, dtype=np.float64).reshape(-1, len(self.dimensions))

    def position(self, point: int) -> tuple[float, ...]:
        """The position of ``point``'s first reading: row ``point`` of :meth:`coordinates`,
        without building the array (a live run asks it once per event)."""
        return tuple(float(c) for c in self._coords[point])

    def points(self) -> pd.DataFrame:
        """One row per point: ``point``, its coordinates (one column per dimension) and
        ``seq_num`` of its current reading (-1 if superseded by a reading elsewhere)."""
        table = pd.DataFrame(self.coordinates(), columns=list(self.dimensions))
        table.insert(0, "point", np.arange(self.n_points, dtype=np.int64))
        table["seq_num"] = np.array([-1 if s is None else s for s in self._current], dtype=np.int64)
        return table

    def is_grid(self) -> bool:
        """Whether the points fill at least ``min_fill`` of the cells of their per-axis groups."""
        cells = math.prod(len(g) for g in self._groups)
        return self.n_points > 0 and self.n_points >= self.min_fill * cells

    def grid(self) -> Grid | None:
        """Per-axis coordinates and each point's grid index, or None when not a grid. A grid
        index may change when a later reading brings a new value between two columns."""
        if not self.is_grid():
            return None
        axes = tuple(np.array(sorted(g), dtype=np.float64) for g in self._groups)
        ranks = [np.argsort(np.argsort(g, kind="stable"), kind="stable") for g in self._groups]
        index = np.array([[ranks[a][g] for a, g in enumerate(key)] for key in self._keys], dtype=np.int64)
        return Grid(axes, index.reshape(-1, len(self.dimensions)))

    def neighbours(self, point: int) -> np.ndarray:
        """The points (sorted ids, itself excluded) within ``step + tolerance`` on every axis."""
        coords = self._coords[point]
        reach = [(s or 0.0) + t for s, t in zip(self._steps, self.tolerance)]
        found = []
        for offset in itertools.product((-1, 0, 1), repeat=len(coords)):
            bucket = tuple(b + o for b, o in zip(self._bucket(coords), offset))
            for other in self._buckets.get(bucket, ()):
                if other != point and all(abs(a - b) <= r for a, b, r in zip(self._coords[other], coords, reach)):
                    found.append(other)
        return np.array(sorted(set(found)), dtype=np.int64)

    def seq_nums(self) -> np.ndarray:
        """``(n_points,)`` int64: the ``seq_num`` of each point's current reading, -1 if none."""
        return self.points()["seq_num"].to_numpy()


def scan_order_memory(placement: Placement) -> int:
    """``trackpy.link``'s ``memory`` that bridges every gap between neighbours in scan order.

    The longest absence, in ``seq_num``, between the current readings of two neighbouring
    points: on a grid, points next to each other along one axis (what
    :func:`streamcrystal.science.maps.scan_memory` counts: ``n_cols - 1``, ``2 n_cols - 2`` snaking);
    otherwise the neighbours of :meth:`Placement.neighbours`. A grain seen on a connected set
    of points is then one particle, since every gap between its scan-order sightings is at
    most the largest gap across one of its neighbour pairs.

    Examples
    --------
    >>> placement = Placement(["y", "x"])
    >>> for seq, pos in enumerate([(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)], 1):
    ...     _ = placement.add(seq, pos)
    >>> scan_order_memory(placement)
    4
    """
    seq = placement.seq_nums()
    grid = placement.grid()
    best = 0
    if grid is not None:
        dense = np.full(tuple(len(c) for c in grid.coords), -1, dtype=np.int64)
        dense[tuple(grid.index.T)] = seq
        for axis in range(dense.ndim):
            a, b = np.moveaxis(dense, axis, 0)[:-1], np.moveaxis(dense, axis, 0)[1:]
            both = (a >= 0) & (b >= 0)
            if both.any():
                best = max(best, int(np.abs(a - b)[both].max()) - 1)
        return max(best, 0)
    for point in range(placement.n_points):
        others = placement.neighbours(point)
        others = others[(others > point) & (seq[others] >= 0)] if seq[point] >= 0 else others[:0]
        if others.size:
            best = max(best, int(np.abs(seq[others] - seq[point]).max()) - 1)
    return max(best, 0)
