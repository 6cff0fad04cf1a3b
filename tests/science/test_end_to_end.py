"""End to end: a real RunEngine runs bluesky's own plans over the simulated rod (a detector that
sees the sample where the motors are); the peaks of each frame are located with
``trackpy.locate``, placed and linked in sample space as the events arrive, and checked against
the simulator's truth: each grain's peak is one particle, seen exactly at the visited positions
where the grain is, at the recorded coordinates."""
from __future__ import annotations

import functools

import pytest

from streamcrystal.science.linking import link_sample_space
from streamcrystal.science.placement import Reading

from .plans import SEARCH_RANGE, grain_outcome, plans, run_plan
from .synthetic import partition

GRIDS = {"grid_scan": (7, 10), "grid_scan snake": (7, 10), "rel_grid_scan": (7, 10), "list_grid_scan": (4, 5),
         "list_grid_scan descending": (6, 7), "scan": (19,), "spiral_square": (7, 10), "scan_nd": (7, 10),
         "grid_scan paused": (7, 10)}


@functools.lru_cache(maxsize=None)
def _run(name: str):
    return name, run_plan(name)


@pytest.fixture(params=list(plans(None, None, None)))
def run(request):
    return _run(request.param)


def test_each_grain_peak_is_one_particle_where_the_grain_is(run):
    name, run = run
    tracks = run.linker.labels().merge(run.features(), on=["point", "feature"])
    outcomes = grain_outcome(run, tracks)
    assert sum(bool(o["covered"]) for o in outcomes) >= (2 if name == "scan" else 3)
    for outcome in outcomes:
        assert outcome["found"] == outcome["covered"], (name, outcome)
        assert len(outcome["particles"]) == outcome["patches"] == (1 if outcome["covered"] else 0), (name, outcome)
        assert outcome["foreign"] == 0, (name, outcome)


def test_live_linking_equals_batch_linking(run):
    name, run = run
    features = run.features()
    batch = link_sample_space(features, SEARCH_RANGE, neighbours=run.placement.neighbours)
    assert partition(batch) == partition(run.linker.labels())


def test_points_are_at_the_recorded_positions_and_grids_are_found(run):
    name, run = run
    coords = run.placement.coordinates()
    for point, (seq_num, (y, x), _) in run.readings.items():
        recorded = dict(zip(("sample_y", "sample_x"), (y, x)))
        assert coords[point] == pytest.approx([recorded[d] for d in run.placement.dimensions], abs=1e-9)
    grid = run.placement.grid()
    if name in GRIDS:
        shape = dict(zip(run.placement.dimensions, (len(c) for c in grid.coords)))
        assert tuple(shape.get(d, 1) for d in ("sample_y", "sample_x") if d in shape) == GRIDS[name]
    else:
        assert grid is None


def test_list_grid_scan_keeps_its_non_uniform_coordinates():
    name, run = _run("list_grid_scan")
    grid = run.placement.grid()
    assert [c.tolist() for c in grid.coords] == [[0, 0.5, 2, 3], [0, 0.2, 0.4, 1.5, 2.5]]
    assert dict(zip(run.placement.dimensions, run.placement.steps)) == {"sample_y": 1.5, "sample_x": 1.1}


def test_a_paused_scan_retakes_one_point_that_supersedes_the_first_reading():
    name, run = _run("grid_scan paused")
    assert run.seq_nums[:24] == list(range(1, 25)) and run.seq_nums[24] == 24 and len(run.seq_nums) == 71
    point = next(p for p, r in run.readings.items() if r[0] == 24)
    assert run.superseded == [Reading(point, 24)]
    assert run.placement.n_points == 70 and len(run.readings) == 70
