"""Placement: points from motor positions, grids, neighbours and scan-order memory."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from bluesky.plan_patterns import spiral, spiral_fermat, spiral_square_pattern
from ophyd.sim import SynAxis

from streamcrystal.science.maps import grid_index, scan_memory
from streamcrystal.science.placement import (Placement, Reading, plan_steps, scan_dimensions,
                                             scan_order_memory)

from .synthetic import grid_positions

GRID_START = {"hints": {"dimensions": [[["sample_y"], "primary"], [["sample_x"], "primary"]]},
              "motors": ["sample_y", "sample_x"], "shape": [5, 6], "extents": [[0, 2], [0, 2.5]],
              "plan_pattern": "outer_product"}


def placed(positions, **options) -> Placement:
    placement = Placement(["sample_y", "sample_x"][-np.shape(positions)[1]:], **options)
    for seq, position in enumerate(positions, 1):
        placement.add(seq, position)
    return placement


def pattern(make, *args, **kwargs) -> np.ndarray:
    """(n, 2) (y, x) positions of a bluesky spiral pattern."""
    x, y = SynAxis(name="sample_x"), SynAxis(name="sample_y")
    return np.array([[point[y], point[x]] for point in make(x, y, *args, **kwargs)])


def test_readback_jitter_never_makes_extra_columns():
    positions = grid_positions((5, 6), [(0, 2), (0, 2.5)], snake=True, jitter=0.02, seed=1)
    for options in ({"steps": plan_steps(GRID_START).steps}, {}, {"precision": 1}):
        placement = placed(positions, **options)
        grid = placement.grid()
        assert placement.n_points == 30 and grid is not None, options
        assert [len(c) for c in grid.coords] == [5, 6]
        assert np.allclose(grid.coords[0], np.linspace(0, 2, 5), atol=0.02)
        assert np.allclose(grid.coords[1], np.linspace(0, 2.5, 6), atol=0.02)


def test_coordinates_are_the_first_reading_of_each_value_and_never_move():
    placement = Placement(["y"], steps=1.0)
    placement.add(1, (0.01,))
    placement.add(2, (1.0,))
    placement.add(3, (0.02,))
    assert placement.coordinates().ravel().tolist() == [0.01, 1.0]
    assert placement.points()["seq_num"].tolist() == [3, 2]


def test_snaking_grid_index_is_grid_scans():
    positions = grid_positions((4, 5), [(0, 3), (0, 4)], snake=True)
    placement = placed(positions)
    assert placement.grid().index.tolist() == grid_index(np.arange(1, 21), (4, 5), (False, True)).tolist()


def test_descending_lists_give_ascending_coordinates():
    positions = np.array(list(itertools.product([3.0, 2.0, 1.0], [2.0, 1.0, 0.0])))
    grid = placed(positions).grid()
    assert [c.tolist() for c in grid.coords] == [[1, 2, 3], [0, 1, 2]]
    assert grid.index[0].tolist() == [2, 2] and grid.index[-1].tolist() == [0, 0]


def test_non_uniform_list_grid_keeps_its_close_values_apart():
    start = {**GRID_START, "plan_pattern": "outer_list_product", "shape": [4, 5], "extents": [[0, 3], [0, 2.5]],
             "plan_pattern_args": {"args": ["SynAxis(name='sample_y')", [0, 0.5, 2, 3],
                                            "SynAxis(name='sample_x')", [0, 0.2, 0.4, 1.5, 2.5]]}}
    steps = plan_steps(start)
    assert steps.steps == (1.5, 1.1) and steps.resolution == (0.5, 0.2)
    placement = Placement.from_start(start)
    assert placement.tolerance == [0.125, 0.05]
    ys, xs = [0, 0.5, 2, 3], [0, 0.2, 0.4, 1.5, 2.5]
    for seq, (y, x) in enumerate(itertools.product(ys, xs), 1):
        placement.add(seq, (y + 0.003, x - 0.003))
    grid = placement.grid()
    assert np.allclose(grid.coords[0], ys, atol=0.01) and np.allclose(grid.coords[1], xs, atol=0.01)
    corner = placement.neighbours(0)  # (0, 0): every point within 1.5 in y and 1.1 in x
    assert sorted(map(tuple, np.round(placement.coordinates()[corner], 2))) == [
        (0.0, 0.2), (0.0, 0.4), (0.5, 0.0), (0.5, 0.2), (0.5, 0.4)]


def test_aborted_scan_is_a_partial_grid():
    positions = grid_positions((4, 5), [(0, 3), (0, 4)], snake=True)[:7]
    grid = placed(positions).grid()
    assert [len(c) for c in grid.coords] == [2, 5]
    assert grid.index.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [1, 4], [1, 3]]


def test_spiral_square_is_a_grid_spirals_are_not():
    square = pattern(spiral_square_pattern, 0, 0, 2, 2, 5, 5)
    assert placed(square).grid() is not None and placed(square).grid().index.max(axis=0).tolist() == [4, 4]
    assert placed(square[:12]).grid() is not None  # aborted: a partial grid still
    for points in (pattern(spiral, 0, 0, 2, 2, 0.5, 3), pattern(spiral_fermat, 0, 0, 2, 2, 0.5, 1)):
        placement = placed(points, steps=0.5)
        assert placement.n_points == len(points) and not placement.is_grid() and placement.grid() is None
        assert np.allclose(placement.coordinates(), points)


def test_a_point_read_again_supersedes_its_earlier_reading():
    placement = Placement(["y", "x"], steps=1.0)
    assert [placement.add(s, (0, x)).supersedes for s, x in [(1, 0), (2, 1)]] == [(), ()]
    assert placement.add(2, (0, 1.001)) == (1, (Reading(1, 2),))          # same seq_num, same point (pause)
    assert placement.add(3, (0, 0)) == (0, (Reading(0, 1),))              # second pass over a point
    assert placement.add(3, (0, 2)) == (2, (Reading(0, 3),))              # same seq_num elsewhere
    assert placement.points()["seq_num"].tolist() == [-1, 2, 3]


def test_neighbours_are_the_eight_around_a_grid_point_whatever_the_order():
    positions = grid_positions((4, 5), [(0, 1.5), (0, 2)])
    reference = None
    for seed in range(4):
        order = np.random.default_rng(seed).permutation(len(positions)) if seed else np.arange(len(positions))
        placement = placed(positions[order], steps=[0.5, 0.5])
        coords = placement.coordinates()
        pairs = {frozenset((tuple(coords[p]), tuple(coords[q]))) for p in range(placement.n_points)
                 for q in placement.neighbours(p)}
        reference = reference or pairs
        assert pairs == reference
    centre = [tuple(c) for c in coords].index((0.5, 1.0))
    assert len(placement.neighbours(centre)) == 8


def test_steps_learned_in_scan_order():
    placement = placed(grid_positions((3, 4), [(0, 1), (0, 3)], snake=True, jitter=0.01), precision=2)
    assert np.allclose(placement.steps, (0.5, 1.0), atol=0.03)
    assert [len(placement.neighbours(p)) for p in (0, 5)] == [3, 8]


@pytest.mark.parametrize("shape", [(16, 12), (3, 4), (5, 2), (1, 6)])
@pytest.mark.parametrize("snake", [False, True])
def test_memory_from_positions_is_scan_memory_on_grid_scans(shape, snake):
    positions = grid_positions(shape, [(0, 1), (0, 2)], snake=snake, jitter=1e-4)
    placement = placed(positions, steps=[1 / max(shape[0] - 1, 1), 2 / (shape[1] - 1)])
    assert scan_order_memory(placement) == scan_memory(shape, (False, snake))


def test_memory_of_a_one_dimensional_scan_is_zero():
    assert scan_order_memory(placed(np.linspace(0, 1, 5)[:, None])) == 0


def test_scan_dimensions_and_steps_of_bluesky_start_documents():
    assert scan_dimensions(GRID_START) == ["sample_y", "sample_x"]
    assert plan_steps(GRID_START).steps == (0.5, 0.5)
    list_scan = {"hints": {"dimensions": [[["sample_y", "sample_x"], "primary"]]}, "plan_pattern": "inner_list_product",
                 "plan_pattern_args": {"args": ["SynAxis(name='sample_y')", [0, 1, 2], "SynAxis(name='sample_x')", [0, 0.5, 3]]}}
    assert scan_dimensions(list_scan) == ["sample_y", "sample_x"] and plan_steps(list_scan).steps == (2.5, 2.5)
    assert plan_steps(list_scan).resolution == (1.0, 1.0)
    spiral_start = {"hints": {"dimensions": [[["sample_x"], "primary"], [["sample_y"], "primary"]]}, "plan_pattern": "spiral",
                    "plan_pattern_args": {"x_motor": "SynAxis(name='sample_x')", "y_motor": "SynAxis(name='sample_y')",
                                          "dr": 0.5, "nth": 6, "dr_y": 1.0}}
    steps = plan_steps(spiral_start)
    assert steps.steps == pytest.approx((0.5644, 1.1288), abs=1e-4) and steps.resolution == pytest.approx((0.5, 1.0))
    assert scan_dimensions({"hints": {"dimensions": [[["time"], "primary"]]}, "motors": []}) is None
    assert Placement.from_start({"plan_name": "count"}) is None


def test_bad_positions_say_what_and_how():
    placement = Placement(["sample_y", "sample_x"])
    with pytest.raises(ValueError, match=r"seq_num 7: .*one finite number per dimension \['sample_y', 'sample_x'\]"):
        placement.add(7, (0.0, float("nan")))
    with pytest.raises(ValueError, match="steps has 3 entries for 2 scan dimensions"):
        Placement(["sample_y", "sample_x"], steps=[1, 2, 3])
