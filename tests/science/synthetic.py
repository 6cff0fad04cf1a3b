"""Seeded synthetic scans with known answers for the placement and linking tests (no detector
images: features are the true peak positions plus a little noise, and a few noise features)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from streamcrystal.science.maps import grid_index


def grid_positions(shape, extents, *, snake=False, jitter=0.0, seed=0) -> np.ndarray:
    """(n, ndim) motor positions of a ``grid_scan`` in visiting order, with readback jitter."""
    axes = [np.linspace(a, b, n) for (a, b), n in zip(extents, shape)]
    snaking = (False,) + (bool(snake),) * (len(shape) - 1)
    index = grid_index(np.arange(1, int(np.prod(shape)) + 1), shape, snaking)
    positions = np.stack([axes[a][index[:, a]] for a in range(len(shape))], axis=1)
    return positions + np.random.default_rng(seed).uniform(-jitter, jitter, positions.shape)


def grain_scan(shape=(12, 12), *, n_grains=4, peaks_per_grain=2, noise_per_point=2, seed=0):
    """Readings of a uniform grid (unit steps) over ``n_grains`` rectangles, each lighting its
    peaks (detector y, x) with 0.3 px jitter, plus noise features far from every peak.

    Returns ``positions`` (n, 2), ``features`` (list of (k, 2) arrays) and ``truth``: for each
    reading, the (grain, peak) of each feature or (-1, -1) for noise.
    """
    rng = np.random.default_rng(seed)
    peaks = rng.uniform(40, 960, (n_grains, peaks_per_grain, 2))
    boxes = []
    for _ in range(n_grains):
        r0, c0 = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
        boxes.append((r0, r0 + rng.integers(2, 5), c0, c0 + rng.integers(2, 5)))
    positions = grid_positions(shape, [(0, shape[0] - 1), (0, shape[1] - 1)])
    features, truth = [], []
    for row, col in positions.astype(int):
        yx, labels = [], []
        for g, (r0, r1, c0, c1) in enumerate(boxes):
            if r0 <= row < r1 and c0 <= col < c1:
                for k, peak in enumerate(peaks[g]):
                    yx.append(peak + rng.normal(0, 0.3, 2))
                    labels.append((g, k))
        for _ in range(rng.integers(0, noise_per_point + 1)):
            yx.append(rng.uniform(0, 1000, 2))
            labels.append((-1, -1))
        features.append(np.array(yx).reshape(-1, 2))
        truth.append(labels)
    return positions, features, truth


def as_table(points, features) -> pd.DataFrame:
    """One row per feature: ``point``, ``feature`` (its row in the reading), ``y``, ``x``."""
    rows = [(p, i, y, x) for p, yx in zip(points, features) for i, (y, x) in enumerate(yx)]
    table = pd.DataFrame(rows, columns=["point", "feature", "y", "x"])
    return table.astype({"point": np.int64, "feature": np.int64})


def partition(table: pd.DataFrame) -> set[frozenset]:
    """The particles of a table with ``point``, ``feature`` and ``particle``, as sets of
    (point, feature): comparable whatever the particle numbering."""
    return {frozenset(zip(g["point"], g["feature"])) for _, g in table.groupby("particle")}
