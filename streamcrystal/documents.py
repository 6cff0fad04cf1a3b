"""Event-model documents in: attribute each document to its run and stream, fill external data.

The graph (``pipeline.py``) splits the document stream by name with filter nodes; the
functions here are what those nodes call. Nothing here modifies a raw document in place.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

import event_model
import numpy as np

from .records import FrameReference, FrameTask, Routed

__all__ = [
    "EXTERNAL_DOCUMENTS",
    "RunTable",
    "route_document",
    "ExternalData",
    "default_handler_registry",
    "read_reference",
]

logger = logging.getLogger("streamcrystal")

#: Documents that describe where external data live (and are consumed, not analysed).
EXTERNAL_DOCUMENTS = ("resource", "datum", "datum_page", "stream_resource", "stream_datum")


@dataclass
class RunTable:
    """What the graph knows about the raw runs it is seeing: state of the ``runs`` node."""

    starts: dict[str, dict] = field(default_factory=dict)
    descriptors: dict[str, tuple[str, str]] = field(default_factory=dict)
    stopped: deque = field(default_factory=lambda: deque(maxlen=256))

    def only_open_run(self) -> str | None:
        return next(iter(self.starts)) if len(self.starts) == 1 else None


def route_document(table: RunTable, item: tuple[str, Mapping]) -> tuple[RunTable, list[Routed]]:
    """Attribute one raw document to its run and stream (the ``runs`` node of the graph).

    Event pages become one :class:`~streamcrystal.records.Routed` event each, so the rest
    of the graph handles ``event`` and ``event_page`` alike. Documents that cannot be
    attributed carry a ``problem`` and are logged.

    Parameters
    ----------
    table : RunTable
        The node's state, updated in place and returned (streamz ``accumulate`` convention).
    item : (name, doc)

    Returns
    -------
    (RunTable, list of Routed)

    Examples
    --------
    >>> table = RunTable()
    >>> table, out = route_document(table, ("start", {"uid": "r1", "time": 0}))
    >>> table, out = route_document(table, ("descriptor", {"uid": "d1", "run_start": "r1", "name": "primary"}))
    >>> table, out = route_document(table, ("event", {"descriptor": "d1", "seq_num": 1, "data": {}}))
    >>> out[0].run_uid, out[0].stream
    ('r1', 'primary')
    """
    try:
        name, doc = item
    except (TypeError, ValueError):
        return table, [_problem(Routed("unknown", {}), f"not a (name, document) pair: {item!r:.80}")]
    if not isinstance(doc, Mapping):
        return table, [_problem(Routed(str(name), {}), f"{name} document is not a mapping")]
    handler = _ROUTES.get(name)
    if handler is None:
        return table, []  # documents of no interest here (bulk_events, ...) pass unused
    try:
        return table, handler(table, doc)
    except KeyError as err:
        run_uid = doc.get("run_start") or doc.get("uid") if name in ("start", "stop") else table.only_open_run()
        return table, [_problem(Routed(name, dict(doc), run_uid), f"{name} document lacks the key {err.args[0]!r}")]


def _problem(routed: Routed, problem: str) -> Routed:
    seq = f" seq_num {routed.doc.get('seq_num')}" if "seq_num" in routed.doc else ""
    logger.warning("run %s%s: %s; skipped", routed.run_uid or "<unknown>", seq, problem)
    return Routed(routed.name, routed.doc, routed.run_uid, routed.stream, problem)


def _route_start(table: RunTable, doc: Mapping) -> list[Routed]:
    if doc["uid"] in table.stopped:  # the same run again (a replay, a re-publication): a new pass
        table.stopped.remove(doc["uid"])
    table.starts[doc["uid"]] = dict(doc)
    return [Routed("start", dict(doc), doc["uid"])]


def _route_descriptor(table: RunTable, doc: Mapping) -> list[Routed]:
    run_uid = doc["run_start"]
    if run_uid not in table.starts:
        return [_problem(Routed("descriptor", dict(doc), run_uid), "descriptor of a run whose start was not seen")]
    stream = doc.get("name", "primary")
    table.descriptors[doc["uid"]] = (run_uid, stream)
    return [Routed("descriptor", dict(doc), run_uid, stream)]


def _route_event(table: RunTable, doc: Mapping) -> list[Routed]:
    descriptor = doc["descriptor"]
    if descriptor not in table.descriptors:
        run_uid = table.only_open_run()
        problem = f"event with unknown descriptor {descriptor!r}" if table.starts else "event before any start document"
        return [_problem(Routed("event", doc, run_uid), problem)]
    run_uid, stream = table.descriptors[descriptor]
    return [Routed("event", doc, run_uid, stream)]


def _route_event_page(table: RunTable, doc: Mapping) -> list[Routed]:
    routed: list[Routed] = []
    for event in event_model.unpack_event_page(doc):
        routed.extend(_route_event(table, event))
    return routed


def _route_external(table: RunTable, doc: Mapping, name: str) -> list[Routed]:
    stream = None
    run_uid = doc.get("run_start")
    if "descriptor" in doc and doc["descriptor"] in table.descriptors:
        run_uid, stream = table.descriptors[doc["descriptor"]]
    return [Routed(name, dict(doc), run_uid or table.only_open_run(), stream)]


def _route_stop(table: RunTable, doc: Mapping) -> list[Routed]:
    run_uid = doc["run_start"]
    if run_uid in table.stopped:
        return [_problem(Routed("stop", dict(doc), run_uid), "second stop document for this run")]
    if run_uid not in table.starts:
        return [_problem(Routed("stop", dict(doc), run_uid), "stop document of a run whose start was not seen")]
    del table.starts[run_uid]
    table.descriptors = {uid: rs for uid, rs in table.descriptors.items() if rs[0] != run_uid}
    table.stopped.append(run_uid)
    return [Routed("stop", dict(doc), run_uid)]


_ROUTES = {
    "start": _route_start,
    "descriptor": _route_descriptor,
    "event": _route_event,
    "event_page": _route_event_page,
    "stop": _route_stop,
    **{name: (lambda table, doc, name=name: _route_external(table, doc, name)) for name in EXTERNAL_DOCUMENTS},
}


def default_handler_registry() -> dict:
    """Handlers for Resource/Datum external data: area-detector HDF5 (spec ``AD_HDF5``)."""
    from area_detector_handlers.handlers import AreaDetectorHDF5Handler

    return {"AD_HDF5": AreaDetectorHDF5Handler}


class ExternalData:
    """Turn events (inline or Resource/Datum) and StreamDatum documents into frame tasks.

    Resource/Datum are filled by :class:`event_model.Filler` with registered handlers;
    StreamResource/StreamDatum pointing at HDF5 are read with h5py (event-model's Filler
    does not read stream data).

    Parameters
    ----------
    data_key : str
        The key of the detector images (``"dexela_image"``).
    handler_registry : dict, optional
        Resource ``spec`` -> handler class; default :func:`default_handler_registry`.
    root_map : dict, optional
        Path prefixes to rewrite (``{old_root: new_root}``), as for databroker.
    frame_key : str, optional
        A data key holding the raw ``seq_num`` of derived events (the seed's callbacks chain
        runs: their events are numbered in output order, the raw frame travels as data).
    read_stream_data : bool
        If False, StreamDatum tasks carry a :class:`~streamcrystal.records.FrameReference`
        (file, dataset, index) instead of the frames, for the process that does the
        per-frame work to read (a Dask worker: no image crosses the network).
    """

    def __init__(self, data_key: str, *, handler_registry: dict | None = None, root_map: dict | None = None,
                 frame_key: str | None = None, read_stream_data: bool = True) -> None:
        self.data_key = data_key
        self.frame_key = frame_key
        self.read_stream_data = read_stream_data
        self.root_map = dict(root_map or {})
        registry = default_handler_registry() if handler_registry is None else dict(handler_registry)
        self._filler = event_model.Filler(registry, root_map=self.root_map, inplace=False)
        self._stream_resources: dict[str, dict] = {}
        self._descriptors: dict[str, dict] = {}

    def register(self, routed: Routed) -> None:
        """Remember a descriptor, resource or datum document (the ``external`` sink node)."""
        if routed.problem:
            return
        if routed.name == "descriptor":
            self._descriptors[routed.doc["uid"]] = routed.doc
        if routed.name == "stream_resource":
            self._stream_resources[routed.doc["uid"]] = routed.doc
        elif routed.name != "stream_datum":
            self._filler(routed.name, routed.doc)

    def forget_run(self, run_uid: str) -> None:
        """Drop what was cached for a stopped run."""
        self._stream_resources = {k: v for k, v in self._stream_resources.items() if v.get("run_start") != run_uid}
        self._descriptors = {k: v for k, v in self._descriptors.items() if v.get("run_start") != run_uid}
        if not self._descriptors:
            self._filler.clear_document_caches()

    def event_task(self, routed: Routed) -> FrameTask | None:
        """The frame task of one event of the processed (or dark) stream, data filled."""
        doc = routed.doc
        seq_num = int(doc.get("data", {}).get(self.frame_key, doc.get("seq_num", -1)))
        task = FrameTask(routed.run_uid, seq_num, routed.stream, time=doc.get("time", 0.0))
        descriptor = self._descriptors.get(doc["descriptor"], {})
        data_key_info = descriptor.get("data_keys", {}).get(self.data_key, {})
        if str(data_key_info.get("external", "")).startswith("STREAM:"):
            return None  # the frames come with a StreamDatum document instead
        if self.data_key not in doc.get("data", {}):
            return _failed(task, f"event has no data key {self.data_key!r}")
        if "external" in data_key_info and doc.get("filled", {}).get(self.data_key) is not True:
            try:
                doc = self._filler.fill_event(doc, include=[self.data_key], inplace=False)
            except Exception as err:  # a missing file or datum must not stop the run
                return _failed(task, f"cannot fill {self.data_key!r}: {type(err).__name__}: {err}")
        return FrameTask(routed.run_uid, seq_num, routed.stream, frames=doc["data"][self.data_key], time=task.time)

    def stream_datum_tasks(self, routed: Routed) -> Iterable[FrameTask]:
        """The frame tasks of a StreamDatum for ``data_key`` (one per ``seq_num``), read from HDF5."""
        datum = routed.doc
        resource = self._stream_resources.get(datum.get("stream_resource"))
        if resource is None or resource.get("data_key") != self.data_key:
            return []
        seq_nums = range(datum["seq_nums"]["start"], datum["seq_nums"]["stop"])
        indices = range(datum["indices"]["start"], datum["indices"]["stop"])
        tasks = [FrameTask(routed.run_uid, seq, routed.stream) for seq in seq_nums]
        if len(seq_nums) != len(indices):
            return [_failed(t, f"stream datum {datum['uid']} has {len(seq_nums)} seq_nums for {len(indices)} indices") for t in tasks]
        if not self.read_stream_data:
            try:
                shape = self._descriptors[datum["descriptor"]]["data_keys"][self.data_key]["shape"]
                references = frame_references(resource, indices, event_shape=shape, root_map=self.root_map)
            except Exception as err:
                return [_failed(t, f"cannot read {self.data_key!r} from {resource.get('uri')}: {type(err).__name__}: {err}") for t in tasks]
            return [FrameTask(t.run_uid, t.seq_num, t.stream, frames=ref) for t, ref in zip(tasks, references)]
        return self._read_one_by_one(tasks, resource, indices, datum["descriptor"])

    def _read_one_by_one(self, tasks, resource, indices, descriptor):
        """Tasks with their frames, read from the file one event at a time as they are taken
        (a stored run's StreamDatum may cover every event of the run: gigabytes at once)."""
        for task, index in zip(tasks, indices):
            try:
                shape = self._descriptors[descriptor]["data_keys"][self.data_key]["shape"]
                block, = read_hdf5_blocks(resource, range(index, index + 1), event_shape=shape, root_map=self.root_map)
            except Exception as err:
                yield _failed(task, f"cannot read {self.data_key!r} from {resource.get('uri')}: {type(err).__name__}: {err}")
            else:
                yield FrameTask(task.run_uid, task.seq_num, task.stream, frames=block)


def _failed(task: FrameTask, problem: str) -> FrameTask:
    logger.warning("run %s seq_num %s: %s; skipped", task.run_uid, task.seq_num, problem)
    return FrameTask(task.run_uid, task.seq_num, task.stream, problem=problem, time=task.time)


def resource_path(uri: str, root_map: Mapping[str, str] | None = None) -> str:
    """The local file path of a ``file://`` URI, with ``root_map`` prefixes rewritten.

    Examples
    --------
    >>> resource_path("file://localhost/data/scan.h5", {"/data": "/mnt/data"})
    '/mnt/data/scan.h5'
    """
    path = urlparse(uri).path if "://" in uri else uri
    for old, new in (root_map or {}).items():
        if path.startswith(old):
            return new + path[len(old):]
    return path


_DEFAULT_DATASET = "/entry/data/data"


def append_hdf5(path, dataset_name: str, index: int, value: np.ndarray) -> None:
    """Write ``value`` as entry ``index`` of an extendable dataset ``(n, *value.shape)``, one
    chunk per entry, creating file and dataset as needed. The file is opened and closed each
    time, so readers may open it between appends (HDF5 locks a file open for writing).
    """
    append_hdf5_block(path, dataset_name, index, np.asarray(value)[np.newaxis])


def append_hdf5_block(path, dataset_name: str, start: int, block: np.ndarray) -> None:
    """Write the entries ``block[0], block[1], ...`` at ``start, start + 1, ...`` of an
    extendable dataset ``(n, *block.shape[1:])`` (one chunk per entry), in one opening of
    the file; file and dataset are created as needed.

    Examples
    --------
    >>> import h5py, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "maps.h5")
    >>> append_hdf5_block(path, "/maps", 0, np.zeros((2, 3, 4)))
    >>> append_hdf5(path, "/maps", 2, np.ones((3, 4)))
    >>> with h5py.File(path, "r") as file:
    ...     file["/maps"].shape, float(file["/maps"][2].sum())
    ((3, 3, 4), 12.0)
    """
    import h5py

    entry_shape = block.shape[1:]
    with h5py.File(path, "a") as file:
        if dataset_name not in file:
            file.create_dataset(dataset_name, shape=(0, *entry_shape), maxshape=(None, *entry_shape),
                                dtype=block.dtype, chunks=(1, *entry_shape))
        dataset = file[dataset_name]
        dataset.resize(max(dataset.shape[0], start + len(block)), axis=0)
        dataset[start:start + len(block)] = block


def read_hdf5_blocks(resource: Mapping, indices: range, *, event_shape, root_map=None) -> list[np.ndarray]:
    """Read the frames of ``indices`` from the HDF5 dataset of a StreamResource.

    A dataset either has one leading axis more than an event (``(n, *event_shape)``), or
    stores the frames of each event back to back along its first axis.
    """
    path = resource_path(resource["uri"], root_map)
    dataset_name = resource.get("parameters", {}).get("dataset", _DEFAULT_DATASET)
    return _read_hdf5(path, dataset_name, indices, tuple(event_shape))


def _read_hdf5(path: str, dataset_name: str, indices: range, event_shape: tuple) -> list[np.ndarray]:
    import h5py

    with h5py.File(path, "r") as file:
        dataset = file[dataset_name]
        if dataset.ndim == len(event_shape) + 1:
            return [np.asarray(dataset[i]) for i in indices]
        per_event = event_shape[0] if len(event_shape) == dataset.ndim and len(event_shape) > 2 else 1
        return [np.asarray(dataset[i * per_event:(i + 1) * per_event]) for i in indices]


def frame_references(resource: Mapping, indices: range, *, event_shape, root_map=None) -> list[FrameReference]:
    """Where the frames of ``indices`` of a StreamResource live, without opening the file.

    Examples
    --------
    >>> resource = {"uri": "file://localhost/data/scan.h5", "data_key": "det", "parameters": {"dataset": "/d"}}
    >>> ref, = frame_references(resource, range(3, 4), event_shape=[5, 64, 64])
    >>> ref.path, ref.dataset, ref.index, ref.event_shape
    ('/data/scan.h5', '/d', 3, (5, 64, 64))
    """
    path = resource_path(resource["uri"], root_map)
    dataset_name = resource.get("parameters", {}).get("dataset", _DEFAULT_DATASET)
    shape = tuple(int(n) for n in event_shape)
    return [FrameReference(resource.get("data_key", ""), resource["uri"], path, dataset_name, i, shape) for i in indices]


def read_reference(ref: FrameReference) -> np.ndarray:
    """Read the frames of one event from where a :class:`~streamcrystal.records.FrameReference` points."""
    return _read_hdf5(ref.path, ref.dataset, range(ref.index, ref.index + 1), ref.event_shape)[0]
