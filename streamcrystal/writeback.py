"""Write analysis runs into a catalog, and read their results back as pandas/xarray.

Tiled stores event data in tables, which take numbers and 1-D arrays but not a 2-D crystal
map. :class:`ArraysToHDF5` therefore writes the array data keys of a document stream (the
``maps`` stream's ``map``) to an HDF5 file per run, as a detector would, and replaces them with
StreamResource/StreamDatum documents; Tiled then serves the maps as one array
``(n_particles, *grid_shape)``. :func:`load_results` finds the newest analysis of a raw run.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ArraysToHDF5", "catalog_writer", "analysis_inserter", "load_results", "analysis_runs"]

logger = logging.getLogger("streamcrystal")


class ArraysToHDF5:
    """A document filter: array data keys go to HDF5 files, the rest passes through.

    Parameters
    ----------
    directory : path
        Where the HDF5 files go (one per run, named by the run's uid).
    downstream : callable
        ``downstream(name, doc)`` receives the rewritten documents, e.g. ``db.insert``.
    """

    #: Arrays of consecutive events are written to their file together, when another kind of
    #: document comes (the stop, for the maps) or this many bytes wait: opening an HDF5 file
    #: per map took 1.4 ms, 0.7 s for a run of 500 particles.
    max_pending_bytes = 64 * 2**20

    def __init__(self, directory: str | Path, downstream: Callable[[str, dict], Any]) -> None:
        self.directory = Path(directory)
        self.downstream = downstream
        self._runs: dict[str, dict] = {}  # run uid -> {"path", "descriptors": {uid: {key: shape}}, "resources", "counts"}
        self._pending: dict[tuple[Path, str], tuple[int, list[np.ndarray]]] = {}  # (file, dataset) -> (start, arrays)
        self._pending_bytes = 0

    def __call__(self, name: str, doc: Mapping) -> None:
        if name not in ("event", "event_page"):
            self.flush()  # the arrays are in their files before a stop (or anything else) goes on
        handler = getattr(self, f"_{name}", None)
        for out_name, out_doc in (handler(doc) if handler else [(name, doc)]):
            self.downstream(out_name, out_doc)
        if self._pending_bytes > self.max_pending_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the arrays still waiting to their HDF5 files."""
        from .documents import append_hdf5_block

        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        if pending:
            self.directory.mkdir(parents=True, exist_ok=True)
        for (path, dataset_name), (start, arrays) in pending.items():
            append_hdf5_block(path, dataset_name, start, np.stack(arrays))

    def _start(self, doc):
        self._runs[doc["uid"]] = {"path": self.directory / f"{doc['uid']}.h5", "descriptors": {}, "resources": {},
                                  "counts": {}}
        return [("start", doc)]

    def _descriptor(self, doc):
        run = self._runs.get(doc["run_start"])
        arrays = {key: list(spec.get("shape") or []) for key, spec in doc["data_keys"].items()
                  if spec.get("dtype") == "array" and len(spec.get("shape") or []) >= 1 and "external" not in spec}
        if run is None or not arrays:
            return [("descriptor", doc)]
        run["descriptors"][doc["uid"]] = arrays
        data_keys = {key: ({**spec, "external": "STREAM:"} if key in arrays else spec) for key, spec in doc["data_keys"].items()}
        return [("descriptor", {**doc, "data_keys": data_keys})]

    def _event(self, doc):
        run = self._runs.get(self._run_of(doc["descriptor"]))
        if run is None:
            return [("event", doc)]
        arrays = run["descriptors"][doc["descriptor"]]
        out = []
        for key in arrays:
            out += self._write(run, doc["descriptor"], key, np.asarray(doc["data"][key]), doc["seq_num"])
        data = {k: v for k, v in doc["data"].items() if k not in arrays}
        timestamps = {k: v for k, v in doc["timestamps"].items() if k not in arrays}
        filled = {k: v for k, v in doc.get("filled", {}).items() if k not in arrays}
        return out + [("event", {**doc, "data": data, "timestamps": timestamps, "filled": filled})]

    def _event_page(self, doc):
        from event_model import unpack_event_page

        return [pair for event in unpack_event_page(doc) for pair in self._event(event)]

    def _stop(self, doc):
        self._runs.pop(doc["run_start"], None)
        return [("stop", doc)]

    def _run_of(self, descriptor_uid: str) -> str | None:
        for run_uid, run in self._runs.items():
            if descriptor_uid in run["descriptors"]:
                return run_uid
        return None

    def _write(self, run: dict, descriptor: str, key: str, value: np.ndarray, seq_num: int) -> list:
        dataset_name = f"/{descriptor}/{key}"
        index = run["counts"].get(dataset_name, 0)
        _, arrays = self._pending.setdefault((run["path"], dataset_name), (index, []))  # (first index, arrays)
        arrays.append(value)
        self._pending_bytes += value.nbytes
        run["counts"][dataset_name] = index + 1
        docs = []
        if dataset_name not in run["resources"]:
            resource = {"uid": str(uuid.uuid4()), "data_key": key, "mimetype": "application/x-hdf5",
                        "uri": f"file://localhost{Path(run['path']).resolve()}",
                        "parameters": {"dataset": dataset_name, "chunk_shape": [1, *value.shape]},
                        "run_start": next(uid for uid, r in self._runs.items() if r is run)}
            run["resources"][dataset_name] = resource["uid"]
            docs.append(("stream_resource", resource))
        resource_uid = run["resources"][dataset_name]
        docs.append(("stream_datum", {
            "uid": f"{resource_uid}/{index}", "stream_resource": resource_uid, "descriptor": descriptor,
            "indices": {"start": index, "stop": index + 1}, "seq_nums": {"start": seq_num, "stop": seq_num + 1},
        }))
        return docs


def analysis_inserter(db) -> Callable[[str, dict], Any]:
    """``insert(name, doc)`` for streamcrystal's own analysis documents into ``db``.

    ``db.insert`` goes through bluesky's ``TiledWriter``, which first normalizes every
    document to the newest event-model schema, validating each with jsonschema: about 0.45 ms
    an event, 1.4 s at the stop of a 60-event run (its 3,200 ``tracks`` and ``maps`` rows).
    Analysis documents are composed by event-model in the newest schema already (the tests
    check them against its JSON schemas), so here they go straight to TiledWriter's run
    writer (its documented ``normalizer=None``). Raw runs, which may carry older documents
    (Resource/Datum), keep going through ``db.insert``.
    """
    if not getattr(db.v2, "is_sql", False):  # not a catalog of bluesky runs: databroker posts documents
        return db.insert
    from bluesky_tiled_plugins import TiledWriter

    return TiledWriter(db.v2, normalizer=None)


def catalog_writer(db, directory: str | Path | None = None) -> ArraysToHDF5:
    """``callback(name, doc)`` that stores analysis documents in ``db`` (arrays in HDF5 files).

    ``directory`` defaults to ``data/analysis`` of an embedded catalog (where its Tiled server
    may read); give one, readable by the server, for a remote catalog.
    """
    from .tiled_catalog import raw_data_dir

    if directory is None:
        raw = raw_data_dir(db)
        if raw is None:
            raise ValueError("a remote catalog needs a directory for the analysis arrays that its Tiled server can "
                             "read (give directory=...)")
        directory = raw.parent / "analysis"
    return ArraysToHDF5(directory, analysis_inserter(db))


def analysis_runs(db, raw_uid: str, stage: str = "peak_tracking") -> list:
    """The analysis runs of ``raw_uid`` in ``db``, oldest first (BlueskyRun clients, v3)."""
    from tiled.queries import Key

    found = db.v3.search(Key("raw_uid") == raw_uid).search(Key("analysis_stage") == stage)
    runs = [found[uid] for uid in found]
    return sorted(runs, key=lambda run: run.start["time"])


def load_results(db, raw_uid: str, stage: str = "peak_tracking"):
    """The newest analysis of raw run ``raw_uid`` in ``db``, as a :class:`~streamcrystal.results.RunResults`.

    The newest one that ended with ``exit_status: "success"``; if none did, the newest (its
    ``failure`` says why it did not).

    Raises
    ------
    KeyError
        If ``db`` holds no analysis of that run (the message says how to make one).
    """
    from .maps import PARTICLE_COLUMNS, maps_to_xarray
    from .results import RunResults

    runs = analysis_runs(db, raw_uid, stage)
    if not runs:
        raise KeyError(f"no {stage} analysis of raw run {raw_uid!r} in the catalog; make one with "
                       f"'streamcrystal replay {raw_uid}'")
    # the newest complete analysis; a run cut short (a killed server's, a recovered journal's)
    # only if there is nothing else
    complete = [run for run in runs if (run.metadata.get("stop") or {}).get("exit_status") == "success"]
    run = (complete or runs)[-1]
    tables = {stream: _table(run, stream) for stream in ("features", "frames", "tracks", "maps")}
    raw_start = dict(run.start.get("raw_grid") or {})  # the raw scan's grid, copied into the analysis start
    if len(tables["maps"]):
        maps = np.asarray(run["maps"]["map"].read(), dtype=np.float64)
    else:
        maps = np.zeros((0, *(raw_start.get("shape") or [len(tables["frames"])])))
    particles = tables["maps"].reindex(columns=list(PARTICLE_COLUMNS)).astype(
        {"particle": np.int64, "y": np.float64, "x": np.float64, "n_frames": np.int64, "total_intensity": np.float64})
    extents, dims = _grid(raw_start, maps.shape[1:])
    stop = run.metadata.get("stop") or {}
    problems = tuple(p for p in (stop.get("reason") or "").split(" | ") if p)
    failure = None if stop.get("exit_status", "success") == "success" else (stop.get("reason") or stop.get("exit_status"))
    return RunResults(raw_uid, tables["features"], tables["frames"], tables["tracks"], particles,
                      maps_to_xarray(particles, maps, extents=extents, dims=dims), problems, failure)


def _table(run, stream: str) -> pd.DataFrame:
    if stream not in run:
        return pd.DataFrame()
    node = run[stream]
    columns = [key for key in node if key not in ("time", "seq_num", "map") and not key.startswith("ts_")]
    return pd.DataFrame({key: np.asarray(node[key].read()) for key in columns})


def _grid(start: Mapping, shape) -> tuple:
    from .maps import grid_of

    raw = {"shape": start.get("shape"), "extents": start.get("extents"), "snaking": start.get("snaking"),
           "motors": start.get("motors")}
    if raw["shape"] and tuple(raw["shape"]) == tuple(shape):
        _, _, extents, dims = grid_of(raw)
        return extents, dims
    return None, None
