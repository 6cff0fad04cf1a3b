"""Sample-space linking: incremental equals batch whatever the order; merges, splits, supersedes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamcrystal.science.linking import SampleLinker, link_sample_space
from streamcrystal.science.placement import Placement

from .synthetic import as_table, grain_scan, partition


def place(positions) -> tuple[Placement, list[int]]:
    placement = Placement(["y", "x"], steps=1.0)
    return placement, [placement.add(seq, p).point for seq, p in enumerate(positions, 1)]


def run_live(placement, points, features, order) -> tuple[SampleLinker, dict]:
    """Add the readings in ``order``; check that ids given never change except through the
    merges reported; return the linker and the ids first given to each (point, feature)."""
    linker = SampleLinker(placement.neighbours, search_range=3)
    given, renamed = {}, {}
    for k in order:
        update = linker.add(points[k], features[k])
        assert not update.split
        for gone, kept in update.merged.items():
            assert kept < gone
            renamed[gone] = kept
        given.update({(points[k], i): int(p) for i, p in enumerate(update.particles)})
    final = lambda pid: final(renamed[pid]) if pid in renamed else pid  # noqa: E731
    labels = linker.labels()
    assert [final(given[(p, f)]) for p, f in zip(labels["point"], labels["feature"])] == labels["particle"].tolist()
    return linker, given


@pytest.mark.parametrize("seed", range(3))
def test_live_equals_batch_whatever_the_visiting_order(seed):
    positions, features, truth = grain_scan(seed=seed)
    placement, points = place(positions)
    batch = link_sample_space(as_table(points, features), 3, neighbours=placement.neighbours)
    assert batch["particle"].dtype == np.int64
    expected = partition(batch)
    for order_seed in range(4):
        order = np.random.default_rng(order_seed).permutation(len(points)) if order_seed else np.arange(len(points))
        linker, _ = run_live(placement, points, features, order)
        assert partition(linker.labels()) == expected
        shuffled = as_table(points, features).sample(frac=1, random_state=order_seed)
        assert partition(link_sample_space(shuffled, 3, neighbours=placement.neighbours)) == expected


def test_each_grain_peak_is_one_particle_and_noise_stays_alone():
    positions, features, truth = grain_scan(seed=5, noise_per_point=1)
    placement, points = place(positions)
    table = as_table(points, features)
    table["grain_peak"] = [label for labels in truth for label in labels]
    tracks = link_sample_space(table, 3, neighbours=placement.neighbours)
    for (grain, peak), group in tracks.groupby("grain_peak"):
        if grain >= 0:
            assert group["particle"].nunique() == 1, (grain, peak)
            assert set(tracks.loc[tracks["particle"] == group["particle"].iloc[0], "grain_peak"]) == {(grain, peak)}


def test_a_bridge_is_reported_as_a_merge_into_the_smallest_id():
    placement, points = place([(0, 0), (0, 2), (0, 1)])
    linker = SampleLinker(placement.neighbours, search_range=2)
    assert linker.add(points[0], [[10, 10]]).particles.tolist() == [0]
    assert linker.add(points[1], [[10, 11], [40, 40]]).particles.tolist() == [1, 2]
    update = linker.add(points[2], [[10, 10.5], [40, 41]])
    assert update.particles.tolist() == [0, 2] and update.merged == {1: 0} and not update.split
    assert linker.labels()["particle"].tolist() == [0, 0, 2, 0, 2]


def test_a_retaken_point_gives_no_extra_particle_and_changes_no_id():
    positions, features, _ = grain_scan(seed=1)
    placement, points = place(positions)
    linker = SampleLinker(placement.neighbours, search_range=3)
    for point, yx in zip(points[:40], features[:40]):
        linker.add(point, yx)
    before = linker.labels()
    again = placement.add(40, positions[39])           # the pause: seq_num 40 read again
    assert again.point == points[39] and again.supersedes == ((points[39], 40),)
    update = linker.add(again.point, features[39] + 0.1)
    assert not update.merged and not update.split
    pd.testing.assert_frame_equal(linker.labels(), before)


def test_a_superseded_reading_never_holds_two_features_of_one_point_together():
    # a noise feature between two peaks, seen in the first reading of the middle point only
    placement, points = place([(0, 0), (0, 1), (0, 2)])
    linker = SampleLinker(placement.neighbours, search_range=3)
    linker.add(points[0], [[10, 10], [10, 14]])
    linker.add(points[2], [[10, 10], [10, 14]])
    update = linker.add(points[1], [[10, 12]])          # within 3 px of both peaks: one particle
    assert update.merged == {1: 0, 2: 0, 3: 0} and linker.labels()["particle"].nunique() == 1
    update = linker.add(points[1], [[10, 10], [10, 14]])  # read again: two clean peaks
    assert update.split == {0: (0, 4)} and not update.merged  # ids are never reused: 4 is new
    labels = linker.labels()
    assert labels.groupby("particle")["point"].apply(lambda p: p.is_unique).all()
    tracks = link_sample_space(as_table(points, [[[10, 10], [10, 14]]] * 3), 3, neighbours=placement.neighbours)
    assert partition(labels) == partition(tracks)


def test_a_split_healed_by_the_new_reading_is_not_reported():
    placement, points = place([(0, 0), (0, 1), (0, 2)])
    linker = SampleLinker(placement.neighbours, search_range=3)
    for point in points:
        linker.add(point, [[10, 10]])
    update = linker.add(points[1], [[10, 11]])
    assert not update.split and not update.merged and update.particles.tolist() == [0]
    update = linker.discard(points[1])
    assert update.split == {0: (0, 1)}
    assert linker.labels()["particle"].tolist() == [0, 1]


def test_batch_refuses_two_readings_of_one_point():
    table = pd.DataFrame({"y": [1.0, 1.0], "x": [2.0, 2.0], "point": [3, 3], "frame": [6, 13]})
    with pytest.raises(ValueError, match=r"point 3 has features of frames \[6, 13\].*drop the superseded"):
        link_sample_space(table, 3, neighbours=lambda p: [])


def test_empty_readings_and_tables():
    linker = SampleLinker(lambda p: [0, 1], search_range=3)
    assert linker.add(0, np.empty((0, 2))).particles.tolist() == []
    assert linker.add(1, [[1, 1]]).particles.tolist() == [0]
    empty = link_sample_space(pd.DataFrame({"y": [], "x": [], "point": []}), 3, neighbours=lambda p: [])
    assert empty["particle"].dtype == np.int64 and len(empty) == 0
    with pytest.raises(ValueError, match=r"point 2: features must be an \(n, 2\) array"):
        linker.add(2, [[1, 2, 3]])
