"""Timing of :func:`streamcrystal.science.grains.group_grains` on a whole run.

A synthetic run: grains with random elliptic footprints (radii 2-7 points) scattered over a
square grid, overlapping one another as grains in a rod's projection do, each with 1 to
``2 * peaks_per_grain - 1`` Bragg peaks at random detector positions (3072 x 3888 px); each peak
follows its grain's own intensity profile times a structure factor, with 5 % noise, and some
dip below the threshold on a row across their grain (2 fragments). Particles are added grain by
grain until there are ``--particles``. Reports the median wall time of ``--repeats`` calls, with
the maps given dense (as ``RunResults.maps.values``) and as a scipy.sparse CSR matrix, and how
many grains were found against the truth.

Run from the repository root: ``python -m benchmarks.bench_grains`` (a benchmark, not a test).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from scipy import ndimage, sparse

from streamcrystal.science.grains import group_grains


def synthetic_run(n_particles: int, side: int, peaks_per_grain: int, dip_fraction: float, seed: int):
    """Maps (n_particles, side * side), positions (n, 2), true grain of each particle."""
    rng = np.random.default_rng(seed)
    rows, cols, values, positions, grain_of = [], [], [], [], []
    n, k = 0, 0
    while n < n_particles:
        centre = rng.uniform(0, side, 2)
        radii = rng.uniform(2, 7, 2)
        lo = np.maximum(np.floor(centre - radii), 0).astype(int)
        hi = np.minimum(np.ceil(centre + radii) + 1, side).astype(int)
        rr, cc = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
        rho2 = ((rr - centre[0]) / radii[0]) ** 2 + ((cc - centre[1]) / radii[1]) ** 2
        footprint = rho2 <= 1
        if footprint.sum() < 3:
            continue
        texture = np.exp(0.15 * ndimage.gaussian_filter(rng.standard_normal(rr.shape), 1.5) / 0.2)
        profile = rng.uniform(1200, 1700) * (0.6 + 0.4 * (1 - rho2)) * texture
        for _ in range(int(rng.integers(1, 2 * peaks_per_grain))):
            seen = profile * rng.uniform(0.7, 1.3) * (1 + 0.05 * rng.standard_normal(rr.shape))
            if rng.random() < dip_fraction and footprint.any(axis=1).sum() >= 3:
                band = int(np.flatnonzero(footprint.any(axis=1))[1])
                seen[band] *= 0.05
            seen = np.where(footprint & (seen >= 250), seen, 0.0)
            pieces, n_pieces = ndimage.label(seen > 0, structure=np.ones((3, 3)))
            where = rng.uniform([20, 20], [3052, 3868])
            for piece in range(1, n_pieces + 1):
                r, c = np.nonzero(pieces == piece)
                rows.append(np.full(len(r), n))
                cols.append((r + lo[0]) * side + c + lo[1])
                values.append(seen[r, c])
                positions.append(where + rng.normal(0, 0.3, 2))
                grain_of.append(k)
                n += 1
        k += 1
    maps = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n, side * side))
    return maps, np.array(positions), np.array(grain_of)


def _median_time(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Time group_grains on a synthetic run.")
    parser.add_argument("--particles", type=int, default=1000, help="particles in the run (default 1000)")
    parser.add_argument("--points", type=int, default=10_000, help="scan points, a square grid (default 10000)")
    parser.add_argument("--peaks-per-grain", type=int, default=6, help="mean Bragg peaks per grain (default 6)")
    parser.add_argument("--dips", type=float, default=0.1, help="fraction of peaks in 2 fragments (default 0.1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls; the median is reported (default 7)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    side = int(round(np.sqrt(args.points)))
    maps, positions, truth = synthetic_run(args.particles, side, args.peaks_per_grain, args.dips, args.seed)
    dense = maps.toarray().reshape(len(truth), side, side)
    found = group_grains(dense, positions)  # warm-up, and the answer
    dense_time = _median_time(lambda: group_grains(dense, positions), args.repeats)
    sparse_time = _median_time(lambda: group_grains(maps, positions, grid_shape=(side, side)), args.repeats)
    truth_sets = {frozenset(np.flatnonzero(truth == k)) for k in np.unique(truth)}
    found_sets = {frozenset(np.flatnonzero(found.labels == g)) for g in np.unique(found.labels)}
    merged = sum(len(set(truth[list(f)])) > 1 for f in found_sets)
    split = sum(len(set(found.labels[list(t)])) > 1 for t in truth_sets)
    footprint = np.diff(maps.indptr)
    print(f"run: {len(truth)} particles ({len(truth_sets)} true grains) on {side}x{side} = {side * side} points, "
          f"{maps.nnz} nonzeros (footprints {footprint.min()}-{footprint.max()} points, "
          f"median {np.median(footprint):.0f})")
    print(f"group_grains, dense maps ({dense.nbytes / 1e6:.0f} MB): median {dense_time * 1e3:.0f} ms of {args.repeats}")
    print(f"group_grains, CSR maps: median {sparse_time * 1e3:.0f} ms of {args.repeats}")
    print(f"grains found {found.n_grains}: exactly the true grain {len(truth_sets & found_sets)}, "
          f"holding several true grains {merged}, true grains split {split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
