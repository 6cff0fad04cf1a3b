"""How often :func:`streamcrystal.science.grains.group_grains` finds the true grains: the test
scenarios of ``tests/science/test_grains.py`` over many seeds (textures, structure factors,
noise, fragment positions; the rod's geometry too).

Run from the repository root: ``python -m benchmarks.grains_quality --seeds 50``. For each
scenario: the runs whose grains are exactly the truth (each grain once, with exactly its own
peaks, fragments joined), the runs with a merge (a found grain holding two true grains) or a
split (a true grain in several found grains), the smallest grain-map IoU with the true footprint
(grains whose every peak dips on a band excepted: nothing saw the band), over all runs and
over the exact runs, and the Pearson r of
true peak pairs that pass the overlap test (same grain: lowest; different grains: highest),
computed here with numpy on the truth's own peaks, next to ``min_correlation``.
"""
from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from streamcrystal.science.grains import DEFAULTS, group_grains


def _scenarios(real):
    from tests.science import test_grains as t

    return {
        "rod 30x20, 6 grains x 3 peaks, 3 dipping (noise 5 %)": lambda s: t.rod_scenario(s),
        "rod 30x20, same, noise 10 %": lambda s: t.rod_scenario(s, noise=0.10),
        "demo rod 16x12, 6 x 3, no dips": t.demo_rod_scenario,
        "two touching grains, shared pixel, both dipping": t.touching_scenario,
        "big + crossing + hidden grain": t.overlapping_scenario,
        "1-peak grain (3 fragments) crossing a 6-peak grain": t.one_and_six_scenario,
        "1-peak grain at a pixel of a touching 6-peak grain": t.one_at_pixel_scenario,
        "real grains, 3-5 fragments each": lambda s: t.real_fragments_scenario(real, s),
        "real grains, 3 noisy peaks each (10 %), dipping": lambda s: t.real_peaks_scenario(real, s),
    }


def _pearson_of_true_peaks(particles, thresholds):
    """r over the common points of every pair of true peaks (fragments summed) sharing
    >= min_overlap of the smaller footprint and >= min_points points: (same-grain r's, different-grain r's)."""
    peaks = np.unique(particles.peak)
    maps = np.array([particles.maps[particles.peak == p].sum(axis=0).ravel() for p in peaks])
    grain = np.array([particles.grain[particles.peak == p][0] for p in peaks])
    same, other = [], []
    for a, b in itertools.combinations(range(len(peaks)), 2):
        common = (maps[a] > 0) & (maps[b] > 0)
        smaller = min((maps[a] > 0).sum(), (maps[b] > 0).sum())
        if common.sum() < max(thresholds["min_points"], thresholds["min_overlap"] * smaller):
            continue
        r = np.corrcoef(maps[a][common], maps[b][common])[0, 1]
        (same if grain[a] == grain[b] else other).append(r)
    return same, other


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50, help="seeds per scenario (default 50)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a threshold of group_grains other than its default, e.g. min_correlation=0.6 "
                             f"(keys: {', '.join(DEFAULTS)})")
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this text")
    args = parser.parse_args(argv)
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            parser.error(f"--option {item}: unknown key {key!r}; choose from {', '.join(DEFAULTS)}")
        options[key] = float(value)
    thresholds = {**DEFAULTS, **options}
    real = __import__("tests.science.test_grains", fromlist=["load_real"]).load_real()
    print(f"{'scenario':52s} {'exact':>7s} {'merged':>6s} {'split':>6s} {'min IoU':>7s} {'(exact)':>7s} "
          f"{'r same min':>10s} {'r other max':>11s}")
    for name, build in _scenarios(real).items():
        if args.only not in name:
            continue
        exact = merged = split = 0
        ious, exact_ious, same, other = [], [], [], []
        for seed in range(args.seeds):
            scenario = build(seed)
            particles = scenario.particles
            found = group_grains(particles.maps, particles.positions, **options)
            truth_sets = {frozenset(np.flatnonzero(particles.grain == k)) for k in np.unique(particles.grain)}
            found_sets = {frozenset(np.flatnonzero(found.labels == g)) for g in np.unique(found.labels)}
            peak_sets = {frozenset(np.flatnonzero(particles.peak == p)) for p in np.unique(particles.peak)}
            refl_sets = {frozenset(np.flatnonzero(found.reflections == r)) for r in np.unique(found.reflections)}
            is_exact = found_sets == truth_sets and refl_sets == peak_sets
            exact += is_exact
            merged += any(len({particles.grain[i] for i in f}) > 1 for f in found_sets)
            split += any(len({found.labels[i] for i in t}) > 1 for t in truth_sets)
            for k, footprint in enumerate(scenario.footprints):
                if k in scenario.unseen:
                    continue
                counts = np.bincount(found.labels[particles.grain == k])
                support = found.maps[counts.argmax() - 1].reshape(footprint.shape) > 0
                ious.append((support & footprint).sum() / (support | footprint).sum())
                if is_exact:
                    exact_ious.append(ious[-1])
            s, o = _pearson_of_true_peaks(particles, thresholds)
            same += s
            other += o
        fmt = lambda values, f: f"{f(values):.2f}" if values else "-"  # noqa: E731
        print(f"{name:52s} {exact:3d}/{args.seeds:<3d} {merged:6d} {split:6d} {fmt(ious, min):>7s} "
              f"{fmt(exact_ious, min):>7s} "
              f"{fmt(same, min):>10s} {fmt(other, max):>11s}")
    print(f"(thresholds {thresholds}; r over true peak pairs sharing >= min_overlap of the smaller footprint "
          f"and >= min_points points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
