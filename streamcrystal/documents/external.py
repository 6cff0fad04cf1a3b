"""External data: turn events (inline, Resource/Datum) and StreamDatum documents into frame tasks.

Resource/Datum are filled by :class:`event_model.Filler` with registered handlers;
StreamResource/StreamDatum pointing at HDF5 are read with h5py (:mod:`.hdf5`; event-model's
Filler does not read stream data), or passed on as references for the process that does the
per-frame work.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import event_model

from ..records import FrameTask, Routed, log_skipped
from .hdf5 import frame_references, read_hdf5_blocks

__all__ = ["ExternalData", "default_handler_registry"]

logger = logging.getLogger("streamcrystal")


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
    log_skipped(task.run_uid, task.seq_num, problem)
    return FrameTask(task.run_uid, task.seq_num, task.stream, problem=problem, time=task.time)
