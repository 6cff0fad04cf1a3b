"""Link Bragg peaks in sample space: one particle per peak seen on a connected patch of the sample.

Two features are linked when they were seen at *neighbouring* points of the sample (see
:class:`streamcrystal.science.placement.Placement`) and their detector positions ``(y, x)``
are within ``search_range`` pixels; a particle is a connected component of these links. The
links are pairwise and symmetric, so the components do not depend on the order in which the
readings come: :class:`SampleLinker` (live, one reading at a time) and
:func:`link_sample_space` (batch) give the same partition, whatever the visiting order, with no
``memory`` to tune. The disjoint sets are :class:`scipy.cluster.hierarchy.DisjointSet`, the
detector-space searches :class:`scipy.spatial.cKDTree`, the batch components
:func:`scipy.sparse.csgraph.connected_components`.

Two features of one reading are never linked to each other directly; they can still end in
one particle through a chain of links if their peaks are within a few ``search_range`` of
each other on the detector: keep ``search_range`` well below half the peak separation.

Superseded readings
-------------------
A point read again (a re-taken point after a pause, another pass) replaces its earlier
reading: ``SampleLinker.add`` at a point that has a reading first removes that reading's
features from the links, then links the new ones (``discard`` removes one without a new
reading). A removed reading never links anything afterwards, so the result equals the batch
linking of the current readings only. Removing a reading that was the only link between two
parts of a particle splits it: the larger part keeps the id, the others get new ids, reported
in ``LinkUpdate.split`` (when the new reading links them again, nothing is reported).

Examples
--------
>>> neighbours = {0: [1], 1: [0, 2], 2: [1]}.get     # three points in a row
>>> linker = SampleLinker(neighbours, search_range=3)
>>> linker.add(0, [[10, 10]]).particles.tolist(), linker.add(2, [[10, 11]]).particles.tolist()
([0], [1])
>>> update = linker.add(1, [[10, 10.5], [50, 50]])    # bridges particles 0 and 1
>>> update.particles.tolist(), update.merged
([0, 2], {1: 0})
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import DisjointSet
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["LinkUpdate", "SampleLinker", "link_sample_space"]

Neighbours = Callable[[int], Iterable[int]]


class LinkUpdate(NamedTuple):
    """What :meth:`SampleLinker.add` changed.

    ``particles``: (n,) int64, the particle id of each feature just added. ``merged``: ids that
    became one, ``{id: the id it joined}`` (the smallest of those joined). ``split``: ids whose
    features a removed reading held together, ``{id: the ids now holding them}``.
    """
    particles: np.ndarray
    merged: dict[int, int]
    split: dict[int, tuple[int, ...]]


class _Reading(NamedTuple):
    keys: np.ndarray    # DisjointSet element of each feature (replaced when re-linked)
    yx: np.ndarray
    tree: cKDTree | None


def _as_yx(features_yx, where: str) -> np.ndarray:
    yx = np.asarray(features_yx, dtype=np.float64)
    if yx.size == 0:
        return np.empty((0, 2))
    if yx.ndim != 2 or yx.shape[1] != 2 or not np.isfinite(yx).all():
        raise ValueError(f"{where}: features must be an (n, 2) array of finite detector positions (y, x) in "
                         f"pixels, got shape {yx.shape}")
    return yx


def _pairs(a: _Reading, b: _Reading, search_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i in a, j in b) of the feature pairs within ``search_range`` (both directions equal)."""
    if a.tree is None or b.tree is None:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    found = a.tree.sparse_distance_matrix(b.tree, search_range, output_type="ndarray")
    return found["i"].astype(np.int64), found["j"].astype(np.int64)


def _check_search_range(search_range: float) -> float:
    if not np.isfinite(search_range) or search_range < 0:
        raise ValueError(f"search_range {search_range!r} must be a finite distance in pixels >= 0")
    return float(search_range)


class SampleLinker:
    """Link each reading's features as it arrives; particle ids are given first-come.

    Parameters
    ----------
    neighbours : callable
        ``neighbours(point)`` -> the points next to ``point`` on the sample (e.g.
        :meth:`Placement.neighbours`); must be symmetric.
    search_range : float
        Largest detector distance (pixels) between two features of one particle at neighbouring points.

    Notes
    -----
    Per reading: one KD-tree query per visited neighbour and one union per link (~1 ms for 50
    peaks and 8 neighbours); memory grows with the features of the run.
    """

    def __init__(self, neighbours: Neighbours, search_range: float) -> None:
        self._neighbours = neighbours
        self.search_range = _check_search_range(search_range)
        self._ds = DisjointSet()
        self._readings: dict[int, _Reading] = {}
        self._id: dict[int, int] = {}            # root element -> particle id
        self._owner: list[tuple[int, int]] = []   # element -> (point, feature index)
        self._next_id = 0

    def _new_keys(self, point: int, indices: Iterable[int]) -> np.ndarray:
        keys = []
        for i in indices:
            keys.append(len(self._owner))
            self._owner.append((point, int(i)))
            self._ds.add(keys[-1])
        return np.array(keys, dtype=np.int64)

    def _union(self, a: int, b: int, merged: dict[int, int]) -> None:
        ra, rb = self._ds[a], self._ds[b]
        if ra == rb:
            return
        ids = [i for i in (self._id.pop(ra, None), self._id.pop(rb, None)) if i is not None]
        self._ds.merge(ra, rb)
        if ids:
            self._id[self._ds[ra]] = min(ids)
        if len(ids) == 2 and ids[0] != ids[1]:
            merged[max(ids)] = min(ids)

    def _link(self, point: int, reading: _Reading, merged: dict[int, int], among: set | None = None) -> None:
        for other in self._neighbours(point):
            other = int(other)
            if other == point or other not in self._readings or (among is not None and other not in among):
                continue
            neighbour = self._readings[other]
            for i, j in zip(*_pairs(reading, neighbour, self.search_range)):
                self._union(int(reading.keys[i]), int(neighbour.keys[j]), merged)

    def _remove(self, old: _Reading, merged: dict[int, int]) -> dict[int, list[int]]:
        """Drop a reading's features; re-link the rest of the particles it touched, each under
        new elements (a DisjointSet cannot split). Returns ``{previous id: its elements now}``;
        the parts that do not keep their id are left without one."""
        members: dict[int, dict[int, list[int]]] = {}   # previous id -> point -> feature indices
        for root in {self._ds[int(k)] for k in old.keys}:
            previous = self._id.pop(root)
            for element in self._ds.subset(root):
                point, index = self._owner[element]
                reading = self._readings.get(point)
                if reading is not None and reading.keys[index] == element:
                    members.setdefault(previous, {}).setdefault(point, []).append(index)
        elements: dict[int, list[int]] = {}
        for previous, by_point in members.items():
            for point, indices in by_point.items():
                self._readings[point].keys[indices] = self._new_keys(point, indices)
                elements.setdefault(previous, []).extend(self._readings[point].keys[indices].tolist())
            for point in by_point:
                self._link(point, self._readings[point], merged, among=set(by_point))
            parts: dict[int, list[int]] = {}
            for element in elements[previous]:
                parts.setdefault(self._ds[element], []).append(element)
            keeper = max(parts.values(), key=lambda part: (len(part), -min(part)))
            self._id[self._ds[keeper[0]]] = previous
        return elements

    def _fresh(self, element: int) -> int:
        root = self._ds[element]
        if root not in self._id:
            self._id[root] = self._next_id
            self._next_id += 1
        return self._id[root]

    def add(self, point: int, features_yx) -> LinkUpdate:
        """Link the features ``(n, 2)`` (detector y, x in pixels) of a reading of ``point``;
        a reading already there is replaced (its features unlinked first)."""
        point = int(point)
        yx = _as_yx(features_yx, f"point {point}")
        merged: dict[int, int] = {}
        old = self._readings.pop(point, None)
        before = self._remove(old, merged) if old is not None and len(old.keys) else {}
        reading = _Reading(self._new_keys(point, range(len(yx))), yx, cKDTree(yx) if len(yx) else None)
        self._readings[point] = reading
        self._link(point, reading, merged)
        particles = np.array([self._fresh(int(k)) for k in reading.keys], dtype=np.int64)
        return self._report(particles, merged, before)

    def discard(self, point: int) -> LinkUpdate:
        """Remove the reading of ``point`` (superseded by a reading elsewhere); no-op if none."""
        merged: dict[int, int] = {}
        old = self._readings.pop(int(point), None)
        before = self._remove(old, merged) if old is not None and len(old.keys) else {}
        return self._report(np.empty(0, np.int64), merged, before)

    def _report(self, particles: np.ndarray, merged: dict[int, int], before: dict[int, list[int]]) -> LinkUpdate:
        split: dict[int, tuple[int, ...]] = {}
        for previous, elements in before.items():
            finals = sorted({self._fresh(e) for e in elements})
            if len(finals) > 1:
                split[previous] = tuple(finals)
                merged.pop(previous, None)
            elif finals != [previous]:
                merged[previous] = finals[0]
        for gone in list(merged):
            target = merged[gone]
            while target in merged and merged[target] != target:
                target = merged[target]
            merged[gone] = target
        return LinkUpdate(particles, merged, split)

    @property
    def n_features(self) -> int:
        return sum(len(r.keys) for r in self._readings.values())

    def labels(self) -> pd.DataFrame:
        """Every current feature: ``point``, ``feature`` (its row in the reading) and its
        ``particle`` (merged id), sorted by point and feature."""
        points = sorted(self._readings)
        rows = [(p, i, self._id[self._ds[int(k)]]) for p in points for i, k in enumerate(self._readings[p].keys)]
        table = pd.DataFrame(rows, columns=["point", "feature", "particle"])
        return table.astype(np.int64)


def link_sample_space(features: pd.DataFrame, search_range: float, *, neighbours: Neighbours,
                      point: str = "point", frame: str = "frame") -> pd.DataFrame:
    """Link a run's features in sample space, batch; like ``trackpy.link``'s output.

    Parameters
    ----------
    features : pandas.DataFrame
        ``y``, ``x`` (detector pixels) and ``point`` (from :meth:`Placement.add`): the features
        of the current readings only (drop those of superseded readings first).
    search_range : float
        Largest detector distance (pixels) between two features of one particle.
    neighbours : callable
        ``neighbours(point)`` -> the points next to it on the sample (:meth:`Placement.neighbours`).
    point, frame : str
        Column names. If ``frame`` is a column, each point must have one frame.

    Returns
    -------
    pandas.DataFrame
        The features (same rows, order and index) with an int64 ``particle``, numbered in
        order of first appearance in ``features``.

    Raises
    ------
    ValueError
        A missing column, or a point with features of two frames.

    Examples
    --------
    >>> features = pd.DataFrame({"y": [10.0, 10.5, 50.0, 10.2], "x": [5.0, 5.0, 5.0, 5.5], "point": [0, 1, 1, 2]})
    >>> link_sample_space(features, 2, neighbours={0: [1], 1: [0, 2], 2: [1]}.get)["particle"].tolist()
    [0, 0, 1, 0]
    """
    search_range = _check_search_range(search_range)
    missing = [c for c in ("y", "x", point) if c not in features.columns]
    if missing:
        raise ValueError(f"features lack the column(s) {missing} (have {list(features.columns)}); link_sample_space "
                         f"needs detector 'y', 'x' and the sample point of each feature ({point!r})")
    if frame in features.columns and len(features):
        frames = features.groupby(point)[frame].nunique()
        if (frames > 1).any():
            bad = int(frames.index[frames > 1][0])
            raise ValueError(f"point {bad} has features of frames {sorted(features.loc[features[point] == bad, frame].unique().tolist())}: "
                             "a point read again supersedes its earlier reading; drop the superseded features "
                             "(Placement.add tells which seq_num) before linking")
    points = features[point].to_numpy().astype(np.int64)
    yx = features[["y", "x"]].to_numpy(dtype=np.float64)
    order = np.argsort(points, kind="stable")
    unique, starts = np.unique(points[order], return_index=True)
    rows = dict(zip(unique.tolist(), np.split(order, starts[1:])))
    readings = {p: _Reading(r, yx[r], cKDTree(yx[r])) for p, r in rows.items()}
    edges_i, edges_j = [], []
    for p, reading in readings.items():
        for q in neighbours(p):
            q = int(q)
            if q > p and q in readings:
                i, j = _pairs(reading, readings[q], search_range)
                edges_i.append(reading.keys[i])
                edges_j.append(readings[q].keys[j])
    n = len(features)
    i = np.concatenate(edges_i) if edges_i else np.empty(0, np.int64)
    j = np.concatenate(edges_j) if edges_j else np.empty(0, np.int64)
    _, labels = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return features.assign(particle=rank[labels] if n else np.empty(0, np.int64))
