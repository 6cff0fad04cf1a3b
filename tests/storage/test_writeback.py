"""ArraysToHDF5: the maps of an analysis run go to an HDF5 file, in it before the stop goes on."""
from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest

from streamcrystal import load_pipeline
from streamcrystal.storage.writeback import ArraysToHDF5, catalog_writer


@pytest.fixture(scope="module")
def analysis_documents():
    """The analysis documents of the pipeline on a small simulated scan (several particles)."""
    import trackpy

    from streamcrystal.sim import simulate_scan

    trackpy.quiet()
    raw = []
    simulate_scan(grid_shape=(5, 4), detector_shape=(192, 192), frames_per_point=2, n_grains=2, peaks_per_grain=2,
                  min_peak_distance=50, dark_frames=2, seed=3, callbacks=[lambda n, d: raw.append((n, copy.deepcopy(d)))])
    pipe = load_pipeline("peak_tracking").make_pipeline()
    out = []
    pipe.subscribe(lambda name, doc: out.append((name, doc)))
    for name, doc in raw:
        pipe(name, doc)
    return out


def _maps_in_order(docs, streams=("maps", "grains")):
    """The ``map`` arrays of the events of ``streams`` (particle maps, then grain maps), in document order."""
    descriptors = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] in streams}
    return [np.asarray(d["data"]["map"]) for n, d in docs if n == "event" and d["descriptor"] in descriptors]


def _stored_maps(path, stream_datums):
    with h5py.File(path, "r") as file:
        return [file[dataset][index] for dataset, index in stream_datums]


def test_maps_are_in_the_file_when_the_stop_goes_downstream(tmp_path, analysis_documents):
    expected = _maps_in_order(analysis_documents)
    assert len(_maps_in_order(analysis_documents, ["maps"])) >= 2 and len(_maps_in_order(analysis_documents, ["grains"]))
    resources, datums, seen = {}, [], {}

    def downstream(name, doc):
        if name == "stream_resource" and doc["data_key"] == "map":  # (a grain's member particles are arrays too)
            resources[doc["uid"]] = (doc["uri"].removeprefix("file://localhost"), doc["parameters"]["dataset"])
        elif name == "stream_datum" and doc["stream_resource"] in resources:
            path, dataset = resources[doc["stream_resource"]]
            datums.append((path, dataset, doc["indices"]["start"]))
        elif name == "stop":  # what a reader of the catalog sees once the run is closed
            seen["maps"] = _stored_maps(datums[0][0], [(dataset, index) for _, dataset, index in datums])
        elif name == "event":
            assert "map" not in doc["data"]

    writer = ArraysToHDF5(tmp_path, downstream)
    for name, doc in analysis_documents:
        writer(name, doc)
    assert len(seen["maps"]) == len(expected)
    for got, want in zip(seen["maps"], expected):
        np.testing.assert_array_equal(got, want)


def test_arrays_are_written_once_max_pending_bytes_wait(tmp_path, analysis_documents):
    writer = ArraysToHDF5(tmp_path, lambda name, doc: None)
    writer.max_pending_bytes = 0  # every array is written as it comes
    start = analysis_documents[0][1]["uid"]
    written: dict[str, list] = {}  # descriptor uid (the dataset's group) -> the maps given so far
    for name, doc in analysis_documents[:-1]:  # all but the stop
        writer(name, doc)
        if name == "event" and "map" in doc["data"]:
            written.setdefault(doc["descriptor"], []).append(np.asarray(doc["data"]["map"]))
            with h5py.File(tmp_path / f"{start}.h5", "r") as file:  # one dataset per stream (maps, grains)
                assert sorted(file) == sorted(written)
                for descriptor, maps in written.items():
                    np.testing.assert_array_equal(file[descriptor]["map"][:], np.stack(maps))
    assert sum(map(len, written.values())) == len(_maps_in_order(analysis_documents)) and len(written) == 2


def test_a_remote_catalog_without_an_arrays_directory_is_refused_naming_the_option():
    """raw_data_dir(db) knows only this process's embedded servers: any other is remote."""
    class Remote:
        class v2:
            uri = "http://beamline-tiled.example:8000/api/v1/runs"

    with pytest.raises(ValueError, match=r"beamline-tiled.*directory=.*--arrays-dir DIR"):
        catalog_writer(Remote())
