"""score_grains: what it says of a grouping, checked on groupings made by hand from the truth."""
from __future__ import annotations

import pandas as pd

from streamcrystal.sim import CrystalRod, score_grains


def truth_and_particles():
    truth = CrystalRod((10, 8), (256, 256), n_grains=2, peaks_per_grain=2, min_peak_distance=40, seed=3).truth
    rows = [(k, *peak, grain.index) for k, (grain, peak) in
            enumerate((grain, peak) for grain in truth.grains for peak in grain.peaks)]
    particles = pd.DataFrame(rows, columns=["particle", "y", "x", "true_grain"])
    return truth, particles


def maps_of(truth, grains_of_truth):
    return {label: sum(truth.grains[g].footprint.astype(float) for g in members)
            for label, members in grains_of_truth.items()}


def test_the_true_grouping_is_exact():
    truth, particles = truth_and_particles()
    grains = particles.assign(grain=particles["true_grain"] + 1)
    matches = score_grains(truth, particles, grains, maps_of(truth, {1: [0], 2: [1]}))
    assert [m.exact for m in matches] == [True, True] and [m.iou for m in matches] == [1.0, 1.0]


def test_two_grains_merged_count_the_others_peaks():
    truth, particles = truth_and_particles()
    grains = particles.assign(grain=1)
    matches = score_grains(truth, particles, grains, maps_of(truth, {1: [0, 1]}))
    assert [m.others for m in matches] == [2, 2] and not any(m.exact for m in matches)
    assert all(m.iou < 1.0 for m in matches)


def test_a_split_grain_is_found_twice_and_a_missing_peak_is_counted():
    truth, particles = truth_and_particles()
    grains = particles.assign(grain=[1, 2, 3, 3])  # grain 0's two peaks in two grains
    matches = score_grains(truth, particles.iloc[:3], grains.iloc[:3], maps_of(truth, {1: [0], 2: [0], 3: [1]}))
    assert matches[0].found == (1, 2) and not matches[0].exact
    assert (matches[1].peaks_found, matches[1].n_peaks, matches[1].exact) == (1, 2, False)
