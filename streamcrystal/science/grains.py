"""Grains from particles: which Bragg peaks belong to one crystallite, without a unit cell.

A particle is one Bragg peak followed over a scan; its map is its intensity at each scan point,
0 where it was not seen. All the Bragg peaks of one grain come from the same illuminated volume,
so they light up on the same points and rise and fall together; the peaks of two grains that
overlap on the sample do not. :func:`group_grains` groups particles into grains in three steps:

1. **Particle links.** Two particles are linked when their footprints (the points where each
   was seen) overlap on at least ``min_overlap`` of the smaller footprint and their intensities
   correlate over the common points (Pearson ``r >= min_correlation``). Where the correlation
   cannot be measured (fewer than ``min_points`` common points, or a map constant on them), the
   footprints must coincide instead: the overlap must also cover ``min_overlap`` of the larger.
   The connected components of these links are the *proto-grains*: evidence for step 2 only.
2. **Reflections.** A Bragg peak whose intensity dips below the detection threshold across
   part of its grain comes out as several particles at one detector position (within
   ``search_range`` px), seen on different points. Two such fragments are one reflection when
   their footprints are disjoint (one detector position at one scan point gives one feature);
   adjacent, unless step 1 put them in one proto-grain (their nearest points at most
   ``max_gap`` scan steps apart: the gap is where the peak dipped, inside the grain); and not
   contradicted by the other reflections. A particle of one fragment's proto-grain, at another
   detector position, that covers that fragment (``min_overlap`` of it) is a witness: it
   contradicts the pair if the particles at its detector position are all but absent from the
   other fragment (cover less than ``1 - min_overlap`` of it), and supports it if they cover
   ``min_overlap`` of it. A pair with a contradiction and no support is refused. This keeps
   apart two grains that touch on the sample and share a detector position (the other
   reflections of each are seen on its side only), and still joins the fragments of a grain
   whose proto-grain also took in a particle of a neighbour by chance (its own reflections
   support the pair).
3. **Grains.** Each reflection's map is its fragments' maps combined (their mean where they
   overlap). Reflections are linked as particles are in step 1, now on whole reflections; the
   connected components are the grains. Links between fragments are not carried over: over
   part of a grain, intensities can correlate with another grain's (on the real maps of
   ``CG_0046``, a band of a third of one grain's rows with a neighbour at up to r = 0.73; the
   whole grain at 0.24).

The grain map is the sum of its reflections' maps, each normalised to its maximum; the
grain-label map tells which grain is strongest at each point, each grain map normalised to its
maximum (so that a grain with many peaks does not win for that alone).

Grouping Bragg peaks into grains without indexing is a long-standing request of the field
(ImageD11 issue 148). Pure numpy/scipy/pandas/xarray.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["DEFAULTS", "Grains", "group_grains", "grain_maps", "grain_label_map", "grain_maps_to_xarray"]

#: The default thresholds of :func:`group_grains` (stored with its result for provenance).
DEFAULTS: dict[str, float] = {
    "min_overlap": 0.8,  # fraction of the smaller footprint
    "min_correlation": 0.6,  # Pearson r over the common points
    "min_points": 8,  # common points needed to measure r
    "search_range": 5.0,  # px on the detector: one reflection
    "max_gap": 3.0,  # scan steps between the fragments of one reflection
}


@dataclass(frozen=True, eq=False)
class Grains:
    """The grains of a run, as found by :func:`group_grains`.

    Attributes
    ----------
    labels : numpy.ndarray
        ``(n_particles,)`` int64: the grain of each particle, 1 to ``n_grains``; 0 for a
        particle never seen (an all-zero map).
    reflections : numpy.ndarray
        ``(n_particles,)`` int64: the reflection (Bragg peak) of each particle, 1 to
        ``n_reflections``; fragments of one peak share it. 0 for a particle never seen.
    table : pandas.DataFrame
        One row per grain (index ``grain``): ``particles`` (tuple of particle ids),
        ``n_reflections``, ``n_particles``, ``footprint`` (points where its map is > 0),
        ``peaks`` (tuple of its reflections' detector positions ``(y, x)``, px).
    reflection_table : pandas.DataFrame
        One row per reflection (index ``reflection``): ``grain``, ``particles``, ``y``, ``x``
        (px, the fragments' positions weighted by their footprints), ``footprint``.
    maps : numpy.ndarray
        ``(n_grains, n_points)`` float64: each grain's map, the sum of its reflections' maps
        normalised to their maximum (so at most ``n_reflections``).
    label_map : numpy.ndarray
        ``(n_points,)`` int64: the strongest grain at each point, 0 where there is none.
    grid_shape : tuple of int or None
        The scan grid of the points (C order), if known.
    options : dict
        The thresholds used: keys of :data:`DEFAULTS`.
    """

    labels: np.ndarray
    reflections: np.ndarray
    table: pd.DataFrame
    reflection_table: pd.DataFrame
    maps: np.ndarray
    label_map: np.ndarray
    grid_shape: tuple[int, ...] | None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def n_grains(self) -> int:
        return len(self.table)


def group_grains(
    maps: npt.ArrayLike | sparse.spmatrix,
    positions: npt.ArrayLike,
    *,
    ids: Sequence[int] | None = None,
    grid_shape: Sequence[int] | None = None,
    coords: npt.ArrayLike | None = None,
    min_overlap: float = DEFAULTS["min_overlap"],
    min_correlation: float = DEFAULTS["min_correlation"],
    min_points: int = DEFAULTS["min_points"],
    search_range: float = DEFAULTS["search_range"],
    max_gap: float = DEFAULTS["max_gap"],
) -> Grains:
    """Group particles (Bragg peaks followed over a scan) into grains, without a unit cell.

    The rule is in the module's docstring: particles linked by overlapping, correlated maps;
    fragments of one Bragg peak joined into one reflection; connected components
    (``scipy.sparse.csgraph.connected_components``) of the links are the grains.

    Parameters
    ----------
    maps : array_like or scipy.sparse matrix
        ``(n_particles, n_points)`` or ``(n_particles, *grid_shape)``: each particle's
        intensity (any unit) at each scan point, 0 (or less) where it was not seen. A
        flattened grid (C order) or the visited points of any scan.
    positions : array_like
        ``(n_particles, 2)``: each particle's detector position ``(y, x)`` = (row, col), px.
    ids : sequence of int, optional
        The particles' ids for the tables (trackpy's ``particle``); default ``0..n-1``.
    grid_shape : sequence of int, optional
        The grid of flattened 2-D ``maps``; taken from ``maps`` when they have grid axes.
    coords : array_like, optional
        ``(n_points, d)`` positions of the scan points (any unit; e.g. motor positions of a
        non-grid scan). Default: the grid indices. ``max_gap`` counts in scan steps: the median
        distance from a point to its nearest neighbour (1 on a grid).
    min_overlap : float
        Common points needed to link two particles, as a fraction of the smaller footprint.
    min_correlation : float
        Least Pearson correlation of two particles' intensities over their common points.
    min_points : int
        Common points needed to measure the correlation (at least 3); below, footprints
        must coincide (overlap ``min_overlap`` of the larger footprint too).
    search_range : float
        Detector distance (px) within which particles are the same reflection.
    max_gap : float
        Largest distance (scan steps) between the nearest points of two fragments of one
        reflection.

    Returns
    -------
    Grains
        Labels, tables, grain maps ``(n_grains, n_points)`` and the grain-label map.

    Raises
    ------
    ValueError
        Maps or positions of the wrong shape, non-finite values, duplicate ids, a 2-D
        ``maps`` without ``grid_shape`` or ``coords``, thresholds out of range.

    Examples
    --------
    Two grains on a 1 x 9 grid: grain A (points 0-5) has two Bragg peaks, one of them in two
    fragments (it dips below the threshold on point 3); grain B (points 6-8) has one peak.

    >>> maps = np.array([[6, 7, 8, 0, 0, 0, 0, 0, 0],    # A, peak 1, fragment 1
    ...                  [5, 6, 7, 6, 6, 4, 0, 0, 0],    # A, peak 2
    ...                  [0, 0, 0, 0, 0, 0, 2, 4, 2],    # B
    ...                  [0, 0, 0, 0, 7, 5, 0, 0, 0],    # A, peak 1, fragment 2
    ...                  [0, 0, 0, 0, 0, 0, 0, 0, 0]])   # never seen
    >>> positions = [(100, 100), (300, 40), (50, 200), (101, 99), (10, 10)]
    >>> grains = group_grains(maps, positions, grid_shape=(1, 9))
    >>> grains.labels.tolist(), grains.reflections.tolist()
    ([1, 1, 2, 1, 0], [1, 2, 3, 1, 0])
    >>> grains.table[["particles", "n_reflections", "footprint"]]  # doctest: +NORMALIZE_WHITESPACE
           particles  n_reflections  footprint
    grain
    1      (0, 1, 3)              2          6
    2           (2,)              1          3
    >>> grains.label_map.tolist()
    [1, 1, 1, 1, 1, 1, 2, 2, 2]
    """
    options = _check_options(min_overlap, min_correlation, min_points, search_range, max_gap)
    values, grid = _as_maps(maps, grid_shape)
    n_particles, n_points = values.shape
    positions = _as_positions(positions, n_particles)
    ids = _as_ids(ids, n_particles)
    points = _as_coords(coords, grid, n_points)

    footprint = values.copy()
    footprint.data[:] = 1.0
    size = np.diff(values.indptr)
    seen = np.flatnonzero(size)
    overlap = (footprint @ footprint.T).tocsr()

    # 1. particle links -> proto-grains (evidence for step 2 only)
    _, proto = connected_components(_graph(_links(values, footprint, size, overlap, options), n_particles),
                                    directed=False)

    # 2. fragments -> reflections
    same_place = _position_pairs(positions, seen, options["search_range"])
    fragments = _fragment_links(same_place, proto, footprint, size, overlap, points, options)
    _, reflection = connected_components(_graph(fragments, n_particles), directed=False)
    reflection = _renumber(reflection, seen)  # 1.., 0 for never seen
    n_reflections = int(reflection.max(initial=0))

    # 3. reflections -> grains
    member = sparse.csr_matrix((np.ones(len(seen)), (reflection[seen] - 1, seen)), shape=(n_reflections, n_particles))
    summed, counted = member @ values, member @ footprint
    reflection_values = summed.multiply(counted.power(-1)).tocsr()  # the mean where fragments overlap
    reflection_footprint = (counted > 0).astype(np.float64).tocsr()
    reflection_size = np.diff(reflection_footprint.indptr)
    reflection_links = _links(reflection_values, reflection_footprint, reflection_size,
                              (reflection_footprint @ reflection_footprint.T).tocsr(), options)
    _, grain_of_reflection = connected_components(_graph(reflection_links, n_reflections), directed=False)
    grain_of_reflection = _renumber(grain_of_reflection, np.arange(n_reflections))
    labels = np.zeros(n_particles, np.int64)
    # reflections are numbered by their lowest particle index, grains by their lowest reflection:
    # grain 1 holds the first particle (in trackpy, the first seen in the scan), and so on
    labels[seen] = grain_of_reflection[reflection[seen] - 1]

    maps_out = grain_maps(reflection_values, grain_of_reflection)
    tables = _tables(ids, positions, size, labels, reflection, grain_of_reflection, reflection_size, maps_out)
    return Grains(labels, reflection, tables[0], tables[1], maps_out, grain_label_map(maps_out),
                  grid, options)


def grain_maps(reflection_maps: npt.ArrayLike | sparse.spmatrix, grain_of_reflection: npt.ArrayLike) -> np.ndarray:
    """Each grain's map: the sum of its reflections' maps, each normalised to its maximum.

    Parameters
    ----------
    reflection_maps : array_like or scipy.sparse matrix
        ``(n_reflections, n_points)``, intensities >= 0 (an all-zero map adds nothing).
    grain_of_reflection : array_like of int
        ``(n_reflections,)``: the grain of each reflection, 1 to ``n_grains``.

    Returns
    -------
    numpy.ndarray
        ``(n_grains, n_points)`` float64; a grain's map is at most its number of reflections.

    Examples
    --------
    >>> grain_maps(np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 6.0], [5.0, 5.0, 0.0]]), [1, 1, 2]).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    """
    values = sparse.csr_matrix(reflection_maps, dtype=np.float64)
    grain = np.asarray(grain_of_reflection, dtype=np.int64).ravel()
    if len(grain) != values.shape[0]:
        raise ValueError(f"grain_of_reflection has {len(grain)} entries for {values.shape[0]} reflection maps; "
                         "give one grain (1..n_grains) per map")
    if len(grain) and grain.min() < 1:
        raise ValueError(f"grain_of_reflection holds {grain.min()}; grains are numbered from 1")
    # scipy's max refuses an axis of length 0 (a run without points)
    peak = values.max(axis=1).toarray().ravel() if values.shape[1] else np.zeros(values.shape[0])
    scale = sparse.diags(np.divide(1.0, peak, out=np.zeros_like(peak), where=peak > 0))
    n_grains = int(grain.max(initial=0))
    member = sparse.csr_matrix((np.ones(len(grain)), (grain - 1, np.arange(len(grain)))), shape=(n_grains, len(grain)))
    return (member @ (scale @ values)).toarray()


def grain_label_map(maps: npt.ArrayLike) -> np.ndarray:
    """The strongest grain at each point, by each grain map normalised to its maximum.

    Parameters
    ----------
    maps : array_like
        ``(n_grains, *points)``: grain maps (:func:`grain_maps`), >= 0.

    Returns
    -------
    numpy.ndarray
        ``points``-shaped int64: the grain (1 to ``n_grains``) whose normalised map is
        largest; 0 where every grain map is 0. Ties go to the lower grain number.

    Examples
    --------
    >>> grain_label_map([[3.0, 2.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]]).tolist()
    [1, 2, 2, 0]
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2:
        raise ValueError(f"grain maps of shape {maps.shape}: expected (n_grains, *points)")
    if maps.shape[0] == 0:
        return np.zeros(maps.shape[1:], np.int64)
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape((-1,) + (1,) * (maps.ndim - 1))
    normalised = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    return np.where(normalised.max(axis=0) > 0, normalised.argmax(axis=0) + 1, 0).astype(np.int64)


def grain_maps_to_xarray(maps: npt.ArrayLike, coords: Mapping[str, npt.ArrayLike], *,
                         grains: Sequence[int] | None = None, name: str = "grain_map") -> xr.DataArray:
    """Grain maps as a ``DataArray`` with dims ``("grain", *coords)``.

    Parameters
    ----------
    maps : array_like
        ``(n_grains, n_points)`` with the points in C order over the grid, or
        ``(n_grains, *grid_shape)``.
    coords : mapping of str to 1-D array_like
        One entry per grid axis, slowest first: its name and coordinates (e.g. motor
        positions in mm, as ``streamcrystal.science.maps.grid_coords`` gives them).
    grains : sequence of int, optional
        The grain ids; default ``1..n_grains``.
    name : str
        The DataArray's name.

    Examples
    --------
    >>> da = grain_maps_to_xarray(np.ones((2, 6)), {"sample_y": [0.0, 0.25], "sample_x": [0.0, 0.25, 0.5]})
    >>> da.dims, da.shape, da.coords["grain"].values.tolist()
    (('grain', 'sample_y', 'sample_x'), (2, 2, 3), [1, 2])
    """
    maps = np.asarray(maps, dtype=np.float64)
    axes = {str(dim): np.asarray(values).ravel() for dim, values in coords.items()}
    shape = tuple(len(values) for values in axes.values())
    fits = maps.ndim == 2 and maps.shape[1] == int(np.prod(shape)) or maps.ndim > 2 and maps.shape[1:] == shape
    if not fits:
        raise ValueError(f"grain maps of shape {maps.shape} do not fit the grid {shape} of coords {list(axes)}; "
                         "expected (n_grains, n_points) with n_points the product of the coords' lengths")
    ids = np.arange(1, len(maps) + 1) if grains is None else np.asarray(grains)
    if len(ids) != len(maps):
        raise ValueError(f"{len(ids)} grain ids for {len(maps)} grain maps; give one id per map")
    return xr.DataArray(maps.reshape(len(maps), *shape), dims=("grain", *axes), coords={"grain": ids, **axes},
                        name=name)


# -- the steps ----------------------------------------------------------------------------------

def _links(values, footprint, size, overlap, options) -> np.ndarray:
    """Pairs ``(k, 2)`` whose footprints overlap and whose intensities correlate (step 1)."""
    pairs = sparse.triu(overlap, k=1).tocoo()
    i, j, common = pairs.row, pairs.col, pairs.data
    smaller, larger = np.minimum(size[i], size[j]), np.maximum(size[i], size[j])
    keep = common >= options["min_overlap"] * smaller
    i, j, common, larger = i[keep], j[keep], common[keep], larger[keep]
    r = _overlap_correlation(values, footprint, i, j, common)
    measurable = (common >= options["min_points"]) & np.isfinite(r)
    linked = np.where(measurable, r >= options["min_correlation"], common >= options["min_overlap"] * larger)
    return np.column_stack([i[linked], j[linked]]).astype(np.int64)


def _overlap_correlation(values, footprint, i, j, common) -> np.ndarray:
    """Pearson r of rows ``i`` and ``j`` over their common points; nan if either is constant."""
    if len(i) == 0:
        return np.zeros(0)
    a = values[i].multiply(footprint[j])  # row i on the common points only
    b = values[j].multiply(footprint[i])
    a, b = _unit_rows(a), _unit_rows(b)  # r does not change; the sums stay well conditioned
    sa, sb = _row_sums(a), _row_sums(b)
    saa, sbb, sab = _row_sums(a.multiply(a)), _row_sums(b.multiply(b)), _row_sums(a.multiply(b))
    var_a, var_b = common * saa - sa**2, common * sbb - sb**2
    constant = (var_a <= 1e-12 * common * saa) | (var_b <= 1e-12 * common * sbb)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (common * sab - sa * sb) / np.sqrt(var_a * var_b)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


def _position_pairs(positions, seen, search_range) -> np.ndarray:
    """Pairs ``(k, 2)`` of seen particles within ``search_range`` px on the detector."""
    if len(seen) < 2:
        return np.zeros((0, 2), np.int64)
    pairs = cKDTree(positions[seen]).query_pairs(search_range, output_type="ndarray")
    return seen[pairs].reshape(-1, 2).astype(np.int64)


def _fragment_links(pairs, proto, footprint, size, overlap, points, options) -> np.ndarray:
    """The pairs (at one detector position) that are fragments of one reflection (step 2):
    disjoint, adjacent unless step 1 already put them in one proto-grain, uncontradicted."""
    if len(pairs) == 0:
        return pairs
    # the detector positions: clusters of particles within search_range of each other
    _, place = connected_components(_graph(pairs, len(size)), directed=False)
    i, j = pairs[:, 0], pairs[:, 1]
    pairs = pairs[np.asarray(overlap[i, j]).ravel() == 0]
    reach = options["max_gap"] * points.step
    near = [proto[f] == proto[g] or _adjacent(footprint, points.coords, f, g, reach) for f, g in pairs]
    pairs = pairs[np.asarray(near, bool)]
    if len(pairs) == 0:
        return pairs
    return pairs[~_contradicted(pairs, proto, place, footprint, size, overlap, options)]


def _contradicted(pairs, proto, place, footprint, size, overlap, options) -> np.ndarray:
    """For each pair (f, g) of fragment candidates, whether the other reflections say that f and
    g lie on different grains.

    A *witness* of f is a particle of f's proto-grain, at another detector position, that covers
    ``min_overlap`` of f. It *supports* the pair if the particles at its position cover
    ``min_overlap`` of g too, and *contradicts* it if they cover less than ``1 - min_overlap``
    of g. A pair is contradicted when a witness of f or g contradicts it and none supports it.
    """
    share = options["min_overlap"]
    seen = np.flatnonzero(size)
    at_place = sparse.csr_matrix((np.ones(len(seen)), (place[seen], seen)), shape=(int(place.max()) + 1, len(size)))
    coverage = (((at_place @ footprint) > 0).astype(np.float64) @ footprint.T).tocsr()  # (places, particles)
    entries = overlap.tocoo()
    q, f, common = entries.row, entries.col, entries.data
    witness = (np.isin(f, pairs) & (proto[q] == proto[f]) & (place[q] != place[f]) & (common >= share * size[f]))
    witnesses = pd.DataFrame({"f": f[witness], "q": q[witness]})
    directed = pd.DataFrame({"f": np.concatenate([pairs[:, 0], pairs[:, 1]]),
                             "g": np.concatenate([pairs[:, 1], pairs[:, 0]]),
                             "pair": np.tile(np.arange(len(pairs)), 2)})
    triples = directed.merge(witnesses, on="f")
    if triples.empty:
        return np.zeros(len(pairs), bool)
    g, q, pair = triples["g"].to_numpy(), triples["q"].to_numpy(), triples["pair"].to_numpy()
    covered = np.asarray(coverage[place[q], g]).ravel()
    supported = np.bincount(pair[covered >= share * size[g]], minlength=len(pairs)) > 0
    against = np.bincount(pair[covered < (1 - share) * size[g]], minlength=len(pairs)) > 0
    return against & ~supported


def _adjacent(footprint, coords, f, g, reach) -> bool:
    """Whether the nearest points of particles ``f`` and ``g`` are at most ``reach`` apart."""
    here = coords[footprint.indices[footprint.indptr[f]:footprint.indptr[f + 1]]]
    there = coords[footprint.indices[footprint.indptr[g]:footprint.indptr[g + 1]]]
    if len(here) > len(there):
        here, there = there, here
    distance, _ = cKDTree(there).query(here, k=1, distance_upper_bound=reach * (1 + 1e-9))
    return bool(np.isfinite(distance).any())


# -- small helpers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Points:
    coords: np.ndarray  # (n_points, d)
    step: float  # the scan step: median nearest-neighbour distance


def _unit_rows(matrix):
    peak = matrix.max(axis=1).toarray().ravel()
    return sparse.diags(np.divide(1.0, peak, out=np.zeros_like(peak), where=peak > 0)) @ matrix


def _row_sums(matrix) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1)).ravel()


def _graph(pairs: np.ndarray, n: int):
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return sparse.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))


def _renumber(component: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Components of the ``keep`` entries numbered 1.. in order of first appearance; 0 elsewhere."""
    out = np.zeros(len(component), np.int64)
    _, first, inverse = np.unique(component[keep], return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(first) + 1)
    out[keep] = rank[inverse.ravel()]
    return out


def _tables(ids, positions, size, labels, reflection, grain_of_reflection, reflection_size, maps):
    """The grain table and the reflection table of :class:`Grains`."""
    seen = np.flatnonzero(labels)
    n_reflections, n_grains = len(grain_of_reflection), len(maps)
    weight = size[seen].astype(np.float64)
    per_reflection = np.bincount(reflection[seen] - 1, weight, minlength=n_reflections)
    y, x = (np.bincount(reflection[seen] - 1, weight * positions[seen, k], minlength=n_reflections) / per_reflection
            for k in (0, 1))
    particles_of = [[] for _ in range(n_reflections)]
    for particle, r in zip(ids[seen].tolist(), reflection[seen] - 1):
        particles_of[r].append(particle)
    reflections = pd.DataFrame({
        "grain": grain_of_reflection, "particles": [tuple(p) for p in particles_of], "y": y, "x": x,
        "footprint": reflection_size,
    }, index=pd.RangeIndex(1, n_reflections + 1, name="reflection"))
    members = [np.flatnonzero(grain_of_reflection == g) for g in range(1, n_grains + 1)]
    table = pd.DataFrame({
        "particles": [tuple(sorted(sum((particles_of[r] for r in m), []))) for m in members],
        "n_reflections": np.asarray([len(m) for m in members], np.int64),
        "n_particles": np.bincount(labels[seen] - 1, minlength=n_grains).astype(np.int64),
        "footprint": (maps > 0).sum(axis=1).astype(np.int64),
        "peaks": [tuple(zip(np.round(y[m], 2).tolist(), np.round(x[m], 2).tolist())) for m in members],
    }, index=pd.RangeIndex(1, n_grains + 1, name="grain"))
    return table, reflections


def _check_options(min_overlap, min_correlation, min_points, search_range, max_gap) -> dict[str, Any]:
    checks = {
        "min_overlap": (min_overlap, 0 < min_overlap <= 1, "a fraction in (0, 1]"),
        "min_correlation": (min_correlation, -1 <= min_correlation <= 1, "a Pearson r in [-1, 1]"),
        "min_points": (min_points, min_points >= 3, "an integer >= 3 (a correlation needs 3 points)"),
        "search_range": (search_range, search_range >= 0, "a distance >= 0 in detector pixels"),
        "max_gap": (max_gap, max_gap >= 0, "a distance >= 0 in scan steps"),
    }
    for key, (value, valid, expected) in checks.items():
        if not valid or not np.isfinite(value):
            raise ValueError(f"{key}={value!r} is out of range: expected {expected} (default {DEFAULTS[key]})")
    return {"min_overlap": float(min_overlap), "min_correlation": float(min_correlation),
            "min_points": int(min_points), "search_range": float(search_range), "max_gap": float(max_gap)}


def _as_maps(maps, grid_shape) -> tuple[sparse.csr_matrix, tuple[int, ...] | None]:
    grid = None if grid_shape is None else tuple(int(n) for n in np.atleast_1d(grid_shape))
    if sparse.issparse(maps):
        values = sparse.csr_matrix(maps, dtype=np.float64, copy=True)
    else:
        dense = np.asarray(maps, dtype=np.float64)
        if dense.ndim < 2:
            raise ValueError(f"maps of shape {dense.shape}: expected (n_particles, n_points) or "
                             "(n_particles, *grid_shape), one map per particle")
        if dense.ndim > 2:
            if grid is not None and grid != dense.shape[1:]:
                raise ValueError(f"grid_shape {grid} differs from the maps' grid axes {dense.shape[1:]}; "
                                 "drop grid_shape or flatten the maps")
            grid = dense.shape[1:]
            dense = dense.reshape(len(dense), int(np.prod(grid)))
        values = sparse.csr_matrix(dense)
    if grid is not None and int(np.prod(grid)) != values.shape[1]:
        raise ValueError(f"grid_shape {grid} has {int(np.prod(grid))} points but the maps have {values.shape[1]}")
    bad = ~np.isfinite(values.data)
    if bad.any():
        row = int(np.searchsorted(values.indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise ValueError(f"the map of particle {row} (row {row}) holds {values.data[bad][0]}; maps must be finite, "
                         "0 where a particle was not seen (numpy.nan_to_num)")
    values.data[values.data < 0] = 0.0  # not seen
    values.eliminate_zeros()
    values.sort_indices()
    return values, grid


def _as_positions(positions, n_particles: int) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (n_particles, 2):
        raise ValueError(f"positions of shape {positions.shape} for {n_particles} particle maps: expected "
                         f"({n_particles}, 2), each particle's detector (y, x) in px")
    if not np.isfinite(positions).all():
        raise ValueError(f"position of particle {int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])} is "
                         "not finite; every particle needs its detector (y, x) in px")
    return positions


def _as_ids(ids, n_particles: int) -> np.ndarray:
    if ids is None:
        return np.arange(n_particles)
    ids = np.asarray(ids).ravel()
    if len(ids) != n_particles:
        raise ValueError(f"{len(ids)} ids for {n_particles} particle maps; give one id per map")
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise ValueError(f"particle id {values[counts > 1].tolist()[0]!r} appears {counts[counts > 1][0]} times; "
                         "ids must be unique")
    return ids


def _as_coords(coords, grid, n_points: int) -> _Points:
    if coords is None:
        if grid is None:
            raise ValueError(f"maps of shape (n_particles, {n_points}) need grid_shape=(rows, cols) or "
                             f"coords=({n_points}, d) point positions, to tell which points are neighbours; "
                             "or pass maps as (n_particles, *grid_shape)")
        return _Points(np.indices(grid).reshape(len(grid), -1).T.astype(np.float64), 1.0)
    points = np.asarray(coords, dtype=np.float64)
    points = points.reshape(-1, 1) if points.ndim == 1 else points
    if points.ndim != 2 or len(points) != n_points or not np.isfinite(points).all():
        raise ValueError(f"coords of shape {np.shape(coords)} for maps of {n_points} points: expected "
                         f"({n_points}, d) finite positions, one per point")
    if n_points < 2:
        return _Points(points, 1.0)
    distance, _ = cKDTree(points).query(points, k=2)
    step = float(np.median(distance[:, 1]))
    if step <= 0:
        raise ValueError("coords: most points coincide with another (median nearest-neighbour distance 0); "
                         "give one position per distinct scan point")
    return _Points(points, step)
