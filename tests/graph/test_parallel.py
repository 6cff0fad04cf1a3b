"""Per-frame work on a real Dask cluster (2 worker processes): same results as the serial pipeline.

The injected work functions below are nested functions: Dask ships them by value
(cloudpickle), and they call only what a worker can import (``time``, ``streamcrystal``).
"""
from __future__ import annotations

import gc
import logging
import os
import pickle
import re
import threading
import time
import weakref

import event_model
import numpy as np
import pytest
from pandas.testing import assert_frame_equal
from bluesky import RunEngine
from distributed import Client, LocalCluster

import streamcrystal
from tests.helpers.hdf5runs import stream_datum_run
from tests.helpers.rawruns import DATA_KEY, compose_raw_run, drifting_spot_scan, spot_frames
from tests.helpers.reference import stream_rows, timeless
from streamcrystal.errors import ClientClosedError
from streamcrystal.graph.cluster import make_client
from streamcrystal.graph.dask import DaskFrames, FrameGroup
from streamcrystal.records import FrameReference, FrameTask
from streamcrystal.sim import simulate_scan
from streamcrystal.graph.steps import locate_step

LOCATE = dict(diameter=9, percentile=64, separation=20, minmass=1000.0)
STREAMS = ("features", "frames", "tracks", "maps")


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def scan():
    return drifting_spot_scan(8), spot_frames([], n_frames=2, seed=99)


def make_pipe(client=None, *, data_key=DATA_KEY, **options):
    params = {**LOCATE, "search_range": 5, "memory": 2, "linking": "trackpy", **options}
    pipe = streamcrystal.peak_tracking(data_key, client=client, **params)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    return pipe, out


def feed(pipe, docs, *, timeout=60.0):
    """pipe(name, doc) for each document, in a thread: a stall fails the test instead of hanging it."""
    done = threading.Event()

    def run():
        for name, doc in docs:
            pipe(name, doc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(timeout), f"the pipeline stalled: {pipe.dask.in_flight if pipe.dask else 0} items in flight"


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def run_uids(docs):
    return [doc["uid"] for name, doc in docs if name == "start"]


def assert_same_analysis(serial, parallel, serial_out, parallel_out, uids):
    """Same documents in the same order (but uids and times), same tables and maps per run."""
    assert [n for n, _ in parallel_out] == [n for n, _ in serial_out]
    for stream in ("features", "frames", "tracks"):
        assert_frame_equal(timeless(stream_rows(parallel_out, stream)), timeless(stream_rows(serial_out, stream)),
                           check_exact=True, obj=stream)
    for uid in uids:
        a, b = serial.results(uid), parallel.results(uid)
        for table in ("features", "frames", "tracks", "particles"):
            assert_frame_equal(timeless(getattr(b, table)), timeless(getattr(a, table)), check_exact=True,
                               obj=f"run {uid} {table}")
        assert b.maps.equals(a.maps) and b.problems == a.problems and b.failure == a.failure
    reasons = [d.get("reason") for n, d in serial_out if n == "stop"]
    assert [d.get("reason") for n, d in parallel_out if n == "stop"] == reasons


def serial_then_parallel(dask, raw, background):
    """``raw`` through the serial pipeline and through one on ``dask`` (a client or a
    DaskFrames): the same analysis is asserted; returns the parallel pipeline, its output
    documents and what its ``in_flight`` node sent."""
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    parallel, parallel_out = make_pipe(dask, subtrahend=background)
    sent = parallel.nodes["in_flight"].sink_to_list()
    feed(parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    return parallel, parallel_out, sent


def sent_tasks(sent) -> list[FrameTask]:
    """The frame tasks among what a pipeline's ``in_flight`` node sent (a group's, one by one)."""
    return [task for item in sent for task in (item.tasks if isinstance(item, FrameGroup) else (item,))
            if isinstance(task, FrameTask)]


def slow_work(seconds):
    """A work function that first sleeps ``seconds(seq_num)``."""
    def work(task, **kwargs):
        time.sleep(seconds(task.seq_num))
        return locate_step(task, **kwargs)
    return work


def test_parallel_equals_serial_on_event_and_event_page_runs_back_to_back(client, scan):
    frames, background = scan
    dark = [spot_frames([], n_frames=2, seed=s) for s in (50, 51)]
    raw = (compose_raw_run(frames, grid=(2, 4))
           + compose_raw_run(frames[:6], grid=(2, 3), snaking=(False, True), event_page=True)
           + compose_raw_run(frames[2:], grid=(2, 3), dark=dark))  # a dark mean travels with each task
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    parallel, parallel_out = make_pipe(client, subtrahend=background)
    feed(parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    assert len(stream_rows(parallel_out, "tracks")) > 20
    assert parallel.dask.in_flight == 0 and parallel.parameters["dask"]["max_in_flight"] == 5

    without = compose_raw_run(frames[:4], grid=(1, 4), dark=dark)  # no subtrahend: the run's dark mean
    serial, serial_out = make_pipe()
    parallel, parallel_out = make_pipe(client)
    feed(serial, without)
    feed(parallel, without)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(without))


def test_features_come_out_in_seq_num_order_whatever_finishes_first(client, scan):
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4))
    # one task per frame (no groups while the cluster is busy), so that they finish in any order
    late_first = DaskFrames(client, max_in_flight=6, locate=slow_work(lambda seq: 0.6 if seq == 1 else 0.0),
                            group_pixels=0)
    parallel, out = make_pipe(late_first, subtrahend=background)
    submitted = parallel.nodes["locate"].sink_to_list()  # futures, in submission order
    feed(parallel, raw)
    assert len(submitted) == len(frames) + 1  # and the stop, which keeps its place in the channel
    assert stream_rows(out, "frames")["frame"].tolist() == list(range(1, len(frames) + 1))
    features = stream_rows(out, "features")["frame"].tolist()
    assert features == sorted(features) and set(features) == set(range(1, len(frames) + 1))


def test_finished_results_waiting_behind_a_late_one_are_gathered_together_in_order(client, scan):
    """While frame 1 sleeps on one worker, the other frames finish on the other: when frame 1's
    result is in, the rest wait finished in the buffer and come back in one gather, not one each."""
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    late_first = DaskFrames(client, max_in_flight=12, locate=slow_work(lambda seq: 1.0 if seq == 1 else 0.0))
    parallel, parallel_out = make_pipe(late_first, subtrahend=background)
    feed(parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    gathers = parallel.nodes["gather"].gathers
    assert 2 <= gathers < len(frames) // 2, f"{gathers} gathers for {len(frames)} frames"


def fly_scan(docs):
    """``docs`` (a run whose frames are in HDF5, one StreamDatum per event) as a fly scan gives
    them: one StreamDatum for all the frames, then one event page of all the events."""
    datums = [doc for name, doc in docs if name == "stream_datum"]
    wanted = datums[0]["descriptor"]
    events = [doc for name, doc in docs if name == "event" and doc["descriptor"] == wanted]
    datum = {**datums[0], "uid": f"{datums[0]['stream_resource']}/fly",
             "indices": {"start": datums[0]["indices"]["start"], "stop": datums[-1]["indices"]["stop"]},
             "seq_nums": {"start": datums[0]["seq_nums"]["start"], "stop": datums[-1]["seq_nums"]["stop"]}}
    out = []
    for name, doc in docs:
        if name == "stop":
            out += [("stream_datum", datum), ("event_page", event_model.pack_event_page(*events))]
        if not (name == "stream_datum" or (name == "event" and doc["descriptor"] == wanted)):
            out.append((name, doc))
    return out


@pytest.mark.parametrize("group_pixels", [2**22, 3 * (3 * 96 * 128)])
def test_frames_given_in_one_go_travel_as_groups_of_tasks_with_the_serial_results(client, scan, tmp_path,
                                                                                 group_pixels):
    """A fly scan's StreamDatum of 8 frames, and an event page of 6 events with their frames
    inline: a task per group of frames (at most group_pixels pixels), the serial analysis."""
    frames, background = scan
    stepped, _ = stream_datum_run(compose_raw_run(frames, grid=(2, 4)), data_key=DATA_KEY, directory=tmp_path)
    raw = fly_scan(stepped) + compose_raw_run(frames[:6], grid=(2, 3), event_page=True)
    assert [name for name, _ in raw].count("stream_datum") == 1
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    parallel, parallel_out = make_pipe(DaskFrames(client, group_pixels=group_pixels), subtrahend=background)
    submitted = parallel.nodes["locate"].sink_to_list()  # futures, and the stops' places
    feed(parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    per_group = group_pixels // frames[0].size  # events of 3 frames of 96 x 128 pixels a group
    expected = -(-8 // per_group) + -(-6 // per_group) + 2  # the groups of each run, and its stop
    assert len(submitted) == expected < 8 + 6 + 2


def test_a_step_scan_faster_than_the_cluster_goes_in_groups_and_a_flush_waits_for_them(client, scan):
    """Events given one by one while the Dask segment is full (slow workers) wait in ``group``
    and go on together; the analysis is the serial one, and ``flush`` waits for the frames
    still waiting there. Events that find the segment free go alone, at once."""
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    busy = DaskFrames(client, max_in_flight=3, locate=slow_work(lambda seq: 0.3))
    parallel, parallel_out = make_pipe(busy, subtrahend=background)
    sent = parallel.nodes["in_flight"].sink_to_list()
    *before_stop, stop = raw
    feed(parallel, before_stop)
    assert parallel.flush(timeout=60)
    assert len(stream_rows(parallel_out, "frames")) == len(frames)  # none left waiting in the group node
    feed(parallel, [stop])
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    assert [task.seq_num for task in sent_tasks(sent)] == list(range(1, len(frames) + 1))
    assert any(isinstance(item, FrameGroup) and len(item.tasks) > 1 for item in sent), sent
    assert busy.peak_in_flight <= 3

    idle, idle_out = make_pipe(client, subtrahend=background)
    sent = idle.nodes["in_flight"].sink_to_list()
    for name, doc in raw:
        idle(name, doc)
        time.sleep(0.1)  # a scan slower than the cluster
    assert not any(isinstance(item, FrameGroup) for item in sent)
    assert len(sent_tasks(sent)) == len(frames)


def test_a_failing_frame_is_logged_and_skipped_and_nothing_stalls(client, scan, caplog_streamcrystal):
    frames, background = scan
    first = compose_raw_run(frames[:5], grid=(1, 5))
    bad = []
    for name, doc in first:  # seq 2 fails on the worker (shape), seq 4 in the client (no data key)
        if name == "event" and doc["seq_num"] in (2, 4) and DATA_KEY in doc["data"]:
            data = dict(doc["data"])
            if doc["seq_num"] == 2:
                data[DATA_KEY] = np.ones((2, 10, 10), np.uint16)
            else:
                del data[DATA_KEY]
            doc = {**doc, "data": data}
        bad.append((name, doc))
    orphan = {**next(doc for name, doc in bad if name == "event"), "descriptor": "no-such-descriptor", "seq_num": 9}
    bad.insert(-1, ("event", orphan))
    raw = bad + compose_raw_run(frames[5:], grid=(1, 3))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    caplog_streamcrystal.clear()
    parallel, parallel_out = make_pipe(client, subtrahend=background)
    feed(parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    uid = raw[0][1]["uid"]
    log = [r.getMessage() for r in caplog_streamcrystal.records]
    shape_lines = [line for line in log if "does not match background shape" in line]
    assert len(shape_lines) == 1 and f"run {uid} seq_num 2" in shape_lines[0]  # logged once, in this process
    skipped = stream_rows(parallel_out, "frames")
    assert skipped["skipped"].tolist() == [False, True, False, True, False, False, False, False]


def test_bad_frames_inside_an_event_page_are_skipped_alone_and_the_rest_of_the_group_kept(client, scan):
    """An event page of 6 events, the third with frames of a wrong shape (fails on the worker,
    inside its group), the fifth with none (a problem in the client, between two groups)."""
    frames, background = scan
    raw = []
    for name, doc in compose_raw_run(frames[:6], grid=(2, 3), event_page=True):
        if name == "event_page" and DATA_KEY in doc["data"]:
            images = list(doc["data"][DATA_KEY])
            images[2], images[4] = np.ones((2, 10, 10), np.uint16), None
            doc = {**doc, "data": {**doc["data"], DATA_KEY: images}}
        raw.append((name, doc))
    _, parallel_out, sent = serial_then_parallel(client, raw, background)
    assert stream_rows(parallel_out, "frames")["skipped"].tolist() == [False, False, True, False, True, False]
    assert any(isinstance(item, FrameGroup) for item in sent)  # the good frames before the problem went together


def test_a_task_that_raises_is_a_skipped_frame_not_a_stalled_stream(client, scan, caplog_streamcrystal):
    """streamz's own gather would raise in the buffer's loop: nothing would come out again."""
    frames, background = scan
    def work(task, **kwargs):
        if task.seq_num == 3:
            raise ZeroDivisionError("injected failure")
        return locate_step(task, **kwargs)
    raw = compose_raw_run(frames, grid=(2, 4)) + compose_raw_run(frames[:3], grid=(1, 3))
    parallel, out = make_pipe(DaskFrames(client, max_in_flight=3, locate=work), subtrahend=background)
    feed(parallel, raw, timeout=30)
    first, second = run_uids(raw)
    frames_rows = stream_rows(out, "frames")
    assert len(frames_rows) == 8 + 3
    assert frames_rows["skipped"].tolist() == [False, False, True] + [False] * 5 + [False, False, True]
    assert "ZeroDivisionError: injected failure" in frames_rows["skip_reason"][2]
    log = [r.getMessage() for r in caplog_streamcrystal.records if r.levelno >= logging.WARNING]
    assert any(f"run {first} seq_num 3" in line and "injected failure" in line for line in log), log
    assert any(f"run {second} seq_num 3" in line for line in log)
    stops = [doc for name, doc in out if name == "stop"]
    assert len(stops) == 2 and "seq_num 3" in stops[0]["reason"]
    assert len(parallel.results(second).frames) == 3


def test_the_stop_waits_for_every_frame_in_flight_and_in_flight_is_bounded(client, scan):
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    slow = DaskFrames(client, max_in_flight=3, locate=slow_work(lambda seq: 0.15))
    parallel, out = make_pipe(slow, subtrahend=background)
    with client.as_current():  # straight into the graph: no flush by Pipeline.__call__
        for name, doc in raw:
            parallel.source.emit((name, doc))
    assert slow.in_flight > 0  # the stop is in the channel, behind the last frames
    wait_for(lambda: out and out[-1][0] == "stop")
    assert timeless(parallel.results().frames).equals(timeless(serial.results().frames))
    assert parallel.results().tracks.equals(serial.results().tracks)
    assert slow.peak_in_flight <= 3

    parallel, out = make_pipe(DaskFrames(client, max_in_flight=3, locate=slow_work(lambda seq: 0.15)), subtrahend=background)
    feed(parallel, raw)  # Pipeline.__call__ returns from the stop once the run is mapped
    assert parallel.dask.in_flight == 0 and out[-1][0] == "stop"
    assert parallel.results().maps.equals(serial.results().maps)


def test_frames_in_hdf5_are_read_by_the_workers_from_references(client, scan, tmp_path):
    frames, background = scan
    inline = compose_raw_run(frames, grid=(2, 4), dark=[spot_frames([], n_frames=2, seed=5)])
    raw, path = stream_datum_run(inline, data_key=DATA_KEY, directory=tmp_path)
    assert {"stream_resource", "stream_datum"} <= {name for name, _ in raw}
    lost, lost_path = stream_datum_run(compose_raw_run(frames[:2], grid=(1, 2)), data_key=DATA_KEY, directory=tmp_path)
    lost_path.unlink()
    serial, serial_out = make_pipe()
    feed(serial, raw + lost)
    parallel, parallel_out = make_pipe(client)
    scattered = parallel.nodes["in_flight"].sink_to_list()
    feed(parallel, raw + lost)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw + lost))
    tasks = sent_tasks(scattered)
    assert len(tasks) == len(frames) + 2
    assert all(isinstance(task.frames, FrameReference) and task.frames.path == str(path) for task in tasks[:8])
    assert max(len(pickle.dumps(task)) for task in tasks) < 2_000  # references, not images
    assert "cannot read 'det_image'" in parallel.results(run_uids(lost)[0]).frames["skip_reason"][0]
    reference = stream_rows(make_and_feed(inline, subtrahend=None), "features")
    assert stream_rows(parallel_out, "features").iloc[:len(reference)][["y", "x", "mass"]].equals(reference[["y", "x", "mass"]])


def make_and_feed(docs, **options):
    pipe, out = make_pipe(**options)
    feed(pipe, docs)
    return out


def test_live_runengine_callback_same_features_tracks_and_maps(client):
    options = dict(data_key="dexela_image", diameter=9, percentile=80, separation=30, minmass=300.0, maxsize=3.0,
                   min_frames=2, memory="grid")
    serial, serial_out = make_pipe(**options)
    parallel, parallel_out = make_pipe(client, **options)
    uid, truth = simulate_scan(
        RunEngine({}), grid_shape=(5, 4), detector_shape=(256, 256), frames_per_point=2, n_grains=2,
        peaks_per_grain=2, min_peak_distance=60, dark_frames=2, callbacks=[serial, parallel])
    assert_same_analysis(serial, parallel, serial_out, parallel_out, [uid])
    results = parallel.results(uid)
    assert len(results.frames) == 20 and len(results.tracks) > 10
    assert results.maps.shape[0] > 0 and results.maps.shape[1:] == (5, 4)


def test_visualize_shows_the_scatter_and_gather_nodes(client, tmp_path):
    pipe, _ = make_pipe(client, subtrahend=np.zeros((96, 128)))
    assert {"in_flight", "scatter", "locate", "buffer", "gather", "frame_results"} <= set(pipe.nodes)
    assert "process" not in pipe.nodes  # one task per frame runs both steps
    pipe.visualize(str(tmp_path / "graph.svg"))
    labels = re.findall(r">\s*([^<>]+?)\s*</text>", (tmp_path / "graph.svg").read_text())
    for label in ("scatter ScatterFrames", "locate SubmitFrames", "buffer BufferFrames",
                  "gather GatherResults"):
        assert any(found.startswith(label) for found in labels), (label, labels)
    assert ["scatter", "locate"] in pipe.provenance["edges"] and ["gather", "frame_results"] in pipe.provenance["edges"]


def test_bad_dask_options_say_what_to_pass(client):
    with pytest.raises(ValueError, match="max_in_flight must be an integer >= 3.*got 2"):
        streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, client=client, max_in_flight=2)
    with pytest.raises(ValueError, match="pass client= too"):
        streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, max_in_flight=4)
    with pytest.raises(TypeError, match="make_client"):
        streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, client="local:2")
    with pytest.raises(ValueError, match="'local:two' is not 'local:N'"):
        make_client("local:two")


def test_make_client_local_starts_worker_processes_of_one_thread(caplog):
    caplog.set_level(logging.INFO, logger="streamcrystal")
    local = make_client("local:1")
    try:
        assert list(local.nthreads().values()) == [1] and local.direct_to_workers
        assert local.scheduler.address.startswith("tcp://127.0.0.1:")
        assert any("local:1: 1 workers; dashboard" in r.getMessage() for r in caplog.records)
    finally:
        local.close()
    assert local.status == "closed"


def test_make_client_connects_to_a_scheduler_address_and_logs_the_dashboard(client, caplog):
    caplog.set_level(logging.INFO, logger="streamcrystal")
    other = make_client(client.scheduler.address)
    try:
        assert set(other.nthreads()) == set(client.nthreads())
        assert any(client.scheduler.address in r.getMessage() and "dashboard" in r.getMessage() for r in caplog.records)
    finally:
        other.close()


def test_a_closed_client_is_logged_not_waited_for(client, scan, caplog_streamcrystal):
    frames, background = scan
    other = Client(client.scheduler.address)
    pipe, out = make_pipe(other, subtrahend=background)
    other.close()
    feed(pipe, compose_raw_run(frames[:2], grid=(1, 2)), timeout=30)  # its event loop is gone: nothing may wait on it
    errors = [r for r in caplog_streamcrystal.records if r.exc_info and isinstance(r.exc_info[1], ClientClosedError)]
    assert errors and "'closed'" in str(errors[0].exc_info[1]) and out == []


@pytest.mark.parametrize("parallel", [False, True])
def test_close_lets_the_graph_and_the_workers_background_go(client, scan, parallel, caplog_streamcrystal):
    frames, background = scan
    pipe, out = make_pipe(client if parallel else None, subtrahend=background)
    feed(pipe, compose_raw_run(frames[:2], grid=(1, 2)))
    node = weakref.ref(pipe.nodes["runs"])
    key = pipe.dask._work_node.kwargs["background"].key if parallel else None
    pipe.close()
    pipe("start", {"uid": "late", "time": 0.0})  # refused, logged, does not wait
    assert len(pipe.results().frames) == 2
    assert any("pipeline was closed" in r.getMessage() for r in caplog_streamcrystal.records)
    del pipe
    wait_for(lambda: gc.collect() is not None and node() is None, timeout=10)
    if parallel:
        wait_for(lambda: key not in client.who_has(), timeout=10)


def kill_a_worker_mid_run(client, dask, pipe, docs) -> str:
    """Feed ``docs`` to ``pipe`` on a thread, kill one worker (``os._exit``) once 4 items are in
    flight, and wait for the feeding to end; returns the killed worker's address."""
    client.wait_for_workers(2, timeout=30)
    feeding = threading.Thread(target=lambda: [pipe(name, doc) for name, doc in docs], daemon=True)
    feeding.start()
    wait_for(lambda: dask.in_flight >= 4)
    victim = sorted(client.scheduler_info()["workers"])[0]
    try:
        client.run(os._exit, 1, workers=[victim])
    except Exception:  # the worker dies before it answers
        pass
    feeding.join(90)
    assert not feeding.is_alive(), "the pipeline stalled after a worker died"
    return victim


def test_a_worker_killed_mid_run_loses_nothing(client, scan, caplog_streamcrystal):
    """Last in this module: it kills one of the fixture's workers (its nanny starts a new one)."""
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4)) + compose_raw_run(frames[:4], grid=(1, 4))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    # frames scattered (Dask's transfer): the dead worker's data are lost and we resubmit
    # (through shared memory the scheduler reruns the tasks itself: tests/graph/test_shared_memory.py)
    dask = DaskFrames(client, max_in_flight=5, locate=slow_work(lambda seq: 0.3), shared_memory=False)
    parallel, parallel_out = make_pipe(dask, subtrahend=background)
    kill_a_worker_mid_run(client, dask, parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    assert any("resubmitted" in r.getMessage() for r in caplog_streamcrystal.records)
    client.wait_for_workers(2, timeout=60)
