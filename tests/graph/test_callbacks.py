"""The seed's callbacks, as the seed page and the original project's tests call them, on a real catalog.

References are computed without streamcrystal: the processed images with numpy, the peaks
with ``trackpy.locate``, the links with ``trackpy.link``.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import trackpy
from bluesky.callbacks.best_effort import BestEffortCallback

import streamcrystal
from tests.helpers.rawruns import DATA_KEY, compose_raw_run, drifting_spot_scan, spot_frames
from tests.helpers.reference import event_rows, offline_features, offline_links, partition, processed, stream_rows
from streamcrystal.callbacks import ImageProcessor, PeakTracker, TrackLinker

LOCATE = dict(percentile=64, separation=20, minmass=1000.0)
FEATURE_KEYS = ["y", "x", "mass", "size", "ecc", "signal", "raw_mass", "ep"]


def seed_snippet(image, DB2, *, linker_first=True):
    """The seed's cell, word for word but for our test sizes (and the other subscription order)."""
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


@pytest.fixture(scope="module")
def DB2(tmp_path_factory):
    return streamcrystal.catalog(tmp_path_factory.mktemp("catalog"))


def by_stage(db, stage):
    return next(db[uid] for uid in list(db.v2)[::-1] if db[uid].start.get("analysis_stage") == stage)


def test_seed_snippet_into_the_catalog_then_table_gives_trackpys_peaks_and_links(raw, DB2, monkeypatch, capsys):
    monkeypatch.setenv("BLUESKY_DEBUG_CALLBACKS", "1")  # an error in BestEffortCallback must surface
    frames, image, docs = raw
    ip = seed_snippet(image, DB2)
    for name, doc in docs:
        ip(name, doc)
    assert "Transient Scan ID" in capsys.readouterr().out  # the BestEffortCallback printed its table

    expected_peaks = offline_features(frames, image, diameter=9, **LOCATE)
    expected_links = offline_links(expected_peaks, 5, memory=2)
    newest, second = DB2[-1], DB2[-2]
    assert {newest.start["analysis_stage"], second.start["analysis_stage"]} == {"peak_finding", "track_linking"}
    peaks = by_stage(DB2, "peak_finding").table()  # the seed's way of reading results: the primary stream
    links = by_stage(DB2, "track_linking").table()
    assert len(peaks) == len(expected_peaks) > 6
    np.testing.assert_allclose(peaks[FEATURE_KEYS], expected_peaks[FEATURE_KEYS], rtol=0, atol=1e-9)
    assert peaks["frame"].tolist() == expected_peaks["frame"].tolist()  # the scan's seq_num
    assert partition(links) == partition(expected_links)
    for header in (newest, second):
        assert header.start["raw_uid"] == docs[0][1]["uid"]
        assert DB2[header.start["uid"]].start == header.start  # db[uid]
        names = [name for name, _ in header.documents(fill=False)]
        assert names[0] == "start" and names[-1] == "stop" and ("event" in names or "event_page" in names)


class DocumentLog:
    """Records what reaches ``insert``."""

    def __init__(self):
        self.docs = []

    def insert(self, name, doc):
        self.docs.append((name, doc))

    def primary(self, stage) -> pd.DataFrame:
        """The data of the ``primary`` events of the run of ``stage``."""
        [run] = [d["uid"] for n, d in self.docs if n == "start" and d["analysis_stage"] == stage]
        descriptors = {d["uid"] for n, d in self.docs if n == "descriptor" and d["run_start"] == run and d["name"] == "primary"}
        return event_rows(self.docs, descriptors)


@pytest.mark.parametrize("linker_first", [True, False])
def test_either_subscription_order_gives_the_pipelines_features_and_links(raw, linker_first):
    frames, image, docs = raw
    log = DocumentLog()
    ip = seed_snippet(image, log, linker_first=linker_first)
    for name, doc in docs:
        ip(name, doc)
    pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, search_range=5, subtrahend=image, memory=2,
                                       linking="trackpy", **LOCATE)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in docs:
        pipe(name, doc)
    peaks, expected = log.primary("peak_finding"), stream_rows(out, "features")
    assert len(peaks) == len(expected) > 6
    np.testing.assert_allclose(peaks[["y", "x", "mass"]], expected[["y", "x", "mass"]], atol=1e-9)
    assert peaks["frame"].tolist() == expected["frame"].tolist()
    assert partition(log.primary("track_linking")) == partition(stream_rows(out, "tracks"))


def test_original_project_flow_peak_tracker_insert_then_table(raw, DB2):
    """The original ``test_callbacks``: PeakTracker -> db.insert -> db[-1].table() are the peaks."""
    frames, image, docs = raw
    images = [processed(f, image) for f in frames]
    pt = PeakTracker(DATA_KEY, diameter=9, **LOCATE)
    pt.subscribe(DB2.insert)
    ip = ImageProcessor(DATA_KEY, subtrahend=image)
    ip.subscribe(pt)
    for name, doc in docs:
        ip(name, doc)
    table = DB2[-1].table()
    assert DB2[-1].start["analysis_stage"] == "peak_finding"
    for seq_num, array in enumerate(images, start=1):
        expected = trackpy.locate(array, 9, **LOCATE)
        got = table[table["frame"] == seq_num].reset_index(drop=True)
        np.testing.assert_allclose(got[FEATURE_KEYS], expected[FEATURE_KEYS], rtol=0, atol=1e-9)
    assert DB2[-1].table("frames")["n_peaks"].tolist() == [len(trackpy.locate(a, 9, **LOCATE)) for a in images]


def test_per_axis_diameters_go_through_to_the_documents(raw):
    frames, image, docs = raw
    out = []
    pt = PeakTracker(DATA_KEY, diameter=(9, 7), **LOCATE)
    pt.subscribe(lambda name, doc: out.append((name, doc)))
    ip = ImageProcessor(DATA_KEY, subtrahend=image)
    ip.subscribe(pt)
    for name, doc in docs:
        ip(name, doc)
    peaks = stream_rows(out, "primary")
    # trackpy misaligns per-axis errors after a minmass filter (its issue 609): filter its unfiltered answer instead
    unfiltered = {key: value for key, value in LOCATE.items() if key != "minmass"}
    expected = pd.concat([trackpy.locate(processed(f, image), (9, 7), **unfiltered).query(f"mass > {LOCATE['minmass']}")
                          .assign(frame=i) for i, f in enumerate(frames, start=1)], ignore_index=True)
    assert {"size_y", "size_x", "ep_y", "ep_x"} <= set(peaks.columns) and "size" not in peaks.columns
    assert len(peaks) == len(expected) > 6
    columns = ["y", "x", "mass", "size_y", "size_x", "ecc", "signal", "raw_mass", "ep_y", "ep_x"]
    np.testing.assert_allclose(peaks[columns], expected[columns], rtol=0, atol=1e-9)


def test_what_trackpy_refuses_is_refused_at_construction():
    with pytest.raises(ValueError, match="anisotropic.*give one diameter, or no maxsize"):
        PeakTracker(DATA_KEY, diameter=(9, 7), maxsize=3)
    with pytest.raises(ValueError, match="odd integer"):
        PeakTracker(DATA_KEY, diameter=8)


def test_databroker_cannot_fill_v1_documents_so_the_readme_says_what_to_write(raw, DB2):
    """Pinned: databroker 2's v1 layer refuses ``documents(fill="yes")`` (the README's seed section
    gives ``documents(fill=False)`` with the pipeline reading external data itself)."""
    frames, image, docs = raw
    for name, doc in docs:
        DB2.insert(name, doc)
    header = DB2[docs[0][1]["uid"]]
    with pytest.raises(NotImplementedError):
        list(header.documents(fill="yes"))
    assert [name for name, _ in header.documents(fill=False)][0] == "start"


def test_no_trackpy_info_flood_and_the_users_logging_is_left_as_it_was(raw, caplog):
    frames, image, docs = raw
    linking_logger = logging.getLogger("trackpy.linking.linking")
    trackpy.quiet(False)  # the user's choice: trackpy's INFO lines wanted
    try:
        before = (logging.getLogger("trackpy").level, linking_logger.level)
        caplog.set_level(logging.INFO, logger="trackpy")
        ip = seed_snippet(image, DocumentLog())
        for name, doc in docs:
            ip(name, doc)
        pipe = streamcrystal.peak_tracking(DATA_KEY, diameter=9, search_range=5, subtrahend=image, memory=2,
                                       linking="trackpy", **LOCATE)
        for name, doc in docs:
            pipe(name, doc)
        assert [r.getMessage() for r in caplog.records if r.name.startswith("trackpy") and r.levelno == logging.INFO] == []
        assert (logging.getLogger("trackpy").level, linking_logger.level) == before
        trackpy.link(offline_features(frames, image, diameter=9, **LOCATE), 5)  # the user's own call still logs
        assert any(r.name.startswith("trackpy") and "trajectories" in r.getMessage() for r in caplog.records)
    finally:
        trackpy.quiet()


def test_image_processor_emits_processed_images_numbered_by_seq_num(raw):
    frames, image, docs = raw
    received = []
    ip = ImageProcessor(DATA_KEY, subtrahend=image)
    ip.subscribe(lambda name, doc: received.append((name, doc)))
    for name, doc in docs:
        ip(name, doc)
    events = [d for n, d in received if n == "event"]
    assert [e["data"]["frame"] for e in events] == list(range(1, 7))
    np.testing.assert_array_equal(events[3]["data"][DATA_KEY], processed(frames[3], image))
    assert received[-1][1]["num_events"] == {"primary": 6}


def test_image_processor_zeroes_the_masked_pixels_and_keeps_the_rest(raw):
    frames, image, _ = raw
    float_frames = [f.astype(float) for f in frames]
    for f in float_frames:
        f[:, 5, :] = np.nan  # a dead row, NaN as float detectors give it
    mask = np.zeros(frames[0].shape[1:], dtype=bool)
    mask[60:64, 10:20] = True  # a masked block
    received = []
    ip = ImageProcessor(DATA_KEY, subtrahend=image, mask=mask)
    ip.subscribe(lambda name, doc: received.append((name, doc)))
    for name, doc in compose_raw_run(float_frames, grid=(2, 3), snaking=[False, True]):
        ip(name, doc)
    events = [d for n, d in received if n == "event"]
    assert [e["data"]["frame"] for e in events] == list(range(1, 7))  # no event refused for its NaN row
    for event, f in zip(events, frames):
        got = np.asarray(event["data"][DATA_KEY])
        unmasked = np.ones_like(mask)
        unmasked[5, :] = False
        unmasked &= ~mask
        assert (got[~unmasked] == 0).all()
        np.testing.assert_array_equal(got[unmasked], processed(f, image)[unmasked])
    start = next(d for n, d in received if n == "start")
    assert start["pipeline"]["parameters"]["mask"] == f"{mask.sum()} pixels"


def test_image_processor_refuses_a_mask_that_is_not_a_boolean_image():
    with pytest.raises(ValueError, match="2-D boolean image"):
        ImageProcessor(DATA_KEY, mask=np.zeros((4, 4)))
