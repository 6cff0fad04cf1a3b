"""Time placement + sample-space linking per event, live, and the batch linking of a whole run.

A ``grid_scan`` of ``--rows`` x ``--cols`` points (snaking), ``--peaks`` features per event:
80 % at fixed detector positions (Bragg peaks seen everywhere: the largest particles, the
worst case for the unions), 20 % random noise. Live: the median time of
``Placement.add`` + ``SampleLinker.add`` per event, in blocks of the run (flat means the cost
does not grow as the run goes on). Batch: ``link_sample_space`` of the whole run, median of
``--repeats``. A benchmark, not a test; run it alone::

    python -m benchmarks.bench_linking --rows 100 --cols 100 --peaks 50
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from streamcrystal.science.linking import SampleLinker, link_sample_space
from streamcrystal.science.placement import Placement


def make_run(rows: int, cols: int, peaks: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    fixed = rng.uniform(20, 2000, (peaks, 2))
    positions, features = [], []
    for r in range(rows):
        for c in (range(cols) if r % 2 == 0 else range(cols - 1, -1, -1)):
            positions.append((0.05 * r + rng.normal(0, 1e-4), 0.05 * c + rng.normal(0, 1e-4)))
            yx = fixed + rng.normal(0, 0.3, fixed.shape)
            noise = rng.random(peaks) < 0.2
            yx[noise] = rng.uniform(0, 2048, (int(noise.sum()), 2))
            features.append(yx)
    return positions, features


def live(positions, features, blocks: int) -> tuple[list[float], Placement, list[int]]:
    placement = Placement(["sample_y", "sample_x"], steps=[0.05, 0.05])
    linker = SampleLinker(placement.neighbours, search_range=5)
    times, points = [], []
    for seq, (position, yx) in enumerate(zip(positions, features), 1):
        start = time.perf_counter()
        placed = placement.add(seq, position)
        linker.add(placed.point, yx)
        times.append(time.perf_counter() - start)
        points.append(placed.point)
    per_block = [float(np.median(block)) for block in np.array_split(np.array(times), blocks)]
    return per_block, placement, points


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--cols", type=int, default=100)
    parser.add_argument("--peaks", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=5, help="report the live median per block of the run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    positions, features = make_run(args.rows, args.cols, args.peaks)
    per_block, placement, points = live(positions, features, args.blocks)
    print(f"live, {len(positions)} events x {args.peaks} peaks: median ms/event per block of the run: "
          + " ".join(f"{1e3 * t:.3f}" for t in per_block))
    table = pd.DataFrame(np.concatenate(features), columns=["y", "x"])
    table["point"] = np.repeat(points, [len(f) for f in features])
    batch = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        tracks = link_sample_space(table, 5, neighbours=placement.neighbours)
        batch.append(time.perf_counter() - start)
    print(f"batch, {len(table)} features: median {np.median(batch):.2f} s of {args.repeats}; "
          f"{tracks['particle'].nunique()} particles")


if __name__ == "__main__":
    main()
