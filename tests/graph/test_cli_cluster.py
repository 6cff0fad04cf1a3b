"""The pipeline on a cluster started from the command line, as at a beamline (issue 16, part 2):
``dask scheduler`` and two ``dask worker`` processes on loopback, the pipeline connecting to
``tcp://127.0.0.1:PORT`` with ``make_client``. Not a ``LocalCluster``: the scheduler is a
process of its own and the workers are not children of the test's process."""
from __future__ import annotations

import os

import streamcrystal
from benchmarks.cli_cluster import cli_cluster
from tests.graph.test_parallel import assert_same_analysis, feed, make_pipe, run_uids
from tests.graph.test_shared_memory import shared_names
from tests.helpers.rawruns import compose_raw_run, drifting_spot_scan, spot_frames


def test_a_scheduler_and_two_workers_from_the_command_line_give_the_serial_results():
    frames, background = drifting_spot_scan(8), spot_frames([], n_frames=2, seed=99)
    raw = compose_raw_run(frames, grid=(2, 4)) + compose_raw_run(frames[:6], grid=(2, 3), event_page=True)
    serial, serial_out = make_pipe(subtrahend=background)
    feed(serial, raw)
    with cli_cluster(2) as address:
        assert address.startswith("tcp://127.0.0.1:")
        client = streamcrystal.make_client(address)
        try:
            workers = client.scheduler_info()["workers"]
            assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers)
            assert client.cluster is None  # no LocalCluster behind it: the processes are the CLI's
            parallel, parallel_out = make_pipe(client, subtrahend=background)
            sent = parallel.nodes["in_flight"].sink_to_list()
            feed(parallel, raw, timeout=120)
            assert_same_analysis(serial, parallel, serial_out, parallel_out, run_uids(raw))
            # the workers share this host: the frames went through shared memory, and none is left
            names = shared_names(sent)  # the event page's six events as one task: one segment
            assert len(names) == 8 + 6 and len(set(names[8:])) == 1
            if os.path.isdir("/dev/shm"):
                assert not set(names) & set(os.listdir("/dev/shm"))
            parallel.close()
        finally:
            client.close()
