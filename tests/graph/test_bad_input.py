"""Bad input: logged with run uid and seq_num, skipped, named in the stop, the rest kept."""
from __future__ import annotations

import numpy as np
import pytest

import streamcrystal
from tests.helpers.rawruns import DATA_KEY, compose_raw_run, drifting_spot_scan, spot_frames
from tests.helpers.reference import offline_features, stream_rows

LOCATE = dict(diameter=9, percentile=64, separation=20, minmass=1000.0)


@pytest.fixture(scope="module")
def frames():
    return drifting_spot_scan(4)


@pytest.fixture
def background():
    return spot_frames([], n_frames=2, seed=99)


def feed(pipe, docs):
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in docs:
        pipe(name, doc)  # must never raise
    return out


def make_pipe(background, **kw):
    return streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, subtrahend=background, **kw)


def corrupt(docs, seq_num, change):
    """Apply ``change`` to the data of the primary event ``seq_num`` (a copy)."""
    result = []
    for name, doc in docs:
        if name == "event" and doc["seq_num"] == seq_num and DATA_KEY in doc["data"]:
            doc = {**doc, "data": dict(doc["data"])}
            change(doc["data"])
        result.append((name, doc))
    return result


BAD_EVENTS = {
    "missing data key": (lambda data: data.pop(DATA_KEY), "has no data key 'det_image'"),
    "wrong shape": (lambda data: data.update({DATA_KEY: np.ones((2, 10, 10), np.uint16)}), "does not match background shape"),
    "NaN": (lambda data: data.update({DATA_KEY: np.full((2, 96, 128), np.nan)}), "NaN pixel"),
    "all zero": (lambda data: data.update({DATA_KEY: np.zeros((2, 96, 128), np.uint16)}), "all zero"),
}


@pytest.mark.parametrize("kind", sorted(BAD_EVENTS))
def test_bad_event_is_logged_skipped_named_in_the_stop_and_good_ones_kept(kind, frames, background, caplog_streamcrystal):
    change, message = BAD_EVENTS[kind]
    raw = corrupt(compose_raw_run(frames, grid=(1, 4)), 2, change)
    raw_uid = raw[0][1]["uid"]
    out = feed(make_pipe(background), raw)
    log = [r.getMessage() for r in caplog_streamcrystal.records]
    assert any(raw_uid in line and "seq_num 2" in line and message in line for line in log), log
    stop = out[-1][1]
    assert "seq_num 2" in stop["reason"] and message in stop["reason"]
    skipped = stream_rows(out, "frames").set_index("frame")
    assert skipped.loc[2, "skipped"] and message in skipped.loc[2, "skip_reason"]
    good = [f for i, f in enumerate(frames) if i != 1]
    expected = offline_features(good, background, **LOCATE)
    got = stream_rows(out, "features")
    assert sorted(set(got["frame"])) == [1, 3, 4]
    np.testing.assert_allclose(got["x"], expected["x"], atol=1e-6)


def test_event_before_any_start_is_logged_and_the_next_run_is_fine(frames, background, caplog_streamcrystal):
    run = compose_raw_run(frames[:2], grid=(1, 2))
    stray = next(doc for name, doc in run if name == "event")
    pipe = make_pipe(background)
    out = feed(pipe, [("event", stray)] + run)
    assert any("event before any start document" in r.getMessage() and "seq_num" in r.getMessage() for r in caplog_streamcrystal.records)
    assert out[-1][0] == "stop" and out[-1][1]["exit_status"] == "success"
    assert len(pipe.results().features) == len(offline_features(frames[:2], background, **LOCATE))


def test_event_with_unknown_descriptor_is_named_in_the_stop(frames, background, caplog_streamcrystal):
    raw = compose_raw_run(frames[:3], grid=(1, 3))
    orphan = {**next(doc for name, doc in raw if name == "event"), "descriptor": "no-such-descriptor", "seq_num": 7}
    raw.insert(-1, ("event", orphan))
    out = feed(make_pipe(background), raw)
    raw_uid = raw[0][1]["uid"]
    assert any(raw_uid in r.getMessage() and "unknown descriptor 'no-such-descriptor'" in r.getMessage() for r in caplog_streamcrystal.records)
    assert "seq_num 7" in out[-1][1]["reason"]
    assert len(stream_rows(out, "frames")) == 3


def test_run_with_zero_events_gives_a_complete_empty_analysis_run(background, caplog_streamcrystal):
    raw = compose_raw_run([], grid=(1, 3))
    out = feed(make_pipe(background), raw)
    assert [n for n, _ in out][0] == "start" and out[-1][0] == "stop"
    assert out[-1][1]["num_events"] == {"features": 0, "frames": 0, "tracks": 0, "relabels": 0, "points": 0, "maps": 0,
                                          "grains": 0}
    assert "no events in stream 'primary'" in out[-1][1]["reason"]
    assert any(raw[0][1]["uid"] in r.getMessage() and "no events" in r.getMessage() for r in caplog_streamcrystal.records)


def test_aborted_run_keeps_its_features_and_mirrors_the_exit_status(frames, background, caplog_streamcrystal):
    raw = compose_raw_run(frames[:3], grid=(1, 4), exit_status="abort")
    pipe = make_pipe(background)
    out = feed(pipe, raw)
    assert out[-1][1]["exit_status"] == "abort"
    assert len(stream_rows(out, "tracks")) == len(offline_features(frames[:3], background, **LOCATE))
    assert any("abort" in r.getMessage() and raw[0][1]["uid"] in r.getMessage() for r in caplog_streamcrystal.records)


def test_second_stop_is_logged_and_ignored(frames, background, caplog_streamcrystal):
    raw = compose_raw_run(frames[:2], grid=(1, 2))
    out = feed(make_pipe(background), raw + [raw[-1]])
    assert [n for n, _ in out].count("stop") == 1
    assert any("second stop" in r.getMessage() and raw[0][1]["uid"] in r.getMessage() for r in caplog_streamcrystal.records)


def test_garbage_documents_do_not_raise(background, caplog_streamcrystal):
    pipe = make_pipe(background)
    for name, doc in [("start", {}), ("event", None), ("nonsense", {"a": 1}), ("stop", {"run_start": "x"})]:
        pipe(name, doc)
    assert any("lacks the key 'uid'" in r.getMessage() for r in caplog_streamcrystal.records)


def test_a_failing_link_keeps_the_features_and_fails_the_run(frames, background, caplog_streamcrystal):
    def failing_predictor(t, particles):  # a user's predictor that fails while the run is linked
        raise RuntimeError("no prediction")

    pipe = make_pipe(background, linking="trackpy", link_kwargs={"predictor": failing_predictor})
    out = feed(pipe, compose_raw_run(frames, grid=(1, 4)))
    stop = out[-1][1]
    assert stop["exit_status"] == "fail" and "linking failed" in stop["reason"]
    assert len(stream_rows(out, "features")) == len(offline_features(frames, background, **LOCATE))
