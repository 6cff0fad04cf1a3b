"""Turn an inline raw run into one whose detector frames live in an HDF5 file (StreamResource/StreamDatum).

The frames of ``stream`` are written to one HDF5 file (dataset ``/entry/data/data``, one
event per leading index); the documents are composed anew with event-model: the detector's
data key is ``external: "STREAM:"``, a StreamResource follows its descriptor and a
StreamDatum precedes each event, which no longer carries the frames. Other streams (dark,
baseline) stay inline. Written in one go (not live), so readers never meet a file open for
writing.
"""
from __future__ import annotations

import copy
from pathlib import Path

import event_model
import h5py
import numpy as np

DATASET = "/entry/data/data"


def _events(docs):
    for name, doc in docs:
        if name == "event":
            yield doc
        elif name == "event_page":
            yield from event_model.unpack_event_page(doc)


def stream_datum_run(docs, *, data_key: str, directory: Path, stream: str = "primary", filename: str | None = None):
    """The documents of ``docs`` (one raw run, inline frames) with the frames of ``stream`` in HDF5.

    Returns ``(documents, path)``.
    """
    start = next(doc for name, doc in docs if name == "start")
    wanted = {doc["uid"] for name, doc in docs if name == "descriptor" and doc.get("name") == stream}
    frames = [np.asarray(event["data"][data_key]) for event in _events(docs) if event["descriptor"] in wanted]
    path = Path(directory) / (filename or f"{start['uid']}.h5")
    with h5py.File(path, "w") as file:
        file.create_dataset(DATASET, data=np.stack(frames), chunks=(1, *frames[0].shape))

    metadata = {key: value for key, value in start.items() if key not in ("uid", "time")}
    run = event_model.compose_run(metadata=metadata)
    out = [("start", run.start_doc)]
    composers, resource, index = {}, None, 0
    for name, doc in docs:
        if name == "descriptor":
            data_keys = copy.deepcopy(doc["data_keys"])
            if doc["uid"] in wanted:
                data_keys[data_key]["external"] = "STREAM:"
            bundle = run.compose_descriptor(name=doc["name"], data_keys=data_keys,
                                            configuration=doc.get("configuration", {}),
                                            object_keys=doc.get("object_keys", {}), hints=doc.get("hints", {}))
            composers[doc["uid"]] = bundle
            out.append(("descriptor", bundle.descriptor_doc))
            if doc["uid"] in wanted:
                resource = run.compose_stream_resource(
                    mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key=data_key,
                    parameters={"dataset": DATASET, "chunk_shape": [1, *frames[0].shape]},
                )
                out.append(("stream_resource", resource.stream_resource_doc))
        elif name in ("event", "event_page"):
            for event in _events([(name, doc)]):
                bundle = composers[event["descriptor"]]
                data, timestamps = dict(event["data"]), dict(event["timestamps"])
                if event["descriptor"] in wanted:
                    del data[data_key], timestamps[data_key]
                    seq_num = index + 1  # the seq_num compose_event gives this event
                    out.append(("stream_datum", resource.compose_stream_datum(
                        indices={"start": index, "stop": index + 1}, seq_nums={"start": seq_num, "stop": seq_num + 1},
                        descriptor=bundle.descriptor_doc)))
                    index += 1
                out.append(("event", bundle.compose_event(data=data, timestamps=timestamps, validate=False)))
        elif name == "stop":
            out.append(("stop", run.compose_stop(exit_status=doc.get("exit_status", "success"), reason=doc.get("reason", ""))))
    return out, path
