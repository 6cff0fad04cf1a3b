"""HDF5 files of event data: read the frames that StreamResource/StreamDatum point to, and
append arrays to a file with the StreamResource/StreamDatum documents that say where they are.

The simulated detector writes its frames this way (as an area detector's HDF5 plugin does),
and the catalog writer its crystal maps; the pipeline and Dask workers read frames back.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import event_model
import numpy as np

from ..records import FrameReference

__all__ = ["HDF5Appender", "resource_path", "append_hdf5_block", "frame_references", "read_reference"]


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
_MIMETYPE = "application/x-hdf5"


class HDF5Appender:
    """Append arrays to the datasets of one HDF5 file, with the documents that say where they are.

    Each dataset ``(n, *array_shape)`` gets a StreamResource when its first array comes and a
    StreamDatum for every array, composed by event-model
    (:func:`event_model.compose_stream_resource`). Arrays are written at once
    (``buffered=False``: the file is opened, appended and closed every time, so readers may
    open it between appends, as a detector's HDF5 plugin lets them), or kept until
    :meth:`flush` (``buffered=True``: one opening of the file for many arrays).

    Parameters
    ----------
    path : path
        The HDF5 file (created, with its directory, at the first write).
    start : dict, optional
        The run's start document (its uid becomes the StreamResource's ``run_start``; a
        RunEngine fills it in itself).
    buffered : bool
        Keep the arrays until :meth:`flush`.
    validate : bool
        Validate the composed documents against event-model's schemas.

    Examples
    --------
    >>> import tempfile, h5py
    >>> appender = HDF5Appender(Path(tempfile.mkdtemp()) / "maps.h5", buffered=True)
    >>> docs = appender.append("/maps", "map", np.ones((2, 3)), seq_num=1)
    >>> docs += appender.append("/maps", "map", np.zeros((2, 3)), seq_num=2)
    >>> [name for name, _ in docs], docs[-1][1]["indices"], docs[-1][1]["seq_nums"]
    (['stream_resource', 'stream_datum', 'stream_datum'], {'start': 1, 'stop': 2}, {'start': 2, 'stop': 3})
    >>> appender.flush()
    >>> with h5py.File(appender.path, "r") as file:
    ...     file["/maps"].shape
    (2, 2, 3)
    """

    def __init__(self, path, *, start: Mapping | None = None, buffered: bool = False, validate: bool = True) -> None:
        self.path = Path(path)
        self.buffered = buffered
        self.validate = validate
        self._start = start
        self._datasets: dict[str, list] = {}  # dataset -> [entries so far, ComposeStreamResourceBundle]
        self._pending: dict[str, tuple[int, list[np.ndarray]]] = {}  # dataset -> (first index, arrays)
        self.pending_bytes = 0

    def append(self, dataset: str, data_key: str, array: np.ndarray, *, seq_num: int | None = None,
               descriptor: str | None = None) -> list[tuple[str, dict]]:
        """Append ``array`` to ``dataset``; returns the StreamResource (first time) and StreamDatum.

        ``seq_num`` and ``descriptor`` (a uid) are left for the RunEngine to fill in if None.
        """
        array = np.asarray(array)
        docs = []
        entry = self._datasets.get(dataset)
        if entry is None:
            bundle = event_model.compose_stream_resource(
                mimetype=_MIMETYPE, uri=f"file://localhost{self.path.resolve()}", data_key=data_key,
                parameters={"dataset": dataset, "chunk_shape": [1, *array.shape]}, start=self._start,
                validate=self.validate)
            entry = self._datasets[dataset] = [0, bundle]
            docs.append(("stream_resource", bundle.stream_resource_doc))
        index, bundle = entry
        entry[0] += 1
        if self.buffered:
            self._pending.setdefault(dataset, (index, []))[1].append(array)
            self.pending_bytes += array.nbytes
        else:
            append_hdf5_block(self.path, dataset, index, array[np.newaxis])
        datum = bundle.compose_stream_datum(
            indices={"start": index, "stop": index + 1},
            seq_nums=None if seq_num is None else {"start": seq_num, "stop": seq_num + 1},
            descriptor=None if descriptor is None else {"uid": descriptor}, validate=self.validate)
        docs.append(("stream_datum", datum))
        return docs

    def flush(self) -> None:
        """Write the arrays kept so far, one opening of the file."""
        pending, self._pending, self.pending_bytes = self._pending, {}, 0
        for dataset, (start, arrays) in pending.items():
            append_hdf5_block(self.path, dataset, start, np.stack(arrays))


def append_hdf5_block(path, dataset_name: str, start: int, block: np.ndarray) -> None:
    """Write the entries ``block[0], block[1], ...`` at ``start, start + 1, ...`` of an
    extendable dataset ``(n, *block.shape[1:])`` (one chunk per entry), in one opening of
    the file; file and dataset are created as needed.

    Examples
    --------
    >>> import h5py, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "maps.h5")
    >>> append_hdf5_block(path, "/maps", 0, np.zeros((2, 3, 4)))
    >>> append_hdf5_block(path, "/maps", 2, np.ones((1, 3, 4)))
    >>> with h5py.File(path, "r") as file:
    ...     file["/maps"].shape, float(file["/maps"][2].sum())
    ((3, 3, 4), 12.0)
    """
    import h5py

    entry_shape = block.shape[1:]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "a") as file:
        if dataset_name not in file:
            file.create_dataset(dataset_name, shape=(0, *entry_shape), maxshape=(None, *entry_shape),
                                dtype=block.dtype, chunks=(1, *entry_shape))
        dataset = file[dataset_name]
        dataset.resize(max(dataset.shape[0], start + len(block)), axis=0)
        dataset[start:start + len(block)] = block


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
