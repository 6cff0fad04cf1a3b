"""The catalog: a real embedded Tiled server on disk (SQLite), a real `tiled serve` process,
raw scans with their frames in HDF5 files, analysis write-back, replay, several processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas.testing as pdt
import pytest

import streamcrystal as sc
from streamcrystal.sim import simulate_scan
from streamcrystal.storage.catalog import raw_data_dir
from streamcrystal.storage.writeback import analysis_runs, catalog_writer

SCAN = dict(grid_shape=(6, 5), detector_shape=(384, 384), frames_per_point=2, n_grains=2, peaks_per_grain=2,
            min_peak_distance=110, dark_frames=2)
REPO = Path(sc.__file__).resolve().parents[1]


def make_pipe():
    return sc.load_pipeline("peak_tracking").make_pipeline(maxsize=3.0, min_frames=2)


def subprocess_env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture(scope="module")
def stored(catalog_dir):
    """A scan stored with its frames in HDF5 and analysed live, the analysis written back."""
    db = sc.catalog(catalog_dir)
    pipe = make_pipe()
    pipe.subscribe(catalog_writer(db))
    uid, truth = simulate_scan(seed=2, write_dir=raw_data_dir(db), callbacks=[db.insert, pipe], **SCAN)
    return db, uid, truth, pipe.results(uid)


def assert_same_results(a, b):
    pdt.assert_frame_equal(a.features.reset_index(drop=True), b.features[list(a.features.columns)], check_dtype=False)
    pdt.assert_frame_equal(a.tracks.reset_index(drop=True), b.tracks[list(a.tracks.columns)], check_dtype=False)
    pdt.assert_frame_equal(a.particles.reset_index(drop=True), b.particles.reset_index(drop=True), check_dtype=False)
    np.testing.assert_array_equal(a.maps.values, b.maps.values)
    for dim in a.maps.dims[1:]:
        np.testing.assert_allclose(a.maps[dim].values, b.maps[dim].values)
    # the grains: each particle's, the table (members, counts), the maps and the label map
    pdt.assert_frame_equal(a.grains[["particle", "grain"]].reset_index(drop=True),
                           b.grains[["particle", "grain"]].reset_index(drop=True), check_dtype=False)
    columns = ["particles", "n_reflections", "n_particles", "footprint"]
    pdt.assert_frame_equal(a.grain_table[columns], b.grain_table[columns], check_dtype=False)
    np.testing.assert_array_equal(a.grain_maps.values, b.grain_maps.values)
    np.testing.assert_array_equal(a.grain_labels.values, b.grain_labels.values)
    assert a.grain_maps.dims == b.grain_maps.dims and len(a.grain_table) >= 1


def test_raw_frames_are_external_and_read_back_equal_to_what_the_detector_took(stored):
    db, uid, truth, _ = stored
    names_inline = []
    inline = {}

    def keep(name, doc):
        names_inline.append(name)
        if name == "event" and "dexela_image" in doc["data"]:
            inline[doc["seq_num"]] = doc["data"]["dexela_image"]

    simulate_scan(seed=2, callbacks=[keep], **SCAN)  # the same scan, frames inline
    stored_docs = [(n, d) for n, d in db[uid].documents(fill=False)]
    assert "stream_resource" in [n for n, _ in stored_docs]
    assert all("dexela_image" not in d["data"] for n, d in stored_docs if n == "event")  # no inline arrays
    frames = db.v3[uid]["primary"]["dexela_image"].read()
    assert frames.shape == (30, 2, 384, 384)
    # the dark stream's events come first in seq_num order of their own stream; primary's are 1..30
    primary = sorted(k for k in inline)[-30:]
    np.testing.assert_array_equal(np.asarray(frames), np.stack([inline[k] for k in primary]))


def test_analysis_written_back_equals_the_live_results(stored):
    db, uid, truth, live = stored
    back = sc.load_results(db, uid)
    assert_same_results(live, back)
    run = analysis_runs(db, uid)[-1]
    assert run.start["raw_uid"] == uid and run.start["analysis_stage"] == "peak_tracking"
    maps = np.asarray(run["maps"]["map"].read())
    assert maps.shape == (len(live.particles), *SCAN["grid_shape"])
    assert len(live.particles) == SCAN["n_grains"] * SCAN["peaks_per_grain"]


def test_replay_twice_makes_two_analysis_runs_and_results_are_the_newest(stored):
    db, uid, _, live = stored
    before = [run.start["uid"] for run in analysis_runs(db, uid)]
    first = sc.replay(db, uid, make_pipe())
    nothing_mapped = sc.load_pipeline("peak_tracking").make_pipeline(maxsize=3.0, min_frames=100)
    second = sc.replay(db, uid, nothing_mapped)
    after = [run.start["uid"] for run in analysis_runs(db, uid)]
    assert after == before + [first.analysis_uid, second.analysis_uid]  # added, nothing overwritten
    assert_same_results(live, first.results)  # replayed from the files = processed live
    newest = sc.load_results(db, uid)
    assert newest.maps.sizes["particle"] == 0  # the second replay (min_frames=100) mapped nothing
    pdt.assert_frame_equal(newest.features, sc.load_results(db, uid).features)
    assert len(newest.features) == len(live.features)


def test_unknown_raw_run_says_how_to_make_an_analysis(stored):
    db = stored[0]
    with pytest.raises(KeyError, match="streamcrystal replay"):
        sc.load_results(db, "no-such-run")


def test_publish_and_replay_name_what_they_cannot_send(stored, catalog_dir, capsys):
    """A uid not in the catalog, and an analysis run (publish sends raw runs, as replay
    analyses them): one line each, exit status 2, nothing sent."""
    from streamcrystal.cli.main import main

    db, uid, _, _ = stored
    assert main(["publish", "deadbeef", "--catalog", str(catalog_dir), "--address", "localhost:1"]) == 2
    assert "error: no run 'deadbeef' in the catalog" in capsys.readouterr().err
    analysis = analysis_runs(db, uid)[0].start["uid"]
    assert main(["publish", analysis, "--catalog", str(catalog_dir), "--address", "localhost:1"]) == 2
    err = capsys.readouterr().err
    assert f"run {analysis} is an analysis run (peak_tracking) of raw run {uid}: publish the raw run" in err


def test_a_file_is_not_a_catalog_and_a_missing_one_is_not_made_by_commands_that_read(tmp_path, capsys):
    from streamcrystal.cli.main import main

    a_file = tmp_path / "a_file"
    a_file.write_text("not a catalog")
    with pytest.raises(NotADirectoryError, match="is a file"):
        sc.catalog(a_file)
    for command in (["replay", "abc"], ["publish", "abc"]):
        for where in (a_file, tmp_path / "mistyped"):
            assert main([*command, "--catalog", str(where)]) == 2
            assert f"error: no catalog in {where} (catalog.db not found)" in capsys.readouterr().err
    assert not (tmp_path / "mistyped").exists()


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout)


@pytest.mark.slow
def test_runs_persist_and_two_other_processes_write_the_same_catalog_at_once(stored, catalog_dir):
    db, uid, _, _ = stored
    code = f"""
        import json, streamcrystal as sc
        from streamcrystal.sim import simulate_scan
        from streamcrystal.storage.catalog import raw_data_dir
        db = sc.catalog({str(catalog_dir)!r})
        assert db[{uid!r}].start["uid"] == {uid!r}, "a run stored by another process is there"
        new, _ = simulate_scan(grid_shape=(4, 4), detector_shape=(128, 128), frames_per_point=1, n_grains=1,
                               peaks_per_grain=1, min_peak_distance=20, write_dir=raw_data_dir(db), callbacks=[db.insert])
        print(json.dumps({{"uid": new, "shape": list(db.v3[new]["primary"]["dexela_image"].read().shape)}}))
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=subprocess_env()) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    written = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    for run in written:
        assert run["shape"] == [16, 1, 128, 128]
        assert db[run["uid"]].stop["exit_status"] == "success"  # seen by this process's server too
    # and a fresh process reads everything back after the writers are gone
    done = run_python(f"""
        import streamcrystal as sc
        db = sc.catalog({str(catalog_dir)!r})
        print(sorted(db.v2))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    for run_uid in [uid] + [run["uid"] for run in written]:
        assert run_uid in done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiled_server(tmp_path_factory):
    """A real `tiled serve config` process (SQLite here; PostgreSQL at a beamline)."""
    directory = tmp_path_factory.mktemp("tiled-server")
    (directory / "data").mkdir()
    config = directory / "config.yml"
    config.write_text(textwrap.dedent(f"""
        authentication:
          single_user_api_key: testsecret0123
        trees:
          - path: /
            tree: catalog
            args:
              uri: sqlite:///{directory}/catalog.db
              writable_storage: ["{directory}/data", "sqlite:///{directory}/tables.sqlite"]
              init_if_not_exists: true
        media_types:
          BlueskyRun:
            application/json-seq: bluesky_tiled_plugins.exporters:json_seq_exporter
    """))
    port = free_port()
    proc = subprocess.Popen(["tiled", "serve", "config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "tiled serve did not start in 60 s"
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", directory
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_an_existing_tiled_server_by_uri(tiled_server):
    uri, directory = tiled_server
    db = sc.catalog(uri=uri, api_key="testsecret0123")
    pipe = make_pipe()
    pipe.subscribe(catalog_writer(db, directory / "data" / "analysis"))
    uid, _ = simulate_scan(seed=5, write_dir=directory / "data" / "raw", callbacks=[db.insert, pipe], **SCAN)
    assert np.asarray(db.v3[uid]["primary"]["dexela_image"].read()).shape == (30, 2, 384, 384)
    assert_same_results(pipe.results(uid), sc.load_results(db, uid))
    replayed = sc.replay(db, uid, make_pipe(), writer=catalog_writer(db, directory / "data" / "analysis"))
    assert_same_results(pipe.results(uid), replayed.results)


def test_wrong_api_key_is_a_clear_connection_error(tiled_server):
    uri, _ = tiled_server
    with pytest.raises(ConnectionError, match=uri.split("//")[1]):
        sc.catalog(uri=uri, api_key="wrong")


@pytest.mark.slow
def test_cli_simulate_then_replay(tmp_path):
    env = subprocess_env()
    simulate = subprocess.run([sys.executable, "-m", "streamcrystal.cli", "simulate", "--catalog", str(tmp_path),
                               "--grid", "4x4", "--detector", "256x256", "--frames", "1", "--grains", "1"],
                              capture_output=True, text=True, env=env, timeout=180)
    assert simulate.returncode == 0, simulate.stderr[-3000:]
    uid = simulate.stdout.strip().splitlines()[-1]
    assert f"streamcrystal replay {uid}" in simulate.stderr
    # a run that is not there: this process only reads, so it runs beside the replay (its start-up,
    # seconds of imports and an embedded server, overlaps the replay's on the second core)
    missing = subprocess.Popen([sys.executable, "-m", "streamcrystal.cli", "replay", "nosuchrun", "--catalog",
                                str(tmp_path), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        replay = subprocess.run([sys.executable, "-m", "streamcrystal.cli", "replay", uid[:8], "--catalog", str(tmp_path),
                                 "--no-progress"], capture_output=True, text=True, env=env, timeout=180)
        assert replay.returncode == 0, replay.stderr[-3000:]
        assert f"run {uid}: 16 events (0 skipped)" in replay.stdout
        serial = sc.load_results(sc.catalog(tmp_path), uid)
        # the same on a Dask LocalCluster: the workers read the frames from the HDF5 files
        parallel = subprocess.run([sys.executable, "-m", "streamcrystal.cli", "replay", uid, "--catalog", str(tmp_path),
                                   "--cluster", "local:2", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
        assert parallel.returncode == 0, parallel.stderr[-3000:]
        assert "dashboard http://127.0.0.1:" in parallel.stderr
        assert_same_results(serial, sc.load_results(sc.catalog(tmp_path), uid))
        assert len(analysis_runs(sc.catalog(tmp_path), uid)) == 2
        _, missing_stderr = missing.communicate(timeout=180)
    finally:
        missing.kill()
        missing.wait()
    assert missing.returncode == 1 and "nosuchrun" in missing_stderr
