"""The seed's snippet, as written, gives the same features and links as the pipeline."""
from __future__ import annotations

import numpy as np
import pytest
from bluesky.callbacks.best_effort import BestEffortCallback

import streamcrystal
from rawruns import DATA_KEY, compose_raw_run, drifting_spot_scan, spot_frames
from reference import partition, stream_rows
from streamcrystal.callbacks import ImageProcessor, PeakTracker, TrackLinker

LOCATE = dict(percentile=64, separation=20, minmass=1000.0)


class DocumentLog:
    """Records what reaches ``insert`` (stands in for the seed's DB2 until the catalog issue)."""

    def __init__(self):
        self.docs = []

    def insert(self, name, doc):
        self.docs.append((name, doc))


def seed_snippet(image, DB2, *, linker_first=True):
    """The seed's cell, with its subscription order (or the other one)."""
    ip = ImageProcessor(DATA_KEY, subtrahend=image)
    pt = PeakTracker(DATA_KEY, diameter=9, **LOCATE)
    tl = TrackLinker(db=DB2, search_range=5, memory=2)
    bec = BestEffortCallback()
    bec.disable_plots()
    tl.subscribe(DB2.insert)
    if linker_first:
        pt.subscribe(tl)
        pt.subscribe(DB2.insert)
    else:
        pt.subscribe(DB2.insert)
        pt.subscribe(tl)
    ip.subscribe(pt)
    ip.subscribe(bec)
    return ip


@pytest.fixture(scope="module")
def raw():
    frames = drifting_spot_scan(6)
    return frames, spot_frames([], n_frames=2, seed=7), compose_raw_run(frames, grid=(2, 3), snaking=[False, True])


@pytest.mark.parametrize("linker_first", [True, False])
def test_seed_snippet_gives_the_pipeline_features_and_links(raw, linker_first, monkeypatch, capsys):
    monkeypatch.setenv("BLUESKY_DEBUG_CALLBACKS", "1")  # an error in BestEffortCallback must surface
    frames, image, docs = raw
    DB2 = DocumentLog()
    ip = seed_snippet(image, DB2, linker_first=linker_first)
    for name, doc in docs:
        ip(name, doc)

    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, search_range=5, subtrahend=image, memory=2, **LOCATE)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in docs:
        pipe(name, doc)

    starts = [d for n, d in DB2.docs if n == "start"]
    assert sorted(s["analysis_stage"] for s in starts) == ["peak_finding", "track_linking"]
    assert all(s["raw_uid"] == docs[0][1]["uid"] for s in starts)
    features = stream_rows(DB2.docs, "features")
    expected = stream_rows(out, "features")
    assert len(features) == len(expected) > 0
    np.testing.assert_allclose(features[["y", "x", "mass"]], expected[["y", "x", "mass"]], atol=1e-9)
    assert features["frame"].tolist() == expected["frame"].tolist()  # the scan's seq_num, not output order
    assert partition(stream_rows(DB2.docs, "tracks")) == partition(stream_rows(out, "tracks"))
    assert "Transient Scan ID" in capsys.readouterr().out  # the BestEffortCallback printed its table


def test_image_processor_emits_processed_images_numbered_by_seq_num(raw):
    frames, image, docs = raw
    received = []
    ip = ImageProcessor(DATA_KEY, subtrahend=image)
    ip.subscribe(lambda name, doc: received.append((name, doc)))
    for name, doc in docs:
        ip(name, doc)
    events = [d for n, d in received if n == "event"]
    assert [e["data"]["frame"] for e in events] == list(range(1, 7))
    expected = np.clip(frames[3].astype(float).mean(0) - image.astype(float).mean(0), 0, None)
    np.testing.assert_array_equal(events[3]["data"][DATA_KEY], expected)
    assert received[-1][1]["num_events"] == {"primary": 6}
