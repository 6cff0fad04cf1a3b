"""External data: turn events (inline, Resource/Datum) and StreamDatum documents into frame tasks.

Resource/Datum are filled by :class:`event_model.Filler` with registered handlers;
StreamResource/StreamDatum pointing at HDF5 are read with h5py (:mod:`.hdf5`; event-model's
Filler does not read stream data), or passed on as references for the process that does the
per-frame work.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping

import event_model
import numpy as np

from ..records import FrameTask, Routed, log_skipped, replace
from .hdf5 import frame_references

__all__ = ["ExternalData", "default_handler_registry"]

logger = logging.getLogger("streamcrystal")


def default_handler_registry() -> dict:
    """Handlers for Resource/Datum external data: area-detector HDF5 (spec ``AD_HDF5``)."""
    from area_detector_handlers.handlers import AreaDetectorHDF5Handler

    return {"AD_HDF5": AreaDetectorHDF5Handler}


class ExternalData:
    """Turn events (inline or Resource/Datum) and StreamDatum documents into frame tasks.

    Resource/Datum are filled by :class:`event_model.Filler` with registered handlers. For
    StreamResource/StreamDatum (event-model's Filler does not read stream data) a task carries
    a :class:`~streamcrystal.records.FrameReference` (file, dataset, index), read by the
    ``process`` step where it runs (this process, or a Dask worker: no image crosses the
    network). An event and the StreamDatum of its frames come as two documents, in either
    order: they are joined by ``seq_num``, in arrival order (a re-taken point repeats its
    ``seq_num``), so that every task has its event's readings and time.

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
    """

    def __init__(self, data_key: str, *, handler_registry: dict | None = None, root_map: dict | None = None,
                 frame_key: str | None = None) -> None:
        self.data_key = data_key
        self.frame_key = frame_key
        self.root_map = dict(root_map or {})
        registry = default_handler_registry() if handler_registry is None else dict(handler_registry)
        self._filler = event_model.Filler(registry, root_map=self.root_map, inplace=False)
        self._stream_resources: dict[str, dict] = {}
        self._descriptors: dict[str, dict] = {}
        # events and StreamDatum tasks waiting for each other, by (run, stream, seq_num)
        self._events: dict[tuple, deque] = {}
        self._frames: dict[tuple, deque] = {}

    def register(self, routed: Routed) -> None:
        """Remember a descriptor, resource or datum document (the ``cache`` sink node)."""
        if routed.problem:
            return
        if routed.name == "descriptor":
            self._descriptors[routed.doc["uid"]] = routed.doc
        if routed.name == "stream_resource":
            self._stream_resources[routed.doc["uid"]] = routed.doc
        elif routed.name != "stream_datum":
            self._filler(routed.name, routed.doc)

    def stop_run(self, routed: Routed) -> list[FrameTask]:
        """What a stopped run leaves: events whose StreamDatum never came (skipped frames),
        StreamDatum tasks whose event never came (without readings). Its caches are dropped."""
        run_uid = routed.run_uid
        left = []
        for waiting, unmatched in ((self._events, "no StreamDatum came for this event's {key!r}"), (self._frames, None)):
            for key in [key for key in waiting if key[0] == run_uid]:
                for task in waiting.pop(key):
                    left.append(task if unmatched is None else _failed(task, unmatched.format(key=self.data_key)))
        self._stream_resources = {k: v for k, v in self._stream_resources.items() if v.get("run_start") != run_uid}
        self._descriptors = {k: v for k, v in self._descriptors.items() if v.get("run_start") != run_uid}
        if not self._descriptors:
            self._filler.clear_document_caches()
        return sorted(left, key=lambda task: task.seq_num)

    def event_task(self, routed: Routed) -> list[FrameTask]:
        """The frame task of one event of the processed (or dark) stream, data filled (or none yet)."""
        doc = routed.doc
        data = doc.get("data", {})
        seq_num = int(data.get(self.frame_key, doc.get("seq_num", -1)))
        task = FrameTask(routed.run_uid, seq_num, routed.stream, time=doc.get("time", 0.0), readings=_readings(data))
        descriptor = self._descriptors.get(doc["descriptor"], {})
        data_key_info = descriptor.get("data_keys", {}).get(self.data_key, {})
        if str(data_key_info.get("external", "")).startswith("STREAM:"):
            return self._join(self._events, self._frames, task, lambda event, frames: replace(frames, time=event.time,
                                                                                               readings=event.readings))
        if self.data_key not in data:
            return [_failed(task, f"event has no data key {self.data_key!r}")]
        if "external" in data_key_info and doc.get("filled", {}).get(self.data_key) is not True:
            try:
                doc = self._filler.fill_event(doc, include=[self.data_key], inplace=False)
            except Exception as err:  # a missing file or datum must not stop the run
                return [_failed(task, f"cannot fill {self.data_key!r}: {type(err).__name__}: {err}")]
        return [replace(task, frames=doc["data"][self.data_key])]

    def stream_datum_tasks(self, routed: Routed) -> list[FrameTask]:
        """The frame tasks of a StreamDatum for ``data_key`` (one per ``seq_num``), each with a
        reference to its frames, given out once its event has come."""
        datum = routed.doc
        resource = self._stream_resources.get(datum.get("stream_resource"))
        if resource is None or resource.get("data_key") != self.data_key:
            return []
        seq_nums = range(datum["seq_nums"]["start"], datum["seq_nums"]["stop"])
        indices = range(datum["indices"]["start"], datum["indices"]["stop"])
        tasks = [FrameTask(routed.run_uid, seq, routed.stream) for seq in seq_nums]
        if len(seq_nums) != len(indices):
            problem = f"stream datum {datum['uid']} has {len(seq_nums)} seq_nums for {len(indices)} indices"
            tasks = [replace(task, problem=problem) for task in tasks]
        else:
            try:
                shape = self._descriptors[datum["descriptor"]]["data_keys"][self.data_key]["shape"]
                references = frame_references(resource, indices, event_shape=shape, root_map=self.root_map)
                tasks = [replace(task, frames=reference) for task, reference in zip(tasks, references)]
            except Exception as err:
                problem = f"cannot read {self.data_key!r} from {resource.get('uri')}: {type(err).__name__}: {err}"
                tasks = [replace(task, problem=problem) for task in tasks]
        joined = []
        for task in tasks:
            joined += self._join(self._frames, self._events, task, lambda frames, event: replace(
                frames, time=event.time, readings=event.readings))
        for task in joined:
            if task.problem is not None:
                log_skipped(task.run_uid, task.seq_num, task.problem)
        return joined

    @staticmethod
    def _join(mine: dict, theirs: dict, task: FrameTask, combine) -> list[FrameTask]:
        """``task`` joined with the oldest waiting one of the other kind, or left waiting."""
        key = (task.run_uid, task.stream, task.seq_num)
        if theirs.get(key):
            other = theirs[key].popleft()
            if not theirs[key]:
                del theirs[key]
            return [combine(task, other)]
        mine.setdefault(key, deque()).append(task)
        return []


def _readings(data: Mapping) -> dict[str, float]:
    """The scalar numbers of an event's data (the motors' positions among them).

    Examples
    --------
    >>> _readings({"sample_x": 1.5, "det_image": [[1, 2]], "shutter": True, "n": 3})
    {'sample_x': 1.5, 'n': 3.0}
    """
    return {key: float(value) for key, value in data.items()
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))}


def _failed(task: FrameTask, problem: str) -> FrameTask:
    log_skipped(task.run_uid, task.seq_num, problem)
    return replace(task, frames=None, problem=problem)
