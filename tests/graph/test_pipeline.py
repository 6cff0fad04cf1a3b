"""The peak-tracking graph against trackpy run offline on the same images."""
from __future__ import annotations

import copy
import re
import shutil

import event_model
import numpy as np
import pytest

import streamcrystal
from streamcrystal.records import FrameTask
from tests.helpers.rawruns import DATA_KEY, compose_raw_run, drifting_spot_scan, spot_frames
from tests.helpers.reference import offline_features, offline_links, partition, processed, stream_rows

LOCATE = dict(diameter=9, percentile=64, separation=20, minmass=1000.0)
N_POINTS = 8


def run_pipeline(raw_docs, **options):
    params = {**LOCATE, "search_range": 5, **options}
    if "memory" in params:  # the seed's scan-order linking, compared with trackpy.link offline
        params["linking"] = "trackpy"
    pipe = streamcrystal.peak_tracking(DATA_KEY, **params)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in raw_docs:
        pipe(name, doc)
    return pipe, out


@pytest.fixture(scope="module")
def scan():
    frames = drifting_spot_scan(N_POINTS)
    background = spot_frames([], n_frames=2, seed=99)
    return frames, background


def test_features_equal_trackpy_offline(scan):
    frames, background = scan
    _, out = run_pipeline(compose_raw_run(frames, grid=(2, 4)), subtrahend=background)
    expected = offline_features(frames, background, **LOCATE)
    got = stream_rows(out, "features")
    assert len(got) == len(expected) > N_POINTS
    for column in ("y", "x", "mass", "signal", "raw_mass", "size", "ecc"):
        np.testing.assert_allclose(got[column], expected[column], rtol=0, atol=1e-6)
    assert got["frame"].tolist() == expected["frame"].tolist()


def test_links_equal_trackpy_offline(scan):
    frames, background = scan
    pipe, out = run_pipeline(compose_raw_run(frames, grid=(2, 4)), subtrahend=background, memory=2)
    expected = offline_links(offline_features(frames, background, **LOCATE), 5, memory=2)
    tracks = stream_rows(out, "tracks")
    assert partition(tracks) == partition(expected)
    assert tracks["particle"].nunique() == 2
    results = pipe.results()
    assert partition(results.tracks) == partition(expected)


@pytest.mark.parametrize("external", [None, "AD_HDF5", "stream"])
def test_inline_event_page_and_external_data_agree(scan, tmp_path, external):
    frames, background = scan
    reference = stream_rows(run_pipeline(compose_raw_run(frames, grid=(2, 4)), subtrahend=background)[1], "features")
    raw = compose_raw_run(frames, grid=(2, 4), external=external, directory=tmp_path, event_page=external is None)
    got = stream_rows(run_pipeline(raw, subtrahend=background)[1], "features")
    assert got[["y", "x", "mass", "frame"]].equals(reference[["y", "x", "mass", "frame"]])


def test_only_the_chosen_stream_reaches_the_peak_finder_and_raw_docs_stay_untouched(scan):
    frames, background = scan
    raw = compose_raw_run(frames[:3], grid=(1, 3), baseline=True)
    pristine = copy.deepcopy(raw)
    pipe = streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, subtrahend=background)
    located = pipe.nodes["frame_results"].sink_to_list()
    for name, doc in raw:
        pipe(name, doc)
    assert [r.seq_num for r in located] == [1, 2, 3]  # not the baseline event
    for (name, doc), (_, original) in zip(raw, pristine):
        if name == "event":
            np.testing.assert_equal(doc["data"], original["data"])
        else:
            assert doc == original


def test_dark_stream_mean_is_the_default_background(scan):
    frames, _ = scan
    dark = [spot_frames([], n_frames=2, seed=s) for s in (50, 51)]
    dark_mean = np.mean([np.asarray(d, dtype=float).mean(axis=0) for d in dark], axis=0)
    _, out = run_pipeline(compose_raw_run(frames[:4], grid=(1, 4), dark=dark))
    got = stream_rows(out, "features")
    expected = offline_features(frames[:4], dark_mean, **LOCATE)
    np.testing.assert_allclose(got["mass"], expected["mass"], rtol=1e-12)


def test_every_output_document_is_schema_valid_and_counts_are_right(scan):
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4))
    pipe, out = run_pipeline(raw, subtrahend=background)
    for name, doc in out:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)
    names = [name for name, _ in out]
    assert names[0] == "start" and names[-1] == "stop" and names.count("start") == 1
    descriptors = {d["uid"]: d["name"] for n, d in out if n == "descriptor"}
    seq_nums = {}  # per stream, the seq_num of each event, and of each row of an event page
    for name, doc in out:
        if name in ("event", "event_page"):
            seq_nums.setdefault(descriptors[doc["descriptor"]], []).extend(
                [doc["seq_num"]] if name == "event" else doc["seq_num"])
    counted = {stream: len(numbers) for stream, numbers in seq_nums.items()}
    assert all(numbers == list(range(1, len(numbers) + 1)) for numbers in seq_nums.values()), seq_nums
    assert {"features", "tracks"} <= {descriptors[d["descriptor"]] for n, d in out if n == "event_page"}
    stop = out[-1][1]
    assert stop["num_events"] == counted  # events (and rows of pages), not descriptors
    assert counted["frames"] == N_POINTS
    assert counted["features"] == counted["tracks"]
    assert stop["exit_status"] == "success"


def test_start_records_raw_uid_and_full_provenance(scan):
    frames, background = scan
    raw = compose_raw_run(frames[:2], grid=(1, 2))
    pipe, out = run_pipeline(raw, subtrahend=background, minmass=10.0, memory=3)
    start = out[0][1]
    assert start["raw_uid"] == raw[0][1]["uid"]
    assert start["analysis_stage"] == "peak_tracking"
    provenance = start["pipeline"]
    assert {"process", "locate", "link", "map"} <= set(provenance["nodes"])
    assert ["process", "locate"] in provenance["edges"]
    assert provenance["parameters"]["locate_kwargs"] == {"percentile": 64, "separation": 20, "minmass": 10.0}
    assert provenance["parameters"]["link_kwargs"] == {"memory": 3}
    assert provenance["parameters"]["subtrahend"]["shape"] == list(background.shape[1:])
    import numpy, streamz, trackpy
    assert provenance["versions"]["trackpy"] == trackpy.__version__
    assert provenance["versions"]["streamz"] == streamz.__version__
    assert provenance["versions"]["numpy"] == numpy.__version__
    assert provenance["versions"]["streamcrystal"] == streamcrystal.__version__


def test_features_are_emitted_while_the_run_goes_on(scan):
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4))
    pipe = streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, subtrahend=background)
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    first_event = next(i for i, (name, doc) in enumerate(raw) if name == "event" and doc["seq_num"] == 1 and DATA_KEY in doc["data"])
    for name, doc in raw[: first_event + 1]:
        pipe(name, doc)
    assert len(stream_rows(out, "features")) == len(offline_features(frames[:1], background, **LOCATE))
    assert "stop" not in [name for name, _ in out]


def test_a_run_without_peaks_still_has_descriptors_and_a_frames_event_per_event():
    flat = [np.full((2, 32, 32), 100, dtype=np.uint16) for _ in range(3)]
    _, out = run_pipeline(compose_raw_run(flat, grid=(1, 3)), subtrahend=np.full((32, 32), 100.0))
    streams = {d["name"] for n, d in out if n == "descriptor"}
    assert streams == {"features", "frames", "tracks", "relabels", "points", "maps", "grains"}
    frames = stream_rows(out, "frames")
    assert frames["frame"].tolist() == [1, 2, 3] and frames["n_peaks"].tolist() == [0, 0, 0]
    assert out[-1][1]["num_events"] == {"features": 0, "frames": 3, "tracks": 0, "relabels": 0, "points": 3,
                                        "maps": 0, "grains": 0}


def test_runs_back_to_back_keep_their_own_state(scan):
    frames, background = scan
    first = compose_raw_run(frames[:4], grid=(1, 4))
    second = compose_raw_run(frames[4:], grid=(1, 4))
    pipe, out = run_pipeline(first + second, subtrahend=background)
    starts = [d for n, d in out if n == "start"]
    assert [s["raw_uid"] for s in starts] == [first[0][1]["uid"], second[0][1]["uid"]]
    expected_second = offline_features(frames[4:], background, **LOCATE)
    second_results = pipe.results(second[0][1]["uid"])
    np.testing.assert_allclose(second_results.features["x"], expected_second["x"], atol=1e-6)
    assert second_results.features["frame"].tolist() == expected_second["frame"].tolist()


def test_the_same_run_twice_through_one_pipeline_gives_two_equal_analysis_runs(scan):
    # a long-running server sees a run again when it is re-published or replayed
    frames, background = scan
    raw = compose_raw_run(frames, grid=(2, 4))
    pipe, out = run_pipeline(raw + raw, subtrahend=background)
    starts = [d for n, d in out if n == "start"]
    stops = [d for n, d in out if n == "stop"]
    assert len(starts) == 2 and len({s["uid"] for s in starts}) == 2
    assert [s["raw_uid"] for s in starts] == [raw[0][1]["uid"]] * 2
    assert [s["exit_status"] for s in stops] == ["success", "success"]
    second_start = [i for i, (n, _) in enumerate(out) if n == "start"][1]
    first, second = stream_rows(out[:second_start], "tracks"), stream_rows(out[second_start:], "tracks")
    assert len(first) > 0
    assert first.equals(second)


@pytest.mark.parametrize("engine", ["fast", "trackpy"])
def test_construction_runs_no_per_frame_work(monkeypatch, scan, engine):
    import trackpy

    import streamcrystal.science.fastlocate

    # the engine="trackpy" path calls trackpy's function where trackpy defines it
    module = streamcrystal.science.fastlocate if engine == "fast" else trackpy.feature
    streamcrystal.science.fastlocate.warmup()  # construction warms the fast engine up: not per-frame work
    calls = []
    real_locate = module.locate
    frames, background = scan

    def counting(image, *args, **kwargs):  # construction checks trackpy's arguments on a small test image
        if np.shape(image) == np.shape(frames[0])[-2:]:
            calls.append(1)
        return real_locate(image, *args, **kwargs)

    monkeypatch.setattr(module, "locate", counting)
    pipe = streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, subtrahend=background, engine=engine)
    assert calls == []
    for name, doc in compose_raw_run(frames[:3], grid=(1, 3)):
        pipe(name, doc)
    assert len(calls) == 3


def test_nodes_are_reachable_by_name_for_branching(scan):
    frames, background = scan
    pipe = streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5, subtrahend=background)
    # the per-frame channel also carries each run's stop, after its frames
    images = pipe.nodes["process"].filter(lambda item: isinstance(item, FrameTask)).map(lambda task: task.image).sink_to_list()
    for name, doc in compose_raw_run(frames[:2], grid=(1, 2)):
        pipe(name, doc)
    np.testing.assert_array_equal(images[0], processed(frames[0], background))


def test_results_are_pandas_and_xarray_with_extents(scan):
    frames, background = scan
    pipe, _ = run_pipeline(compose_raw_run(frames, grid=(2, 4)), subtrahend=background, memory=4)
    results = pipe.results()
    assert results.maps.dims[0] == "particle"
    assert results.maps.shape[1:] == (2, 4)
    np.testing.assert_allclose(results.maps.coords[results.maps.dims[2]].values, [0, 1, 2, 3])
    assert len(results.frames) == N_POINTS
    with pytest.raises(KeyError, match="no results for raw run 'nope'"):
        pipe.results("nope")


def test_bad_parameters_are_rejected_at_construction():
    with pytest.raises(ValueError, match="odd"):
        streamcrystal.peak_tracking(DATA_KEY, diameter=8, search_range=5)
    with pytest.raises(TypeError, match="'colour'.*minmass"):
        streamcrystal.peak_tracking(DATA_KEY, diameter=9, search_range=5, colour="red")


def drawn_labels(svg_path) -> list[str]:
    return re.findall(r">\s*([^<>]+?)\s*</text>", svg_path.read_text())


NAMED_NODES = [("process", "map"), ("locate", "map"), ("background", "accumulate"), ("runs", "accumulate"),
               ("link", "map"), ("map", "map"), ("to_event_model", "accumulate")]


@pytest.mark.graphviz
@pytest.mark.skipif(not shutil.which("dot"), reason="graphviz's 'dot' is not installed: .ci/run installs it and runs "
                    "the graphviz tests after the README's test command")
def test_visualize_draws_the_named_nodes_with_graphviz(tmp_path):
    pipe = streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5)
    pipe.visualize(str(tmp_path / "graph.svg"))
    labels = drawn_labels(tmp_path / "graph.svg")
    assert any("graphviz" in line.lower() or "Generated by" in line for line in (tmp_path / "graph.svg").read_text().splitlines()[:10])
    for name, kind in NAMED_NODES:
        assert any(label.startswith(f"{name} {kind}") for label in labels), (name, labels)


def test_visualize_without_dot_draws_the_same_nodes_and_edges_with_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' to be found
    pipe = streamcrystal.peak_tracking(DATA_KEY, **LOCATE, search_range=5)
    pipe.visualize(str(tmp_path / "graph.svg"))
    text = (tmp_path / "graph.svg").read_text()
    assert "Matplotlib" in text
    labels = drawn_labels(tmp_path / "graph.svg")
    for name, kind in NAMED_NODES:
        assert any(label.startswith(f"{name} {kind}") for label in labels), (name, labels)
    assert len(labels) == len(streamz_graph_of(pipe))  # every node, once
    png = pipe.visualize(str(tmp_path / "graph.png"))
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png is not None and png.data[:4] == b"\x89PNG"
    with pytest.raises(streamcrystal.errors.GraphvizMissingError, match="apt-get install graphviz"):
        pipe.visualize(str(tmp_path / "graph.png"), engine="graphviz")


def streamz_graph_of(pipe):
    import networkx as nx
    import streamz.graph

    graph = nx.DiGraph()
    streamz.graph.create_graph(pipe.source, graph)
    return graph


def test_an_image_at_an_odd_address_gives_the_same_result_as_an_aligned_one(scan):
    """distributed hands a worker arrays in place in its message buffer, at any byte offset
    (seen: float64 images at address % 8 == 6); numpy sums those in another order."""
    from streamcrystal.graph.steps import locate_step

    frames, background = scan
    image = processed(frames[5], background)
    buffer = np.zeros(image.nbytes + 8, np.uint8)
    odd = np.frombuffer(buffer[3:3 + image.nbytes].data, dtype=np.float64).reshape(image.shape)
    odd[...] = image
    assert not odd.flags.aligned and np.array_equal(odd, image)
    task = FrameTask("r", 6, "primary", image=image)
    aligned = locate_step(task, **LOCATE)
    unaligned = locate_step(FrameTask("r", 6, "primary", image=odd), **LOCATE)
    assert repr(unaligned.total_intensity) == repr(aligned.total_intensity) == repr(float(image.sum()))
    assert unaligned.features.equals(aligned.features)
