"""``streamcrystal proxy`` + ``streamcrystal serve`` as real processes on real sockets.

A simulated grid scan is published over 0MQ; what the server writes must equal what the
pipeline computes in-process on the same documents. The server must survive garbage, never
unpickle, lose nothing when killed and re-fed, and close the run in progress on SIGTERM.
"""
from __future__ import annotations

import copy
import pickle
import signal
import threading

import msgpack
import numpy as np
import pandas as pd
import pytest
import zmq
from bluesky.callbacks.zmq import Publisher
from tests.helpers.reference import timeless
from tests.helpers.serving import Process, connect, free_port, streams, terminate_all, wait_for

from streamcrystal import load_pipeline
from streamcrystal.storage.jsonl import read_documents
from streamcrystal.serve.server import DocumentDispatcher, Server
from streamcrystal.storage.spool import SpoolingWriter, flush_spool
from streamcrystal.errors import MessageError
from streamcrystal.serve.wire import dumps

SCAN = dict(grid_shape=(6, 5), detector_shape=(256, 256), frames_per_point=2, n_grains=2, peaks_per_grain=2,
            min_peak_distance=60, dark_frames=2)
PIPELINE = "peak_tracking"


@pytest.fixture(scope="module")
def scans():
    """Two simulated scans (seeds 0 and 1): [(raw uid, documents)]."""
    from streamcrystal.sim import simulate_scan

    runs = []
    for seed in (0, 1):
        docs = []
        uid, _ = simulate_scan(seed=seed, callbacks=[lambda name, doc: docs.append((name, copy.deepcopy(doc)))], **SCAN)
        runs.append((uid, docs))
    return runs


@pytest.fixture(scope="module")
def expected(scans):
    """The in-process pipeline's analysis documents of each scan, by raw uid."""
    import trackpy

    trackpy.quiet()
    results = {}
    for uid, docs in scans:
        pipe = load_pipeline(PIPELINE).make_pipeline()
        out = []
        pipe.subscribe(lambda name, doc: out.append((name, doc)))
        for name, doc in docs:
            pipe(name, doc)
        results[uid] = out
    return results


def analysis_runs(directory, raw_uid):
    """The analysis runs of ``raw_uid`` written as JSON lines in ``directory``."""
    runs = []
    for path in sorted(directory.glob("*.jsonl")):
        docs = read_documents(path)
        if docs and docs[0][0] == "start" and docs[0][1].get("raw_uid") == raw_uid:
            runs.append(docs)
    return runs


def assert_same_analysis(served, expected, *, check_stop=True):
    got, want = streams(served), streams(expected)
    assert set(got) == set(want)
    for stream in ("features", "frames", "tracks"):
        pd.testing.assert_frame_equal(timeless(got[stream]), timeless(want[stream]), check_dtype=False)
    if "maps" in want:
        pd.testing.assert_frame_equal(got["maps"].drop(columns="map"), want["maps"].drop(columns="map"), check_dtype=False)
        for a, b in zip(got["maps"]["map"], want["maps"]["map"]):
            np.testing.assert_array_equal(a, b)
    assert served[0][1]["pipeline"]["parameters"] == expected[0][1]["pipeline"]["parameters"]
    if check_stop:
        assert served[-1][0] == expected[-1][0] == "stop"
        assert served[-1][1]["exit_status"] == expected[-1][1]["exit_status"]


class Chain:
    """A proxy and a server (subprocesses), a Publisher and a raw PUB socket into the proxy."""

    def __init__(self, directory, *, server_args=()):
        self.directory = directory
        self.results = directory / "results"
        self.in_port, self.out_port = free_port(), free_port()
        self.processes = []
        self.proxy = self._start(["proxy", self.in_port, self.out_port], "proxy")
        self.publisher = Publisher(f"localhost:{self.in_port}", prefix=b"raw", serializer=dumps)
        self.context = zmq.Context()
        self.raw = self.context.socket(zmq.PUB)
        self.raw.connect(f"tcp://127.0.0.1:{self.in_port}")
        self.server_args = list(server_args)
        self.server = None

    def _start(self, args, label):
        process = Process(args, self.directory, label)
        self.processes.append(process)
        return process

    def start_server(self, label="serve"):
        self.server = self._start(["serve", PIPELINE, "--address", f"localhost:{self.out_port}", "--jsonl", self.results,
                                   "--spool-dir", self.directory / "spool", *self.server_args], label)
        connect(lambda: self.publisher("ping", {}), self.server)
        connect(lambda: self.raw.send(b"raw ping \x80"), self.server)
        return self.server

    def publish(self, docs):
        for name, doc in docs:
            self.publisher(name, doc)

    def dropped(self):
        return self.server.stderr().count("dropped a message")

    def close(self):
        try:
            terminate_all(self.processes)
        finally:
            self.publisher.close()
            self.raw.close(linger=0)
            self.context.term()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    chain = Chain(tmp_path_factory.mktemp("chain"))
    try:
        chain.start_server()
        yield chain
    finally:
        chain.close()


def test_served_run_equals_in_process_pipeline(chain, scans, expected):
    uid, docs = scans[0]
    chain.publish(docs)
    out = chain.server.wait_output(f"run {uid}:")
    line = next(line for line in out.splitlines() if line.startswith(f"run {uid}:"))
    (served,) = analysis_runs(chain.results, uid)
    assert_same_analysis(served, expected[uid])
    n_features = len(streams(expected[uid])["features"])
    n_maps = len(streams(expected[uid]).get("maps", []))
    n_grains = len(streams(expected[uid]).get("grains", []))  # the in-process pipeline's grains stream
    assert n_grains >= 1
    assert (f"30 events (0 skipped), {n_features} peaks, {n_maps} particles -> analysis {served[0][1]['uid']} "
            f"[success], {n_grains} grains") in line


def test_garbage_is_dropped_and_the_next_run_processed(chain, scans, expected):
    before = chain.dropped()
    garbage = [
        b"no-separators-at-all",
        b"raw event \xff\xfe\x00 not msgpack",
        b"raw \xff\xfe a-name-that-is-not-utf8",
        b"raw start " + msgpack.packb([1, 2, 3]),
        b"raw chitchat " + msgpack.packb({"uid": "x"}),
    ]
    for message in garbage:
        chain.raw.send(message)
    # documents that decode but make no sense reach the pipeline, which logs and goes on
    chain.publisher("event", {"descriptor": "nowhere", "seq_num": 1, "data": {}})
    chain.publisher("stop", {"uid": "s", "run_start": "never-started", "time": 0.0})
    chain.publisher("start", {"no": "uid"})
    uid, docs = scans[1]
    chain.publish(docs)
    chain.server.wait_output(f"run {uid}:")
    assert chain.dropped() - before == len(garbage)
    assert chain.server.popen.poll() is None
    (served,) = analysis_runs(chain.results, uid)
    assert_same_analysis(served, expected[uid])


class _Trap:
    """Unpickling this creates the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_msgpack_is_the_default_and_pickle_is_never_unpickled(chain, tmp_path):
    trap = tmp_path / "unpickled"
    in_pickle = b"raw start " + pickle.dumps(_Trap(trap))
    in_msgpack = b"raw start " + msgpack.packb(
        {"uid": "u", "bad": {b"nd": True, b"kind": b"O", b"type": "|O", b"shape": [1], b"data": pickle.dumps(_Trap(trap))}},
        use_bin_type=True)
    before = chain.dropped()
    chain.raw.send(in_pickle)
    chain.raw.send(in_msgpack)
    wait_for(lambda: chain.dropped() - before == 2, 30, "two dropped messages", on_timeout=chain.server.output)
    assert "object array (pickled data)" in chain.server.stderr()
    assert not trap.exists()
    assert chain.server.popen.poll() is None


def _first_events(docs, n_primary):
    """The documents of a run up to its ``n_primary``-th primary event (no stop)."""
    primary = next(doc["uid"] for name, doc in docs if name == "descriptor" and doc["name"] == "primary")
    out, seen = [], 0
    for name, doc in docs:
        out.append((name, doc))
        if name == "event" and doc["descriptor"] == primary:
            seen += 1
            if seen == n_primary:
                return out
    raise AssertionError("not enough events")


def _frames_written(directory, raw_uid):
    runs = analysis_runs(directory, raw_uid)
    return runs and len(streams(runs[-1]).get("frames", [])) or 0


@pytest.mark.slow
def test_killed_server_restarted_and_run_republished_loses_nothing(tmp_path, scans, expected):
    uid, docs = scans[0]
    chain = Chain(tmp_path)
    try:
        first = chain.start_server("serve-1")
        chain.publish(_first_events(docs, 12))
        wait_for(lambda: _frames_written(chain.results, uid) >= 5, 60, "frames of the first server",
                 on_timeout=first.output)
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        second = chain.start_server("serve-2")
        chain.publish(docs)
        out = second.wait_output(f"run {uid}:")
        runs = analysis_runs(chain.results, uid)
        (partial,) = [run for run in runs if run[-1][0] != "stop"]  # written live, never closed
        # the killed server's journal, closed and inserted by the next server as it started
        (recovered,) = [run for run in runs if run[-1][0] == "stop" and run[-1][1]["exit_status"] == "abort"]
        assert f"inserted analysis run {partial[0][1]['uid']}, spooled by an earlier server" in out
        assert recovered[0][1]["spool"]["original_uid"] == partial[0][1]["uid"]
        # the journal is written before the catalog (whose writer thread may lag): killed between
        # the two, it holds every frame of the catalog's partial run, and maybe more
        journal, written = streams(recovered)["frames"], streams(partial)["frames"]
        assert len(written) >= 5 and set(written["frame"]) <= set(journal["frame"])
        (complete,) = [run for run in runs if run[-1][0] == "stop" and run[-1][1]["exit_status"] == "success"]
        assert_same_analysis(complete, expected[uid])
    finally:
        chain.close()


@pytest.mark.slow
def test_sigterm_closes_the_run_in_progress_and_exits_cleanly(tmp_path, scans, expected):
    uid, docs = scans[0]
    chain = Chain(tmp_path)
    try:
        server = chain.start_server()
        chain.publish(_first_events(docs, 12))
        wait_for(lambda: _frames_written(chain.results, uid) == 12, 60, "12 frames written", on_timeout=server.output)
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0, server.output()
        (served,) = analysis_runs(chain.results, uid)
        name, stop = served[-1]
        assert name == "stop" and stop["exit_status"] == "abort" and "SIGTERM" in stop["reason"]
        got = streams(served)
        assert "tracks" in got and len(got["frames"]) == 12
        want = streams(expected[uid])["features"]
        pd.testing.assert_frame_equal(got["features"], want[want.frame <= 12], check_dtype=False)
        assert f"run {uid}: 12 events" in server.stdout() and "[abort]" in server.stdout()
        assert "stopped (SIGTERM): 1 run, 1 closed early" in server.stdout()
    finally:
        chain.close()


def test_catalog_away_results_spooled_then_flushed(tmp_path, scans, expected):
    """In-process server (thread) behind a real proxy; its insert fails: the run is spooled."""
    uid, docs = scans[0]
    in_port, out_port = free_port(), free_port()
    proxy = Process(["proxy", in_port, out_port], tmp_path, "proxy")
    publisher = Publisher(f"localhost:{in_port}", prefix=b"raw", serializer=dumps)
    statuses = []

    def insert(name, doc):
        raise ConnectionError("catalog unreachable")

    writer = SpoolingWriter(insert, tmp_path / "spool", retry_interval=0)
    server = Server(load_pipeline(PIPELINE).make_pipeline(), writer, address=f"localhost:{out_port}",
                    on_run=statuses.append, destination="catalog")
    reports = []
    thread = threading.Thread(target=lambda: reports.append(server.run(handle_signals=False)), daemon=True)
    thread.start()
    try:
        def heard():
            publisher("ping", {})
            return server.dispatcher.dropped

        wait_for(heard, 30, "the server to hear a ping", interval=0.1, on_timeout=proxy.output)
        for name, doc in docs:
            publisher(name, doc)
        wait_for(lambda: statuses, 60, "the run's status")
        server.request_stop("test")
        thread.join(30)
        assert not thread.is_alive()
    finally:
        server.request_stop("teardown")
        publisher.close()
        terminate_all([proxy])
    (status,) = statuses
    spool_file = tmp_path / "spool" / f"{status.analysis_uid}.jsonl"
    assert status.saved == f"spooled to {spool_file}"
    assert reports[0].spooled == [spool_file]
    inserted = []
    report = flush_spool(tmp_path / "spool", lambda name, doc: inserted.append((name, doc)))
    assert report and list(report.inserted) == [status.analysis_uid] and not spool_file.exists()
    assert inserted[0][1]["uid"] == report.inserted[status.analysis_uid]  # a copy under new uids
    assert inserted[0][1]["spool"]["original_uid"] == status.analysis_uid
    assert_same_analysis(inserted, expected[uid])


@pytest.mark.parametrize("message, problem", [
    (b"raw", "not 'prefix name payload'"),
    (b"raw nope " + dumps({}), "unknown document name"),
    (b"raw start \xc1", "undecodable msgpack"),
    (b"raw start " + dumps([1]), "not a document"),
    (b"raw start " + pickle.dumps({"uid": "x"}), "undecodable msgpack"),
], ids=["no-separators", "unknown-name", "bad-msgpack", "not-a-map", "pickle"])
def test_dispatcher_rejects_what_is_not_a_document(message, problem):
    dispatcher = DocumentDispatcher("localhost:1", prefix=b"raw")
    try:
        with pytest.raises(MessageError, match=problem):
            dispatcher.decode(message)
        assert dispatcher.decode(b"other start " + dumps({"uid": "x"})) is None  # another publisher's
        assert dispatcher.decode(b"raw start " + dumps({"uid": "x"})) == ("start", {"uid": "x"})
    finally:
        dispatcher.loop.close()


def test_seed_server_pipeline_file_and_cli_checks(capsys):
    from streamcrystal.cli.main import main

    module = load_pipeline("seed_server")
    assert module.SERVE == {"address": "localhost:5568", "prefix": "raw"}
    assert module.make_pipeline().parameters["locate_kwargs"] == {"percentile": 80, "separation": 100}
    with pytest.raises(SystemExit):
        main(["serve", "seed_server", "--jsonl", "x", "--catalog", "y"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_stored_run_published_from_the_catalog_and_served_into_it(tmp_path):
    """simulate -> catalog; `streamcrystal publish UID` -> proxy -> `streamcrystal serve --catalog`
    -> catalog: the stored analysis equals the in-process pipeline's on the same documents."""
    import streamcrystal as sc
    from streamcrystal.sim import simulate_scan
    from streamcrystal.storage.catalog import raw_data_dir

    path = tmp_path / "catalog"
    db = sc.catalog(path)
    uid, _ = simulate_scan(write_dir=raw_data_dir(db), callbacks=[db.insert], **SCAN)
    pipe = load_pipeline(PIPELINE).make_pipeline()
    for name, doc in db[uid].documents(fill=False):
        pipe(name, dict(doc))
    want = pipe.results(uid)

    in_port, out_port = free_port(), free_port()
    processes = [Process(["proxy", in_port, out_port], tmp_path, "proxy")]
    try:
        server = Process(["serve", PIPELINE, "--address", f"localhost:{out_port}", "--catalog", path,
                          "--spool-dir", tmp_path / "spool"], tmp_path, "serve")
        processes.append(server)
        server.wait_output("serving", timeout=120)
        publisher = Publisher(f"localhost:{in_port}", prefix=b"raw", serializer=dumps)
        try:
            connect(lambda: publisher("ping", {}), server)
        finally:
            publisher.close()
        publish = Process(["publish", uid, "--address", f"localhost:{in_port}", "--catalog", path], tmp_path, "publish")
        processes.append(publish)
        assert publish.wait(120) == 0, publish.output()
        assert "published 1 start" in publish.stdout()
        out = server.wait_output(f"run {uid}:", timeout=120)
        assert "[success]" in out and f"saved: catalog {path}" in out
    finally:
        terminate_all(processes)
    got = sc.load_results(db, uid)
    assert_same_results(got, want)


def assert_same_results(got, want):
    """Stored results (``load_results``) equal the in-process pipeline's."""
    for table in ("features", "frames", "tracks", "particles"):
        columns = list(timeless(getattr(want, table)).columns)
        pd.testing.assert_frame_equal(getattr(got, table)[columns].reset_index(drop=True),
                                      getattr(want, table)[columns].reset_index(drop=True), check_dtype=False)
    np.testing.assert_array_equal(got.maps.values, want.maps.values)


def test_publish_command_replays_a_jsonl_file(chain, scans, expected, tmp_path):
    from streamcrystal.storage.jsonl import append_documents

    from streamcrystal.storage.spool import rekey

    uid, docs = scans[1]
    docs = rekey(docs)  # the same scan as a new run: a pipeline processes a run uid once
    path = tmp_path / "run.jsonl"
    append_documents(path, docs)
    publish = Process(["publish", "--jsonl", path, "--address", f"localhost:{chain.in_port}"], tmp_path, "publish")
    try:
        assert publish.wait(60) == 0, publish.output()
    finally:
        publish.kill()
    assert "published 1 start, 2 descriptor, 32 event, 1 stop" in publish.stdout()  # 2 dark + 30 primary events
    chain.server.wait_output(f"run {docs[0][1]['uid']}:")
    (served,) = analysis_runs(chain.results, docs[0][1]["uid"])
    assert_same_analysis(served, expected[uid])


def test_spool_commands_list_and_flush(tmp_path, capsys):
    from streamcrystal.cli.main import main
    from streamcrystal.storage.jsonl import append_documents

    spool = tmp_path / "spool"
    spool.mkdir()
    append_documents(spool / "a1.jsonl", [("start", {"uid": "a1", "time": 1.0}), ("stop", {"uid": "s", "run_start": "a1"})])
    assert main(["spool", "list", "--spool-dir", str(spool)]) == 0
    out = capsys.readouterr()
    assert str(spool / "a1.jsonl") in out.out and "1 analysis run spooled" in out.err
    assert main(["spool", "flush", "--spool-dir", str(spool), "--jsonl", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"inserted analysis run a1 into {tmp_path / 'out'}/ as ")
    new_uid = line.split()[-1]
    assert [name for name, _ in read_documents(tmp_path / "out" / f"{new_uid}.jsonl")] == ["start", "stop"]
    assert not (spool / "a1.jsonl").exists()


@pytest.mark.slow
def test_server_killed_mid_run_restarted_and_the_run_replayed_from_the_catalog(tmp_path):
    """A server writing into the catalog is SIGKILLed in the middle of a run; a new server
    recovers the dead one's journal; `streamcrystal replay` reprocesses the stored raw run:
    the newest analysis equals the in-process pipeline's, and the partial one is kept, closed."""
    import streamcrystal as sc
    from streamcrystal.sim import simulate_scan
    from streamcrystal.storage.catalog import raw_data_dir
    from streamcrystal.storage.writeback import analysis_runs as stored_analyses

    path = tmp_path / "catalog"
    db = sc.catalog(path)
    live_docs = []
    uid, _ = simulate_scan(write_dir=raw_data_dir(db), callbacks=[db.insert, lambda n, d: live_docs.append((n, copy.deepcopy(d)))],
                           **SCAN)
    pipe = load_pipeline(PIPELINE).make_pipeline()
    for name, doc in live_docs:
        pipe(name, doc)
    want = pipe.results(uid)

    in_port, out_port = free_port(), free_port()
    spool = tmp_path / "spool"
    serve_args = ["serve", PIPELINE, "--address", f"localhost:{out_port}", "--catalog", path, "--spool-dir", spool]
    processes = [Process(["proxy", in_port, out_port], tmp_path, "proxy")]
    try:
        first = Process(serve_args, tmp_path, "serve-1")
        processes.append(first)
        first.wait_output("serving", timeout=120)
        publisher = Publisher(f"localhost:{in_port}", prefix=b"raw", serializer=dumps)
        try:
            connect(lambda: publisher("ping", {}), first)
            for name, doc in _first_events(live_docs, 12):  # the run is cut after 12 of its 30 events
                publisher(name, doc)
            wait_for(lambda: any(p.read_text().count('"frames"') + p.read_text().count("n_peaks") >= 5
                                 for p in spool.glob("*.jsonl")), 60, "a journal with frames", on_timeout=first.output)
        finally:
            publisher.close()
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        second = Process(serve_args, tmp_path, "serve-2")
        processes.append(second)
        out = second.wait_output("serving", timeout=120)
        assert "spooled by an earlier server" in out
    finally:
        terminate_all(processes)
    replay = Process(["replay", uid, "--catalog", path, "--no-progress"], tmp_path, "replay")
    assert replay.wait(180) == 0, replay.output()
    assert f"run {uid}: 30 events (0 skipped)" in replay.stdout()

    runs = stored_analyses(db, uid)
    # the part the killed server had written live (no stop), its journal closed and inserted by
    # the next server (abort), the replay (success)
    statuses = [(run.metadata.get("stop") or {}).get("exit_status") for run in runs]
    assert statuses == [None, "abort", "success"]
    got = sc.load_results(db, uid)
    assert_same_results(got, want)


def test_the_pipeline_goes_on_while_the_writer_waits_and_nothing_is_lost(scans, expected):
    """A writer stuck on the first document (a catalog round trip that hangs) does not hold up
    the pipeline: every analysis document of the run is produced and queued meanwhile; once the
    writer goes on, all are written in order and equal the in-process results."""
    uid, docs = scans[0]
    release = threading.Event()
    written, statuses = [], []

    def writer(name, doc):
        release.wait(60)
        written.append((name, doc))

    server = Server(load_pipeline(PIPELINE).make_pipeline(), writer, address=f"localhost:{free_port()}",
                    on_run=statuses.append)
    try:
        from bluesky.run_engine import DocumentNames

        for name, doc in docs:
            server.dispatcher.process(DocumentNames[name], doc)
        assert not written and not statuses
        assert server._writer_thread.queued == len(expected[uid])  # the whole analysis run, produced
        release.set()
        report = server._finish()
    finally:
        release.set()
        server.dispatcher.loop.close()
    assert_same_analysis(written, expected[uid])
    assert [status.raw_uid for status in statuses] == [uid] == [status.raw_uid for status in report.runs]
