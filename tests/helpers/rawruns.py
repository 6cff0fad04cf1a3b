"""Raw runs composed with event-model for the tests: inline, event_page, Resource/Datum, StreamDatum.

The images have Gaussian spots at known positions; everything the tests compare against is
computed from these arrays with numpy and trackpy directly, not with streamcrystal.
"""
from __future__ import annotations

import time

import event_model
import h5py
import numpy as np

DATA_KEY = "det_image"


def spot_frames(spots, *, shape=(96, 128), n_frames=3, amplitude=800.0, sigma=1.8, offset=100.0, seed=0):
    """(n_frames, rows, cols) uint16 frames: Gaussian spots at ``spots`` [(row, col), ...] + Poisson noise."""
    rows, cols = np.indices(shape)
    mean = np.full(shape, offset)
    for r, c in spots:
        mean += amplitude * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
    rng = np.random.default_rng(seed)
    return rng.poisson(mean, size=(n_frames, *shape)).astype(np.uint16)


def drifting_spot_scan(n_points, *, shape=(96, 128), n_frames=3, seed=0):
    """Per grid point, frames with two spots that drift a little from point to point."""
    frames = []
    for i in range(n_points):
        spots = [(30 + 0.5 * i, 40 + 0.3 * i)]
        if i % 3 != 2:  # the second peak is absent on every third point
            spots.append((70 - 0.2 * i, 100 - 0.4 * i))
        frames.append(spot_frames(spots, shape=shape, n_frames=n_frames, seed=seed + i))
    return frames


def compose_raw_run(
    frames_per_event,
    *,
    data_key=DATA_KEY,
    grid=None,
    snaking=None,
    dark=None,
    baseline=True,
    event_page=False,
    external=None,
    directory=None,
    exit_status="success",
    md=None,
):
    """The documents of a raw grid scan, as bluesky would emit them.

    ``grid`` is the start's ``shape``; ``dark`` frames make a ``dark`` stream before the
    primary one; ``external`` is None (inline), ``"AD_HDF5"`` (Resource/Datum) or
    ``"stream"`` (StreamResource/StreamDatum), both writing HDF5 files into ``directory``.
    """
    metadata = {"plan_name": "grid_scan", **(md or {})}
    if grid is not None:
        metadata.update(shape=list(grid), extents=[[0.0, float(n - 1)] for n in grid],
                        snaking=list(snaking or [False] * len(grid)), motors=[f"m{i}" for i in range(len(grid))])
    run = event_model.compose_run(metadata=metadata)
    docs = [("start", run.start_doc)]
    event_shape = list(np.shape(frames_per_event[0])) if frames_per_event else [2, 8, 8]
    data_keys = {data_key: {"dtype": "array", "shape": event_shape, "source": "sim", "dtype_numpy": "<u2"},
                 "det_stats_total": {"dtype": "number", "shape": [], "source": "sim"}}

    if baseline:
        base = run.compose_descriptor(name="baseline", data_keys={"temperature": {"dtype": "number", "shape": [], "source": "sim"}})
        docs.append(("descriptor", base.descriptor_doc))
        docs.append(("event", base.compose_event(data={"temperature": 300.0}, timestamps={"temperature": time.time()})))
    if dark is not None:
        dark_desc = run.compose_descriptor(name="dark", data_keys=data_keys)
        docs.append(("descriptor", dark_desc.descriptor_doc))
        for frames in dark:
            docs.append(("event", dark_desc.compose_event(data={data_key: frames, "det_stats_total": float(frames.sum())},
                                                           timestamps={data_key: time.time(), "det_stats_total": time.time()})))

    if external == "AD_HDF5":
        data_keys[data_key]["external"] = "FILESTORE:"
    if external == "stream":
        data_keys[data_key]["external"] = "STREAM:"
    primary = run.compose_descriptor(name="primary", data_keys=data_keys)
    docs.append(("descriptor", primary.descriptor_doc))

    if external is not None:
        path = str(directory / f"{run.start_doc['uid']}.h5")
        stacked = np.concatenate(frames_per_event) if frames_per_event else np.zeros([0, *event_shape[1:]], np.uint16)
        with h5py.File(path, "w") as file:
            file.create_dataset("/entry/data/data", data=stacked)
    if external == "AD_HDF5":
        resource = run.compose_resource(spec="AD_HDF5", root="/", resource_path=path.lstrip("/"),
                                        resource_kwargs={"frame_per_point": event_shape[0]})
        docs.append(("resource", resource.resource_doc))
    if external == "stream":
        stream_resource = run.compose_stream_resource(
            mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key=data_key,
            parameters={"dataset": "/entry/data/data", "chunk_shape": event_shape},
        )
        docs.append(("stream_resource", stream_resource.stream_resource_doc))

    events = []
    for i, frames in enumerate(frames_per_event):
        now = time.time()
        data = {data_key: frames, "det_stats_total": float(np.asarray(frames, dtype=float).sum())}
        filled = {}
        if external == "AD_HDF5":
            datum = resource.compose_datum(datum_kwargs={"point_number": i})
            docs.append(("datum", datum))
            data[data_key] = datum["datum_id"]
            filled = {data_key: False}
        if external == "stream":
            del data[data_key]
            docs.append(("stream_datum", stream_resource.compose_stream_datum(
                indices={"start": i, "stop": i + 1}, seq_nums={"start": i + 1, "stop": i + 2}, descriptor=primary.descriptor_doc)))
            event = primary.compose_event(data=data, timestamps={k: now for k in data}, validate=False)
            events.append(event)
            docs.append(("event", event))
            continue
        event = primary.compose_event(data=data, timestamps={k: now for k in data}, filled=filled)
        events.append(event)
        if not event_page:
            docs.append(("event", event))
    if event_page and events:
        docs.append(("event_page", event_model.pack_event_page(*events)))
    docs.append(("stop", run.compose_stop(exit_status=exit_status)))
    return docs
