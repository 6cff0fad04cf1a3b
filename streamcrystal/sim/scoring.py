"""How well a run's grains match the simulated truth: which grain, which Bragg peaks, which points.

The demo prints this; it is also what a user checks a choice of ``group_grains`` thresholds
with on a simulated rod. It reads plain tables and arrays (no pipeline objects), so it can score
any grouping.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .sample import GroundTruth

__all__ = ["GrainMatch", "score_grains"]


@dataclass(frozen=True)
class GrainMatch:
    """One simulated grain against the grains found.

    Attributes
    ----------
    grain : int
        The simulated grain's index (``truth.grains[grain]``).
    found : tuple of int
        The found grains holding a particle at one of its peaks (one, if it was found once).
    peaks_found : int
        Its Bragg peaks with a mapped particle within ``radius`` px (of ``n_peaks``).
    n_peaks : int
        Its Bragg peaks.
    others : int
        Particles in the found grains at none of its peaks (another grain merged in, or noise).
    iou : float
        Intersection over union of the found grain's map (points > 0) with the true footprint;
        with several found grains, the best of them; 0 if none.
    """

    grain: int
    found: tuple[int, ...]
    peaks_found: int
    n_peaks: int
    others: int
    iou: float

    @property
    def exact(self) -> bool:
        """Found once, with every one of its peaks and nothing else."""
        return len(self.found) == 1 and self.peaks_found == self.n_peaks and self.others == 0

    def line(self) -> str:
        """``simulated grain 0: grain 1, peaks 3 of 3, 0 other, map IoU 1.00``."""
        found = ", ".join(str(g) for g in self.found) or "none"
        return (f"simulated grain {self.grain}: grain {found}, peaks {self.peaks_found} of {self.n_peaks}, "
                f"{self.others} other, map IoU {self.iou:.2f}")


def score_grains(truth: GroundTruth, particles: pd.DataFrame, grains: pd.DataFrame,
                 grain_maps: Mapping[int, np.ndarray], *, radius: float = 2.0) -> list[GrainMatch]:
    """Match each simulated grain with the grains found.

    Parameters
    ----------
    truth : GroundTruth
        The simulated scan's truth (its grains' ``peaks`` and ``footprint``).
    particles : pandas.DataFrame
        The mapped particles: ``particle``, ``y``, ``x`` (detector px).
    grains : pandas.DataFrame
        ``particle`` -> ``grain`` (0: none), as :attr:`RunResults.grains`.
    grain_maps : mapping of int to numpy.ndarray
        Each found grain's map, on the truth's grid (``grid_shape``).
    radius : float
        A particle within this detector distance (px) of a true peak is that peak.

    Returns
    -------
    list of GrainMatch
        One per simulated grain, in the truth's order.

    Examples
    --------
    >>> from streamcrystal.sim import CrystalRod
    >>> truth = CrystalRod((4, 4), (128, 128), n_grains=1, peaks_per_grain=2, min_peak_distance=20, seed=1).truth
    >>> (y0, x0), (y1, x1) = truth.grains[0].peaks
    >>> particles = pd.DataFrame({"particle": [0, 1], "y": [y0, y1], "x": [x0, x1]})
    >>> grains = pd.DataFrame({"particle": [0, 1], "grain": [1, 1]})
    >>> match, = score_grains(truth, particles, grains, {1: truth.grains[0].footprint.astype(float)})
    >>> match.exact, match.line()
    (True, 'simulated grain 0: grain 1, peaks 2 of 2, 0 other, map IoU 1.00')
    """
    grain_of = dict(zip(grains["particle"].to_numpy().tolist(), grains["grain"].to_numpy().tolist()))
    positions = particles[["y", "x"]].to_numpy(dtype=np.float64).reshape(-1, 2)
    ids = particles["particle"].to_numpy()
    matches = []
    for grain in truth.grains:
        mine: set[int] = set()
        peaks_found = 0
        for peak in np.asarray(grain.peaks).reshape(-1, 2):
            near = ids[np.hypot(*(positions - peak).T) < radius] if len(positions) else []
            peaks_found += bool(len(near))
            mine.update(int(p) for p in near)
        found = tuple(sorted({grain_of[p] for p in mine if grain_of.get(p, 0) > 0}))
        members = {p for p, g in grain_of.items() if g in found}
        ious = [_iou(np.asarray(grain_maps[g]) > 0, grain.footprint) for g in found if g in grain_maps]
        matches.append(GrainMatch(grain.index, found, peaks_found, len(grain.peaks), len(members - mine),
                                  max(ious, default=0.0)))
    return matches


def _iou(seen: np.ndarray, footprint: np.ndarray) -> float:
    union = (seen | footprint).sum()
    return float((seen & footprint).sum() / union) if union else 0.0
