"""Maps of real scans: a real RunEngine runs bluesky's own plans over the simulated rod (a detector
that sees the sample where the motors are) with the pipeline subscribed; each grain's map must be
non-zero exactly where the simulator says the grain is, at the positions the motors recorded, and
each grain must be one particle, for every plan, through a pause, with masked pixels."""
from __future__ import annotations

import functools
import logging

import numpy as np
import pandas as pd
import pytest
import trackpy
from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted

import streamcrystal
from streamcrystal.science.maps import crystal_maps
from streamcrystal.sim import CrystalRod, make_devices, simulate_scan
from tests.helpers.rawruns import DATA_KEY, compose_raw_run, spot_frames
from tests.science.plans import LOCATE, MAXSIZE, MINMASS, NEAR, ROD, SEARCH_RANGE, plans

PLANS = list(plans(None, None, None))
NOT_GRIDS = {"list_scan", "spiral", "spiral_fermat"}


def pipeline(rod: CrystalRod, **options):
    background = rod.frames_at(6.0, 0.0, np.random.default_rng(99))  # an air point, below the rod
    return streamcrystal.peak_tracking("dexela_image", subtrahend=background, search_range=SEARCH_RANGE,
                                       minmass=MINMASS, maxsize=MAXSIZE, **LOCATE, **options)


@functools.lru_cache(maxsize=None)
def served(name: str, linking: str = "sample"):
    """The plan ``name`` run over the rod with a pipeline subscribed: (rod, results, documents)."""
    rod = CrystalRod(**ROD, seed=2)
    y, x, dexela = make_devices(rod, continuous=True)
    pipe = pipeline(rod, linking=linking, **({"memory": "grid"} if linking == "trackpy" else {}))
    out = []
    pipe.subscribe(lambda kind, doc: out.append((kind, doc)))
    RE = RunEngine({})
    RE.subscribe(pipe)
    try:
        RE(plans([dexela], y, x)[name]())
    except RunEngineInterrupted:  # the paused plan
        RE.resume()
    return rod, pipe.results(), out


def grain_particles(rod: CrystalRod, results, grain) -> set[int]:
    """The particles holding features at the grain's (one) Bragg peak."""
    tracks = results.tracks
    near = np.hypot(tracks["y"] - grain.peaks[0][0], tracks["x"] - grain.peaks[0][1]) < NEAR
    return set(tracks.loc[near, "particle"])


def map_points(results, particle: int) -> set[int]:
    """The points where the particle's map is non-zero."""
    values = results.maps.sel(particle=particle)
    points = results.points
    if "point" in values.dims:
        return set(points["point"][values.values[points["point"]] > 0])
    dims = values.dims
    index = tuple(points[f"index_{d}"].to_numpy() for d in dims)
    return set(points["point"][values.values[index] > 0])


@pytest.mark.slow
@pytest.mark.parametrize("name", PLANS)
def test_each_grain_is_one_particle_mapped_exactly_where_the_sample_was(name):
    rod, results, _ = served(name)
    points = results.points
    y = points["sample_y"].to_numpy() if "sample_y" in points else np.full(len(points), 1.5)  # scan: y was moved to 1.5
    covers = rod.grains_at(y, points["sample_x"].to_numpy())
    seen = 0
    for grain in rod.truth.grains:
        where = set(points["point"][covers[:, grain.index]])
        particles = grain_particles(rod, results, grain)
        if not where:
            assert not particles, (name, grain.index)
            continue
        seen += 1
        assert len(particles) == 1, (name, grain.index, particles)
        assert map_points(results, particles.pop()) == where, (name, grain.index)
    assert seen >= (2 if name == "scan" else 3)
    assert results.placement["method"] == "positions" and results.failure is None


@pytest.mark.slow
@pytest.mark.parametrize("name", PLANS)
def test_maps_carry_the_positions_the_motors_recorded(name):
    rod, results, docs = served(name)
    recorded = pd.DataFrame([d["data"] for kind, d in docs if kind == "event" and d["descriptor"] in {
        x["uid"] for k, x in docs if k == "descriptor" and x["name"] == "frames"}])
    current = recorded[~recorded["reading"].isin(results.frames.loc[results.frames["superseded"], "reading"])]
    dims = [d for d in ("sample_y", "sample_x") if d in results.points]
    assert set(map(tuple, current[dims].round(9).to_numpy())) == set(map(tuple, results.points[dims].round(9).to_numpy()))
    maps = results.maps
    if name in NOT_GRIDS:
        assert maps.dims == ("particle", "point")
        np.testing.assert_allclose(maps["sample_x"].values, results.points["sample_x"].values)
    else:
        for dim in [d for d in maps.dims if d != "particle"]:
            assert set(np.round(maps[dim].values, 9)) == set(results.points[dim].round(9))


@pytest.mark.slow
def test_list_grid_scan_maps_have_the_true_non_uniform_coordinates():
    _, results, _ = served("list_grid_scan")
    assert results.maps["sample_y"].values.tolist() == [0, 0.5, 2, 3]
    assert results.maps["sample_x"].values.tolist() == [0, 0.2, 0.4, 1.5, 2.5]


@pytest.mark.slow
def test_a_pause_mid_row_retakes_a_point_once_and_the_log_says_it(caplog):
    caplog.set_level(logging.INFO, logger="streamcrystal")
    served.cache_clear()
    rod, results, docs = served("grid_scan paused")
    frames = results.frames
    assert len(frames) == 71 and frames["superseded"].sum() == 1
    superseded = frames[frames["superseded"]].iloc[0]
    again = frames[(frames["frame"] == superseded["frame"]) & ~frames["superseded"]]
    assert len(again) == 1 and again["point"].item() == superseded["point"]
    assert superseded["reading"] not in set(results.features["reading"])  # the later reading replaces it
    assert len(results.points) == 70
    assert sum("superseded by a later reading" in r.getMessage() for r in caplog.records) == 1
    marked = [d["data"] for kind, d in docs if kind == "event" and d["data"].get("superseded") is True]
    assert [m["reading"] for m in marked] == [superseded["reading"]]


@pytest.mark.slow
def test_scan_order_linking_with_positions_recovers_the_grains_of_a_snaking_grid():
    rod, results, _ = served("grid_scan snake", "trackpy")
    for grain in rod.truth.grains:
        assert len(grain_particles(rod, results, grain)) == 1
    assert results.placement["linking"] == "trackpy" and results.placement["memory"] == 18


def test_four_events_with_seq_nums_1_2_2_3_and_one_spot_give_one_particle():
    frames = [spot_frames([(40, 60)], seed=s) for s in range(4)]
    docs = compose_raw_run(frames, grid=(1, 3))
    events = [i for i, (name, doc) in enumerate(docs) if name == "event" and doc["descriptor"] and "seq_num" in doc
              and DATA_KEY in doc["data"]]
    third = docs[events[2]][1]
    docs[events[2]] = ("event", {**third, "seq_num": 2, "data": {**third["data"], "m0": 0.0, "m1": 1.0}})
    for k, i in enumerate(events):  # each event records where it was: 0, 1, 1, 2 on the row
        name, doc = docs[i]
        if k != 2:
            docs[i] = (name, {**doc, "seq_num": [1, 2, 2, 3][k], "data": {**doc["data"], "m0": 0.0, "m1": [0, 1, 1, 2][k]}})
    for i, (name, doc) in enumerate(docs):
        if name == "descriptor" and doc["name"] == "primary":
            docs[i] = (name, {**doc, "data_keys": {**doc["data_keys"], "m0": {"dtype": "number", "shape": [], "source": "sim"},
                                                    "m1": {"dtype": "number", "shape": [], "source": "sim"}}})
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, separation=20, minmass=500, search_range=5)
    for name, doc in docs:
        pipe(name, doc)
    results = pipe.results()
    assert results.tracks["particle"].nunique() == 1 and len(results.tracks) == 3
    assert results.frames["superseded"].tolist() == [False, True, False, False]


def test_a_run_that_records_no_positions_is_placed_by_seq_num_and_says_so(caplog):
    caplog.set_level(logging.WARNING, logger="streamcrystal")
    frames = [spot_frames([(40, 60)], seed=s) for s in range(6)]
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, separation=20, minmass=500, search_range=5)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in compose_raw_run(frames, grid=(2, 3), snaking=[False, True]):
        pipe(name, doc)
    start = next(doc for name, doc in out if name == "start")
    assert start["placement"]["method"] == "seq_num" and "record none of the position fields" in start["placement"]["reason"]
    assert any("placed by seq_num" in r.getMessage() for r in caplog.records)
    results = pipe.results()
    assert results.maps.dims == ("particle", "m0", "m1") and results.maps["m1"].values.tolist() == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(results.maps.values[0] > 0, np.ones((2, 3), bool))


@pytest.mark.slow
def test_a_plain_grid_scan_gives_the_maps_of_seq_num_placement():
    """On grid_scan's own grid the positions place each reading where grid_scan's conventions
    (C order, snaking, linspace extents) put it: the same maps as before placement by positions."""
    pipe = streamcrystal.load_pipeline("peak_tracking").make_pipeline(linking="trackpy", maxsize=3.0, min_frames=2)
    uid, truth = simulate_scan(RunEngine({}), grid_shape=(6, 5), detector_shape=(384, 384), frames_per_point=2,
                               n_grains=2, peaks_per_grain=2, min_peak_distance=110, seed=2, callbacks=[pipe])
    results = pipe.results(uid)
    particles, expected = crystal_maps(results.tracks, truth.grid_shape, truth.snaking, min_frames=2)
    np.testing.assert_array_equal(results.maps.values, expected)
    for dim, (lo, hi), n in zip(results.maps.dims[1:], truth.extents, truth.grid_shape):
        np.testing.assert_allclose(results.maps[dim].values, np.linspace(lo, hi, n))


@pytest.mark.parametrize("mask", ["nan", "saturated", "array"])
def test_masked_pixels_are_no_signal_and_the_peaks_are_trackpys_on_the_zeroed_image(mask, caplog):
    caplog.set_level(logging.INFO, logger="streamcrystal")
    frames = [spot_frames([(30, 40), (70, 100)], seed=s) for s in range(3)]
    masked = np.zeros(frames[0].shape[-2:], bool)
    masked[10, :] = True  # one dead row, far from the spots (0.8 % of the pixels)
    options = {}
    if mask == "nan":
        frames = [np.where(masked, np.nan, f.astype(np.float64)) for f in frames]
    elif mask == "saturated":
        frames = [np.where(masked, np.iinfo(np.uint16).max, f).astype(np.uint16) for f in frames]
        options["mask"] = "saturated"
    else:
        options["mask"] = masked
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, separation=20, minmass=500, search_range=5, **options)
    for name, doc in compose_raw_run(frames, grid=(1, 3)):
        pipe(name, doc)
    results = pipe.results()
    assert not results.frames["skipped"].any()
    np.testing.assert_allclose(results.frames["masked_fraction"], masked.mean())
    for seq_num, f in enumerate(frames, start=1):
        image = np.clip(np.asarray(f, np.float64).mean(axis=0), 0, None)
        image[masked] = 0
        expected = trackpy.locate(image, 9, separation=20, minmass=500)
        got = results.features[results.features["frame"] == seq_num]
        np.testing.assert_allclose(got[["y", "x", "mass", "ep"]], expected[["y", "x", "mass", "ep"]], rtol=0,
                                   atol=1e-9)
    assert sum("masked pixels" in r.getMessage() for r in caplog.records) == 1


def test_an_event_with_nothing_usable_is_skipped_and_says_why():
    frames = [spot_frames([(30, 40)], seed=1).astype(np.float64), np.full((3, 96, 128), np.nan)]
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, separation=20, minmass=500, search_range=5)
    for name, doc in compose_raw_run(frames, grid=(1, 2)):
        pipe(name, doc)
    frames_table = pipe.results().frames
    assert frames_table["skipped"].tolist() == [False, True]
    assert "nothing usable: all 12288 pixels are masked" in frames_table["skip_reason"][1]
