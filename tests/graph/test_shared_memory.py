"""Frames to the workers of this host through shared memory (issue 16, part 1), on a real cluster.

Each test records the names of the segments its pipeline made (what ``in_flight`` sent) and
checks that none is left in ``/dev/shm``: after a run, after a worker is killed mid-run, after
the pipeline or the client is closed. Only our own names are checked: other test runs on the
machine may hold ``sc_`` segments of their own meanwhile.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster
from multiprocessing import resource_tracker

import streamcrystal

from streamcrystal.errors import SharedFramesError
from streamcrystal.graph.dask import DaskFrames, FrameGroup
from streamcrystal.graph.shared import PREFIX, SharedFrames, SharedSegments, mapped
from streamcrystal.records import FrameTask
from tests.graph.test_parallel import (assert_same_analysis, feed, kill_a_worker_mid_run, make_pipe, run_uids,
                                      sent_tasks, serial_then_parallel, slow_work, wait_for)
from tests.helpers.rawruns import compose_raw_run, drifting_spot_scan, spot_frames

SHM = "/dev/shm"
pytestmark = pytest.mark.skipif(not os.path.isdir(SHM), reason="POSIX shared memory is listed in /dev/shm on Linux")


@pytest.fixture(scope="module")
def client():
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    # the workers run this tree's code
    assert set(client.run(lambda: __import__("streamcrystal").__file__).values()) == {streamcrystal.__file__}
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def scan():
    return drifting_spot_scan(8), spot_frames([], n_frames=2, seed=99)


def shared_names(sent) -> list[str]:
    """The segments a pipeline made, from what its ``in_flight`` node sent."""
    return [task.frames.name for task in sent_tasks(sent) if isinstance(task.frames, SharedFrames)]


def left_in_dev_shm(names) -> list[str]:
    return sorted(set(names) & set(os.listdir(SHM)))


def test_inline_frames_go_through_shared_memory_with_the_serial_results_and_leave_nothing(client, scan):
    frames, background = scan
    dark = [spot_frames([], n_frames=2, seed=s) for s in (50, 51)]
    raw = (compose_raw_run(frames, grid=(2, 4))
           + compose_raw_run(frames[:6], grid=(2, 3), event_page=True)
           + compose_raw_run(frames[2:], grid=(2, 3), dark=dark))
    parallel, _, sent = serial_then_parallel(client, raw, background)
    names = shared_names(sent)
    assert len(names) == 8 + 6 + 6 and all(name.startswith(PREFIX) for name in names)
    assert max(len(pickle.dumps(item)) for item in sent) < 2_000  # what travels: names, not images
    assert left_in_dev_shm(names) == [] and len(parallel.dask.segments) == 0
    assert 1 <= parallel.dask.segments.peak <= parallel.dask.max_in_flight
    assert parallel.parameters["dask"]["shared_memory"] is True
    # the event page's 6 events came in one go: one task, their frames in one segment (the
    # step scans' events may go in groups too, if they came while the cluster was busy)
    page_run = run_uids(raw)[1]
    groups = [item for item in sent if isinstance(item, FrameGroup)]
    [page] = [group for group in groups if group.run_uid == page_run]
    assert [task.seq_num for task in page.tasks] == list(range(1, 7)) and len(set(shared_names([page]))) == 1
    assert all(len(set(shared_names([group]))) == 1 for group in groups)
    # segments were written again within a run (and the results above are the serial ones):
    # at most max_in_flight made per run, the other events' frames went into free ones
    segments = parallel.dask.segments
    writes = [item for item in sent if shared_names([item])]  # an event's frames, or a group's
    assert segments.made + segments.recycled == len(writes) == 8 + 6 + 6 - sum(len(group.tasks) - 1 for group in groups)
    assert segments.made <= 3 * parallel.dask.max_in_flight
    assert len(set(names)) == segments.made < len(writes)


def test_shared_memory_false_ships_the_frames_with_the_same_results(client, scan):
    frames, background = scan
    raw = compose_raw_run(frames[:5], grid=(1, 5))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    parallel, parallel_out = make_pipe(DaskFrames(client, shared_memory=False), subtrahend=background)
    sent = parallel.nodes["in_flight"].sink_to_list()
    feed(parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    tasks = sent_tasks(sent)
    assert len(tasks) == 5 and all(isinstance(task.frames, np.ndarray) for task in tasks)
    assert parallel.dask.segments.made == 0


def test_a_worker_that_cannot_map_the_segment_gets_the_frames_by_dask(client, scan, caplog_streamcrystal):
    """A worker in another container (its own /dev/shm) cannot map the segment: resubmitted, shipped."""
    frames, background = scan
    raw = compose_raw_run(frames[:4], grid=(1, 4))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    dask = DaskFrames(client)
    real_share = dask.segments.share_many
    dask.segments.share_many = lambda arrays: [SharedFrames(shared.name + "-elsewhere", shared.shape, shared.dtype)
                                               for shared in real_share(arrays)]
    parallel, parallel_out = make_pipe(dask, subtrahend=background)
    feed(parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    log = [r.getMessage() for r in caplog_streamcrystal.records]
    assert any("cannot map shared memory segment 'sc_" in line and "resubmitted" in line for line in log), log
    assert any("not through shared memory" in line for line in log)


def test_mixed_hosts_restrict_shared_frames_to_this_hosts_workers(client):
    dask = DaskFrames(client)
    dask._set_hosts({"tcp://127.0.0.1:4001": {"host": "127.0.0.1"}, "tcp://192.0.2.7:4001": {"host": "192.0.2.7"}})
    shared = FrameTask("r1", 1, "primary", frames=SharedFrames("sc_000000000000", (2, 4, 4), "<u2"))
    assert dask._hosts_for(shared) == ["127.0.0.1"]
    assert dask._hosts_for(FrameTask("r1", 1, "primary", frames=np.zeros((2, 4, 4)))) is None
    dask._set_hosts({"tcp://192.0.2.7:4001": {"host": "192.0.2.7"}})  # no worker here: no shared memory
    assert not dask._hosts and dask._hosts_for(shared) is None
    with pytest.raises(ValueError, match="shared_memory must be None.*got 'yes'"):
        DaskFrames(client, shared_memory="yes")


def test_a_worker_killed_mid_run_leaves_no_segment_and_loses_nothing(client, scan, caplog_streamcrystal):
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4)) + compose_raw_run(frames[:4], grid=(1, 4))
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    dask = DaskFrames(client, max_in_flight=5, locate=slow_work(lambda seq: 0.3))
    parallel, parallel_out = make_pipe(dask, subtrahend=background)
    sent = parallel.nodes["in_flight"].sink_to_list()
    victim = kill_a_worker_mid_run(client, dask, parallel, raw)
    assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
    assert victim not in client.scheduler_info()["workers"]  # it really died mid-run
    # its tasks carried only segment names: the scheduler ran them again on the other worker
    # (or we resubmitted them, mapping the same segment), either way from the client's segment
    names = shared_names(sent)
    assert len(names) == 12 and left_in_dev_shm(names) == [] and len(dask.segments) == 0
    assert dask.segments.peak <= dask.max_in_flight
    client.wait_for_workers(2, timeout=60)


def test_closing_the_pipeline_mid_run_unlinks_the_segments_in_flight(client, scan):
    frames, background = scan
    dask = DaskFrames(client, max_in_flight=4, process=slow_process(3.0))
    pipe, _ = make_pipe(dask, subtrahend=background)
    sent = pipe.nodes["in_flight"].sink_to_list()
    with client.as_current():  # straight into the graph: no wait in Pipeline.__call__
        for name, doc in compose_raw_run(frames[:3], grid=(1, 3))[:-1]:  # mid-run: no stop (emit would wait for it)
            pipe.source.emit((name, doc))
    wait_for(lambda: len(shared_names(sent)) >= 2)
    names = shared_names(sent)
    assert left_in_dev_shm(names) == sorted(names)  # alive while their frames are in flight
    pipe.close()
    assert left_in_dev_shm(names) == [] and len(dask.segments) == 0


def test_closing_the_client_mid_run_unlinks_the_segments_in_flight(client, scan):
    frames, background = scan
    other = Client(client.scheduler.address)
    dask = DaskFrames(other, max_in_flight=4, process=slow_process(3.0))
    pipe, _ = make_pipe(dask, subtrahend=background)
    sent = pipe.nodes["in_flight"].sink_to_list()
    with other.as_current():
        for name, doc in compose_raw_run(frames[:3], grid=(1, 3))[:-1]:  # mid-run: no stop (emit would wait for it)
            pipe.source.emit((name, doc))
    wait_for(lambda: len(shared_names(sent)) >= 2)
    names = shared_names(sent)
    assert left_in_dev_shm(names) == sorted(names)
    other.close()  # the pipeline is not closed: the watchdog notices the client went
    wait_for(lambda: left_in_dev_shm(names) == [], timeout=10)
    assert len(dask.segments) == 0


def slow_process(seconds):
    from streamcrystal.graph.steps import process_step

    def work(task, **kwargs):
        time.sleep(seconds)
        return process_step(task, **kwargs)
    return work


def test_mapping_in_a_worker_does_not_register_with_the_resource_tracker(monkeypatch):
    registered = []
    monkeypatch.setattr(resource_tracker, "register", lambda name, rtype: registered.append(name))
    segments = SharedSegments()
    ref = segments.share(np.arange(12, dtype=np.uint16).reshape(1, 3, 4))
    registered.clear()  # the client's own segment is registered (its tracker unlinks it if it dies)
    with mapped(ref) as frames:
        assert frames.sum() == 66 and frames.dtype == np.uint16
        del frames
    assert registered == []
    segments.release_all()
    assert left_in_dev_shm([ref.name]) == []
    with pytest.raises(SharedFramesError, match=f"cannot map shared memory segment '{ref.name}'.*FileNotFoundError"):
        with mapped(ref):
            pass


def test_a_local_clusters_workers_share_the_trackers_process_and_nothing_is_reported(tmp_path):
    """In a fresh process (its resource tracker's output is its stderr): no KeyError, no "leaked"."""
    script = textwrap.dedent("""
        import numpy as np
        from distributed import Client, LocalCluster
        from streamcrystal.graph.shared import SharedSegments, mapped

        def total(ref):
            with mapped(ref) as frames:
                return int(frames.sum())

        if __name__ == "__main__":
            with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \\
                    Client(cluster) as client:
                segments = SharedSegments(client)
                ref = segments.share(np.ones((2, 64, 64), np.uint16))
                print("sum", client.submit(total, ref, pure=False).result(), ref.name, flush=True)
                segments.release_all()
    """)
    path = tmp_path / "tracker.py"
    path.write_text(script)
    tree = str(Path(streamcrystal.__file__).resolve().parents[1])  # this tree first, for the workers too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tree, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "sum 8192" in run.stdout
    name = run.stdout.split()[-1]
    assert "KeyError" not in run.stderr and "leaked shared_memory" not in run.stderr, run.stderr[-3000:]
    assert left_in_dev_shm([name]) == []


def test_a_free_segment_too_small_for_the_next_frames_is_unlinked_as_a_larger_one_is_made():
    """Groups of frames of different sizes must not pile up segments: at most one per item in flight."""
    pool = SharedSegments(keep=2)
    small = [pool.share(np.ones((2, 50), np.uint16)) for _ in range(2)]
    for ref in small:
        pool.release(ref.name)
    assert len(pool) == 2 and left_in_dev_shm([ref.name for ref in small]) == sorted(ref.name for ref in small)
    large = pool.share(np.ones((8, 5000), np.uint16))
    assert len(pool) == 2 and pool.peak == 2 and large.name not in {ref.name for ref in small}
    assert len(left_in_dev_shm([ref.name for ref in small])) == 1  # one small one gone, the other still free
    again = pool.share(np.ones((2, 50), np.uint16))  # fits the small one still free
    assert again.name in {ref.name for ref in small} and pool.recycled == 1
    pool.close()
    assert left_in_dev_shm([ref.name for ref in [*small, large]]) == []


def test_closed_segments_refuse_new_frames_and_leave_nothing():
    """A pipeline closed while a task is on its way to in_flight must not leave a segment behind."""
    pool = SharedSegments(keep=2)
    before = pool.share(np.ones((2, 50), np.uint16))
    pool.close()
    assert pool.closed and left_in_dev_shm([before.name]) == []
    with pytest.raises(ValueError, match="closed"):
        pool.share(np.ones((2, 50), np.uint16))
    assert len(pool) == 0 and pool.made == 1
