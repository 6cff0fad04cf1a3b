"""Grid placement and crystal maps.

The placement conventions are checked against a real bluesky ``grid_scan``: for every event,
the grid point that ``grid_index`` gives for its ``seq_num`` must have, in ``grid_coords``,
exactly the motor positions the RunEngine recorded in that event.
"""
import logging

import numpy as np
import pandas as pd
import pytest

from streamcrystal.science.maps import (
    crystal_maps, grid_coords, grid_index, grid_of, maps_to_xarray, place_on_grid, scan_memory,
)


@pytest.fixture(scope="module")
def run_engine():
    from bluesky import RunEngine

    return RunEngine({})


def grid_scan_documents(run_engine, *args, snake_axes):
    import bluesky.plans as bp
    from ophyd.sim import det

    docs = []
    run_engine(bp.grid_scan([det], *args, snake_axes=snake_axes), lambda name, doc: docs.append((name, doc)))
    start = next(doc for name, doc in docs if name == "start")
    events = [doc for name, doc in docs if name == "event"]
    return start, events


def scan_cases():
    from ophyd.sim import motor1, motor2, motor3

    return {
        "2d-snaking": ((motor1, 0, 1, 3, motor2, 0, 2, 4), True, (False, True)),
        "2d-straight": ((motor1, 0, 1, 3, motor2, 0, 2, 4), False, (False, False)),
        # 3 passes of motor2 per motor1 step: motor3's direction follows the pass count
        # i * 3 + j, not j alone, so this case tells the two rules apart.
        "3d-snaking": ((motor1, 0, 1, 2, motor2, 0, 2, 3, motor3, -1, 3, 4), True, (False, True, True)),
        "3d-last-axis-snakes": ((motor1, 0, 1, 2, motor2, 0, 2, 3, motor3, -1, 3, 4), [motor3], (False, False, True)),
    }


@pytest.mark.parametrize("case", list(scan_cases()))
def test_grid_index_matches_motor_positions_of_a_real_grid_scan(run_engine, case):
    args, snake_axes, expected_snaking = scan_cases()[case]
    start, events = grid_scan_documents(run_engine, *args, snake_axes=snake_axes)
    shape, snaking, extents, dims = grid_of(start)
    assert snaking == expected_snaking
    assert dims == tuple(m.name for m in args[::4])
    assert len(events) == np.prod(shape)

    seq_nums = [event["seq_num"] for event in events]
    index = grid_index(seq_nums, shape, snaking)
    coords = grid_coords(shape, extents)
    recorded = np.array([[event["data"][motor] for motor in dims] for event in events])
    placed = np.array([[coords[axis][i] for axis, i in enumerate(row)] for row in index])
    np.testing.assert_allclose(placed, recorded, atol=1e-12)
    # every grid point is visited exactly once
    assert len({tuple(row) for row in index}) == len(events)


@pytest.mark.parametrize("case", list(scan_cases()))
def test_scan_memory_is_the_longest_absence_between_neighbours_of_a_real_grid_scan(run_engine, case):
    # Reference from the RunEngine's own motor readings: two events are neighbours when their
    # recorded positions differ by one step along one axis; between them the scan takes
    # |seq_num difference| - 1 other frames, and memory must bridge the longest such gap.
    args, snake_axes, _ = scan_cases()[case]
    start, events = grid_scan_documents(run_engine, *args, snake_axes=snake_axes)
    shape, snaking, extents, dims = grid_of(start)
    steps = [(stop - begin) / (n - 1) for (begin, stop), n in zip(extents, shape)]
    position = {e["seq_num"]: np.array([e["data"][m] for m in dims]) / steps for e in events}
    longest = 0
    for a, pa in position.items():
        for b, pb in position.items():
            if a < b and np.isclose(np.abs(pa - pb).sum(), 1.0):
                longest = max(longest, b - a - 1)
    assert scan_memory(shape, snaking) == longest


def test_scan_memory_of_a_1d_scan_is_zero_and_snaking_doubles_a_rows_gap():
    assert scan_memory((7,)) == 0
    assert scan_memory((4, 12), (False, False)) == 11
    assert scan_memory((4, 12), (False, True)) == 22


def test_a_snaking_3d_scan_really_reverses_on_odd_pass_counts(run_engine):
    # guard: the 3-D case above is only discriminating if the scan reverses where j is even
    args, snake_axes, _ = scan_cases()["3d-snaking"]
    start, events = grid_scan_documents(run_engine, *args, snake_axes=snake_axes)
    first_of_pass_3 = events[3 * 4]  # pass i=1, j=0 (motor2 reversed there too)
    assert first_of_pass_3["data"]["motor1"] == 1.0
    assert first_of_pass_3["data"]["motor3"] == 3.0  # motor3 starts from its stop: reversed


def test_grid_index_rejects_seq_nums_outside_the_grid_naming_them():
    with pytest.raises(ValueError, match=r"seq_num 13 .*1\.\.12"):
        grid_index([1, 13], (3, 4))
    with pytest.raises(ValueError, match="seq_num 0 .*1-based"):
        grid_index([0], (3, 4))
    with pytest.raises(ValueError, match="one flag per axis"):
        grid_index([1], (3, 4), (True,))


def test_place_on_grid_snakes_and_leaves_zeros():
    grid = place_on_grid([1, 4, 5, 8, 12], [1.0, 4.0, 5.0, 8.0, 12.0], (3, 4), (False, True))
    expected = np.array([
        [1.0, 0.0, 0.0, 4.0],
        [8.0, 0.0, 0.0, 5.0],  # second row runs backwards: seq 5 at the right end
        [0.0, 0.0, 0.0, 12.0],
    ])
    np.testing.assert_array_equal(grid, expected)
    assert grid.dtype == np.float64


def test_place_on_grid_refuses_two_values_for_one_point():
    with pytest.raises(ValueError, match="seq_num 2 is given 2 values"):
        place_on_grid([1, 2, 2], [1.0, 2.0, 3.0], (2, 2))
    with pytest.raises(ValueError, match="2 values for 3 seq_nums"):
        place_on_grid([1, 2, 3], [1.0, 2.0], (2, 2))


@pytest.fixture
def tracks():
    # grid (3, 4), second row snaking; particle 1 only on one frame
    return pd.DataFrame({
        "frame":    [1,    2,    5,    6,    2,    9,    10],
        "particle": [0,    0,    0,    0,    1,    2,    2],
        "y":        [10.0, 12.0, 14.0, 16.0, 50.0, 80.0, 81.0],
        "x":        [20.0, 20.0, 21.0, 23.0, 60.0, 90.0, 92.0],
        "mass":     [1.0,  2.0,  5.0,  6.0,  7.0,  9.0,  10.0],
        "signal":   [0.1,  0.2,  0.5,  0.6,  0.7,  0.9,  1.0],
    })


def test_crystal_maps_places_each_particles_intensity(tracks):
    particles, maps = crystal_maps(tracks, (3, 4), (False, True), min_frames=2)
    assert list(particles.columns) == ["particle", "y", "x", "n_frames", "total_intensity"]
    assert particles["particle"].tolist() == [0, 2]  # particle 1 seen on one frame only
    np.testing.assert_allclose(particles["y"], [13.0, 80.5])
    np.testing.assert_allclose(particles["x"], [21.0, 91.0])
    assert particles["n_frames"].tolist() == [4, 2]
    np.testing.assert_allclose(particles["total_intensity"], [14.0, 19.0])
    assert maps.shape == (2, 3, 4) and maps.dtype == np.float64
    np.testing.assert_array_equal(maps[0], [[1, 2, 0, 0], [0, 0, 6, 5], [0, 0, 0, 0]])
    np.testing.assert_array_equal(maps[1], [[0, 0, 0, 0], [0, 0, 0, 0], [9, 10, 0, 0]])


def test_crystal_maps_other_intensity_and_no_filtering(tracks):
    particles, maps = crystal_maps(tracks, (3, 4), (False, True), intensity="signal")
    assert particles["particle"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(maps[1], [[0, 0.7, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_frames_beyond_the_grid_are_dropped_with_a_warning(tracks, caplog):
    beyond = pd.concat([tracks, tracks.iloc[[0]].assign(frame=13, mass=100.0)], ignore_index=True)
    caplog.set_level(logging.WARNING, logger="streamcrystal")
    particles, maps = crystal_maps(beyond, (3, 4), (False, True), min_frames=2)
    messages = [r.getMessage() for r in caplog.records if r.name == "streamcrystal"]
    assert len(messages) == 1 and "[13]" in messages[0] and "(3, 4)" in messages[0]
    assert particles["n_frames"].tolist() == [4, 2]
    assert maps[0].sum() == 14.0  # the dropped feature's mass is nowhere


def test_bad_intensity_column_names_the_valid_choices(tracks):
    with pytest.raises(KeyError, match=r"intensity column 'bogus'.*valid choices.*'mass'.*'signal'"):
        crystal_maps(tracks, (3, 4), intensity="bogus")
    with pytest.raises(ValueError, match="'bogus'"):  # also a ValueError, for callers catching that
        crystal_maps(tracks, (3, 4), intensity="bogus")


def test_a_particle_twice_on_one_frame_is_an_error_naming_it(tracks):
    doubled = pd.concat([tracks, tracks.iloc[[5]]], ignore_index=True)
    with pytest.raises(ValueError, match="particle 2: seq_num 9"):
        crystal_maps(doubled, (3, 4))


def test_empty_tracks_give_empty_particles_and_maps(tracks):
    particles, maps = crystal_maps(tracks.iloc[:0], (3, 4), (False, True))
    assert list(particles.columns) == ["particle", "y", "x", "n_frames", "total_intensity"]
    assert len(particles) == 0 and maps.shape == (0, 3, 4)
    particles, maps = crystal_maps(tracks, (3, 4), min_frames=99)
    assert len(particles) == 0 and maps.shape == (0, 3, 4)


def test_grid_of_a_run_without_shape_is_1d():
    assert grid_of({"plan_name": "count", "motors": ["motor1"]}, num_events=7) == ((7,), (False,), None, ("seq_num",))


def test_grid_of_defaults_and_inconsistent_start_documents():
    shape, snaking, extents, dims = grid_of({"shape": [3, 4], "motors": ["only_one"]})
    assert (shape, snaking, extents, dims) == ((3, 4), (False, False), None, ("dim_0", "dim_1"))
    with pytest.raises(ValueError, match="'snaking'.*3 entries.*'shape'"):
        grid_of({"shape": [3, 4], "snaking": [False, True, True]})
    with pytest.raises(ValueError, match="'extents' has 1 entries"):
        grid_of({"shape": [3, 4], "extents": [[0, 1]]})


def test_maps_to_xarray_coordinates(tracks):
    particles, maps = crystal_maps(tracks, (3, 4), (False, True), min_frames=2)
    da = maps_to_xarray(particles, maps, extents=((0, 1), (0, 2)), dims=("motor1", "motor2"))
    assert da.name == "crystal_map" and da.dims == ("particle", "motor1", "motor2")
    np.testing.assert_allclose(da.coords["motor1"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(da.coords["motor2"], [0.0, 2 / 3, 4 / 3, 2.0])
    assert da.coords["particle"].values.tolist() == [0, 2]
    for name in ("y", "x", "n_frames"):
        assert da.coords[name].dims == ("particle",)
    np.testing.assert_allclose(da.coords["y"], [13.0, 80.5])
    # motor positions select the map value placed there
    assert da.sel(particle=2, motor1=1.0, motor2=2 / 3).item() == 10.0

    plain = maps_to_xarray(particles, maps)
    assert plain.dims == ("particle", "dim_0", "dim_1")
    assert plain.coords["dim_1"].values.tolist() == [0, 1, 2, 3]
    # a grid dim named like a particle coordinate does not clash with it
    clash = maps_to_xarray(particles, maps, dims=("y", "x"))
    np.testing.assert_allclose(clash.coords["peak_y"], [13.0, 80.5])
    with pytest.raises(ValueError, match="do not match 3 particles"):
        maps_to_xarray(particles.iloc[[0, 0, 1]], maps)
