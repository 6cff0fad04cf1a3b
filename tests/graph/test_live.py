"""Live science: tracks as each event arrives, results during the run, grains at the end, and a
pipeline on a thread of its own that never holds up the RunEngine."""
from __future__ import annotations

import logging
import statistics
import threading
import time

import numpy as np
import pandas as pd
import pytest
import trackpy
from bluesky import RunEngine

import streamcrystal
from streamcrystal.demo import default_minmass
from streamcrystal.science.linking import link_sample_space
from streamcrystal.science.placement import Placement
from streamcrystal.sim import CrystalRod, make_devices, simulate_scan
from tests.helpers.rawruns import DATA_KEY, compose_raw_run, spot_frames
from tests.helpers.reference import partition, stream_rows

SCAN = dict(grid_shape=(8, 7), detector_shape=(384, 384), frames_per_point=2, n_grains=3, peaks_per_grain=2,
            min_peak_distance=80)
OPTIONS = dict(diameter=9, percentile=80, separation=30, minmass=300.0, maxsize=3.0, search_range=8)


def scan_documents(seed: int, **scan) -> tuple[list, object]:
    docs = []
    uid, truth = simulate_scan(RunEngine({}), seed=seed, callbacks=[lambda name, doc: docs.append((name, doc))],
                               **{**SCAN, **scan})
    return docs, truth


@pytest.fixture(scope="module", params=[(1, True), (2, False), (5, True)], ids=["seed1-snake", "seed2", "seed5"])
def scan(request):
    seed, snake = request.param
    return scan_documents(seed, snake=snake)


def feed(pipe, docs):
    for name, doc in docs:
        pipe(name, doc)
    pipe.flush()


def test_scan_order_linking_live_equals_trackpy_link_offline(scan):
    docs, truth = scan
    pipe = streamcrystal.peak_tracking("dexela_image", **OPTIONS, linking="trackpy", memory="grid")
    feed(pipe, docs)
    results = pipe.results()
    memory = results.placement["memory"]
    expected = trackpy.link(results.features[["y", "x", "frame"]].copy(), OPTIONS["search_range"], memory=memory)
    assert len(results.tracks) == len(results.features) > 20
    assert partition(results.tracks) == partition(expected)


def test_sample_space_linking_live_equals_batch(scan):
    docs, truth = scan
    pipe = streamcrystal.peak_tracking("dexela_image", **OPTIONS)
    feed(pipe, docs)
    results = pipe.results()
    placement = Placement(results.placement["dimensions"], steps=results.placement["steps"])
    for frame, *position in results.frames[["frame", *results.placement["dimensions"]]].itertuples(index=False):
        placement.add(frame, position)
    batch = link_sample_space(results.features, OPTIONS["search_range"], neighbours=placement.neighbours)
    assert partition(results.tracks) == partition(batch)


def test_each_events_tracks_come_out_before_the_next_event_is_processed(scan):
    docs, truth = scan
    pipe = streamcrystal.peak_tracking("dexela_image", **OPTIONS)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    primary = {doc["uid"] for name, doc in docs if name == "descriptor" and doc["name"] == "primary"}
    for name, doc in docs:
        pipe(name, doc)
        if name == "event" and doc["descriptor"] in primary:
            frames, tracks = stream_rows(out, "frames"), stream_rows(out, "tracks")
            row = frames[frames["frame"] == doc["seq_num"]]
            assert len(row) == 1, doc["seq_num"]
            assert (tracks.get("frame", pd.Series(dtype=int)) == doc["seq_num"]).sum() == row["n_peaks"].item()


def test_particle_ids_given_live_never_change_and_merges_are_reported():
    # three points in a row visited ends first: the middle one bridges two particles
    frames = [spot_frames([(40, 60)], seed=s) for s in range(3)]
    docs = compose_raw_run(frames, grid=(1, 3))
    position = {1: 0.0, 2: 2.0, 3: 1.0}  # seq_num -> where the sample was
    for i, (name, doc) in enumerate(docs):
        if name == "descriptor" and doc["name"] == "primary":
            docs[i] = (name, {**doc, "data_keys": {**doc["data_keys"], "m1": {"dtype": "number", "shape": [],
                                                                                "source": "sim", "precision": 3}}})
        if name == "event" and DATA_KEY in doc["data"]:
            docs[i] = (name, {**doc, "data": {**doc["data"], "m1": position[doc["seq_num"]]}})
    start = docs[0][1]
    start.update(hints={"dimensions": [[["m1"], "primary"]]}, motors=["m1"], shape=[3], extents=[[0.0, 2.0]])
    start.pop("snaking", None)
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, separation=20, minmass=500, search_range=5)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    feed(pipe, docs)
    tracks = stream_rows(out, "tracks")
    assert tracks["particle"].tolist() == [0, 1, 0]  # as given live, for good
    relabels = stream_rows(out, "relabels")
    assert relabels[["particle", "into", "kind", "frame"]].values.tolist() == [[1, 0, "merge", 3]]
    assert pipe.results().tracks["particle"].tolist() == [0, 0, 0]  # the results report the merged id


def test_results_during_the_run_equal_the_results_of_the_prefix(scan):
    docs, truth = scan
    events = [i for i, (name, doc) in enumerate(docs) if name == "event"]
    cut = events[len(events) // 2]
    live = streamcrystal.peak_tracking("dexela_image", **OPTIONS)
    feed(live, docs[:cut + 1])
    during = live.results()
    assert not during.complete and 0 < len(during.frames) < truth.grid_shape[0] * truth.grid_shape[1]
    prefix = streamcrystal.peak_tracking("dexela_image", **OPTIONS)
    stop = next(doc for name, doc in docs if name == "stop")
    feed(prefix, [*docs[:cut + 1], ("stop", stop)])
    after = prefix.results()
    assert after.complete
    for table in ("features", "tracks", "particles"):
        pd.testing.assert_frame_equal(getattr(during, table), getattr(after, table))
    np.testing.assert_array_equal(during.maps.values, after.maps.values)
    pd.testing.assert_frame_equal(during.grains, after.grains)
    np.testing.assert_array_equal(during.grain_labels.values, after.grain_labels.values)
    feed(live, docs[cut + 1:])
    assert live.results().complete and len(live.results().frames) == truth.grid_shape[0] * truth.grid_shape[1]


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_grains_are_the_simulated_grains_each_with_exactly_its_own_peaks(seed):
    rod = CrystalRod((12, 10), (512, 512), frames_per_point=2, n_grains=4, peaks_per_grain=3, min_peak_distance=60,
                     seed=seed)
    locate = dict(diameter=9, percentile=80, separation=30)
    minmass = default_minmass(rod, locate)  # above the noise of two empty-point exposures, as the demo does
    pipe = streamcrystal.peak_tracking("dexela_image", **locate, minmass=minmass, maxsize=3.0, search_range=3,
                                       min_frames=3)
    y, x, dexela = make_devices(rod)
    from bluesky import plans as bp

    (y0, y1), (x0, x1) = rod.truth.extents
    RunEngine({})(bp.grid_scan([dexela], y, y0, y1, 12, x, x0, x1, 10, snake_axes=True), pipe)
    results = pipe.results()
    particles = results.particles.set_index("particle")
    for grain in rod.truth.grains:
        mine = set()
        for peak in grain.peaks:
            near = np.hypot(particles["y"] - peak[0], particles["x"] - peak[1]) < 2.0
            mine |= set(particles.index[near])
        found = set(results.grains.loc[results.grains["particle"].isin(mine), "grain"])
        assert len(found) == 1, (seed, grain.index, found)  # found once
        label = found.pop()
        members = set(results.grains.loc[results.grains["grain"] == label, "particle"])
        assert members == mine, (seed, grain.index)  # exactly its own peaks: no other grain merged in
        seen = results.grain_maps.sel(grain=label).values > 0
        iou = (seen & grain.footprint).sum() / (seen | grain.footprint).sum()
        assert iou >= 0.9, (seed, grain.index, iou)
    assert results.grain_labels.dims == results.maps.dims[1:]


def test_thread_mode_returns_at_once_under_a_real_runengine_and_loses_nothing():
    docs_times = []
    pipe = streamcrystal.peak_tracking("dexela_image", **OPTIONS, thread=True)

    def timed(name, doc):
        start = time.perf_counter()
        pipe(name, doc)
        docs_times.append(time.perf_counter() - start)

    uid, truth = simulate_scan(RunEngine({}), seed=1, callbacks=[timed], **SCAN)
    pipe.flush()
    results = pipe.results(uid)
    assert results.complete and len(results.frames) == SCAN["grid_shape"][0] * SCAN["grid_shape"][1]
    assert statistics.median(docs_times) < 0.005  # a frame takes tens of ms to process; the call only queues it
    assert pipe.lag == 0


def test_a_slow_pipeline_behind_a_fast_producer_makes_it_wait_logs_the_lag_once_and_loses_nothing(caplog):
    caplog.set_level(logging.WARNING, logger="streamcrystal")
    frames = [spot_frames([(40, 60)], seed=s) for s in range(12)]
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, separation=20, minmass=500, search_range=5,
                                       thread=True, max_queued=3)
    gate = threading.Event()
    pipe.subscribe(lambda name, doc: gate.wait(5) if name == "start" else None)  # a slow start
    producer = threading.Thread(target=feed, args=(pipe, compose_raw_run(frames, grid=(3, 4))))
    producer.start()
    time.sleep(0.5)
    assert producer.is_alive() and pipe.lag >= 1  # the producer waits: the queue is full
    gate.set()
    producer.join(30)
    pipe.flush()
    assert len(pipe.results().frames) == 12 and pipe.lag == 0
    lagging = [r.getMessage() for r in caplog.records if "behind the RunEngine" in r.getMessage()]
    assert len(lagging) == 1


def test_frames_carry_their_latency_and_the_stop_its_median_and_worst():
    frames = [spot_frames([(40, 60)], seed=s) for s in range(4)]
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, separation=20, minmass=500, search_range=5)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    feed(pipe, compose_raw_run(frames, grid=(1, 4)))
    latency = stream_rows(out, "frames")["latency"]
    assert (latency > 0).all() and (latency < 60).all()
    stop = out[-1][1]
    assert stop["latency"]["worst"] == pytest.approx(latency.max())
    assert stop["latency"]["median"] == pytest.approx(latency.median())
