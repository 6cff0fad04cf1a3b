"""Write analysis runs into a catalog, and read their results back as pandas/xarray.

Tiled stores event data in tables, which take numbers and 1-D arrays but not a 2-D crystal
map. :class:`ArraysToHDF5` therefore writes the array data keys of a document stream (the
``maps`` stream's ``map``) to an HDF5 file per run, as a detector would, and replaces them with
StreamResource/StreamDatum documents; Tiled then serves the maps as one array
``(n_particles, *grid_shape)``. :func:`load_results` finds the newest analysis of a raw run.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from event_model import unpack_event_page

from ..documents.hdf5 import HDF5Appender
from ..graph.results import RunResults, grid_coords, maps_as_xarray
from ..schema import FRAME_DTYPES, GRAIN_DTYPES, PARTICLE_DTYPES, STREAMS, typed
from ..science.grains import grain_label_map
from ..science.maps import grid_of, maps_to_xarray
from .catalog import raw_data_dir
from .jsonl import JsonlWriter
from .spool import FlushReport, SpoolingWriter, default_spool_dir, flush_spool

__all__ = ["ArraysToHDF5", "ResultsWriter", "results_writer", "catalog_writer", "analysis_inserter", "load_results",
           "analysis_runs"]

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
        self._appenders: dict[str, HDF5Appender] = {}  # run uid -> its file's appender
        self._arrays: dict[str, tuple[str, list[str]]] = {}  # descriptor uid -> (run uid, array data keys)

    def __call__(self, name: str, doc: Mapping) -> None:
        if name not in ("event", "event_page"):
            self.flush()  # the arrays are in their files before a stop (or anything else) goes on
        handler = getattr(self, f"_{name}", None)
        for out_name, out_doc in (handler(doc) if handler else [(name, doc)]):
            self.downstream(out_name, out_doc)
        if sum(appender.pending_bytes for appender in self._appenders.values()) > self.max_pending_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the arrays still waiting to their HDF5 files."""
        for appender in self._appenders.values():
            appender.flush()

    def _start(self, doc):
        # the documents are event-model's own (composed and validated upstream): not validated again
        self._appenders[doc["uid"]] = HDF5Appender(self.directory / f"{doc['uid']}.h5", start=doc, buffered=True,
                                                   validate=False)
        return [("start", doc)]

    def _descriptor(self, doc):
        arrays = [key for key, spec in doc["data_keys"].items()
                  if spec.get("dtype") == "array" and len(spec.get("shape") or []) >= 1 and "external" not in spec]
        if doc["run_start"] not in self._appenders or not arrays:
            return [("descriptor", doc)]
        self._arrays[doc["uid"]] = (doc["run_start"], arrays)
        data_keys = {key: ({**spec, "external": "STREAM:"} if key in arrays else spec) for key, spec in doc["data_keys"].items()}
        return [("descriptor", {**doc, "data_keys": data_keys})]

    def _event(self, doc):
        if doc["descriptor"] not in self._arrays:
            return [("event", doc)]
        run_uid, arrays = self._arrays[doc["descriptor"]]
        out = []
        for key in arrays:
            out += self._appenders[run_uid].append(f"/{doc['descriptor']}/{key}", key, doc["data"][key],
                                                   seq_num=doc["seq_num"], descriptor=doc["descriptor"])
        data = {k: v for k, v in doc["data"].items() if k not in arrays}
        timestamps = {k: v for k, v in doc["timestamps"].items() if k not in arrays}
        filled = {k: v for k, v in doc.get("filled", {}).items() if k not in arrays}
        return out + [("event", {**doc, "data": data, "timestamps": timestamps, "filled": filled})]

    def _event_page(self, doc):
        return [pair for event in unpack_event_page(doc) for pair in self._event(event)]

    def _stop(self, doc):
        self._appenders.pop(doc["run_start"], None)
        self._arrays = {uid: entry for uid, entry in self._arrays.items() if entry[0] != doc["run_start"]}
        return [("stop", doc)]


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
    if directory is None:
        raw = raw_data_dir(db)
        if raw is None:
            raise ValueError(f"the catalog at {db.v2.uri} is not an embedded one: give a directory for the analysis "
                             "arrays that its Tiled server can read (catalog_writer(db, directory=...); "
                             "streamcrystal serve --arrays-dir DIR)")
        directory = raw.parent / "analysis"
    return ArraysToHDF5(directory, analysis_inserter(db))


@dataclass
class ResultsWriter:
    """A server's writer chain (:func:`results_writer`): call :attr:`write` with each analysis document.

    Attributes
    ----------
    write : callable
        The head of the chain: ``write(name, doc)``.
    spool : SpoolingWriter
        The journal in the chain (its ``close`` names what could not be inserted).
    destination : str
        Where the runs go, in words (for status lines).
    earlier : FlushReport
        Runs an earlier server left in the spool, inserted (or not) when the chain was made.
    """

    write: Callable[[str, dict], Any]
    spool: SpoolingWriter
    destination: str
    earlier: FlushReport
    _insert: Callable[[str, dict], Any]

    def close_destination(self) -> None:
        """Close the destination (its files, its client), once the spool is closed."""
        getattr(self._insert, "close", lambda: None)()


def results_writer(db=None, *, jsonl: str | Path | None = None, spool_dir: str | Path | None = None,
                   arrays_dir: str | Path | None = None, retry_interval: float = 30.0,
                   description: str | None = None) -> ResultsWriter:
    """The writer chain a server composes: arrays to HDF5, a spool journal, then the catalog (or JSON lines).

    ``arrays -> HDF5 files`` (:class:`ArraysToHDF5`, catalogs only: their tables take no 2-D
    maps) ``-> spool`` (:class:`~streamcrystal.storage.spool.SpoolingWriter`: each run journaled
    until the destination has its stop) ``-> insert`` (the catalog's
    :func:`analysis_inserter`, or :class:`~streamcrystal.storage.jsonl.JsonlWriter` files in
    ``jsonl``). Runs that an earlier server left in ``spool_dir`` are inserted first.

    Parameters
    ----------
    db : databroker.Broker, optional
        The catalog (from :func:`streamcrystal.catalog`); or give ``jsonl``.
    jsonl : path, optional
        A directory of JSON-lines files, one per analysis run, instead of a catalog.
    spool_dir : path, optional
        Default :func:`~streamcrystal.storage.spool.default_spool_dir`.
    arrays_dir : path, optional
        Where the maps' HDF5 files go (default: ``data/analysis`` of an embedded catalog).
    retry_interval : float
        Seconds between retries of spooled runs.
    description : str, optional
        Where the runs go, in words (default: the catalog's URI, or the directory).
    """
    if (db is None) == (jsonl is None):
        raise ValueError("results_writer needs a catalog (db) or a jsonl directory, not both")
    if jsonl is not None:
        insert, destination = JsonlWriter(jsonl), f"{jsonl}/"
    else:
        insert, destination = analysis_inserter(db), f"catalog {db.v2.uri}"
    spool_dir = default_spool_dir() if spool_dir is None else Path(spool_dir)
    earlier = flush_spool(spool_dir, insert)
    spool = SpoolingWriter(insert, spool_dir, retry_interval=retry_interval)
    write = spool
    if db is not None:
        write = ArraysToHDF5(arrays_dir if arrays_dir is not None else catalog_writer(db).directory, spool)
    return ResultsWriter(write, spool, description or destination, earlier, insert)


def analysis_runs(db, raw_uid: str, stage: str = "peak_tracking") -> list:
    """The analysis runs of ``raw_uid`` in ``db``, oldest first (BlueskyRun clients, v3)."""
    from tiled.queries import Key

    found = db.v3.search(Key("raw_uid") == raw_uid).search(Key("analysis_stage") == stage)
    runs = [found[uid] for uid in found]
    return sorted(runs, key=lambda run: run.start["time"])


def load_results(db, raw_uid: str, stage: str = "peak_tracking"):
    """The newest analysis of raw run ``raw_uid`` in ``db``, as a :class:`~streamcrystal.graph.results.RunResults`.

    The newest one that ended with ``exit_status: "success"``; if none did, the newest (its
    ``failure`` says why it did not).

    Raises
    ------
    KeyError
        If ``db`` holds no analysis of that run (the message says how to make one).
    """
    runs = analysis_runs(db, raw_uid, stage)
    if not runs:
        raise KeyError(f"no {stage} analysis of raw run {raw_uid!r} in the catalog; make one with "
                       f"'streamcrystal replay {raw_uid}'")
    # the newest complete analysis; a run cut short (a killed server's, a recovered journal's)
    # only if there is nothing else
    complete = [run for run in runs if (run.metadata.get("stop") or {}).get("exit_status") == "success"]
    run = (complete or runs)[-1]
    tables = {stream: _table(run, stream) for stream in STREAMS}
    tables["tracks"] = _merged(tables["tracks"], tables["relabels"])
    placement = dict(run.start.get("placement") or {})
    dims = list(placement.get("dimensions") or ())
    particles = typed(tables["maps"], PARTICLE_DTYPES)
    frames = tables["frames"]
    if len(frames) and set(FRAME_DTYPES) <= set(frames.columns):  # (older analysis runs had fewer columns)
        frames = typed(frames, FRAME_DTYPES).join(frames[[d for d in dims if d in frames.columns]])
    points = tables["points"]
    if len(tables["maps"]):
        maps = np.asarray(run["maps"]["map"].read(), dtype=np.float64)
    else:
        maps = None
    stop = run.metadata.get("stop") or {}
    problems = tuple(p for p in (stop.get("reason") or "").split(" | ") if p)
    failure = None if stop.get("exit_status", "success") == "success" else (stop.get("reason") or stop.get("exit_status"))
    if placement:
        grid = _stored_grid(points, dims)
        if maps is None:
            maps = np.zeros((0, *grid["shape"]))
        array = maps_as_xarray(particles, maps, grid, points)
    else:  # an analysis run written before placement by positions: its raw run's grid
        raw_start = dict(run.start.get("raw_grid") or {})
        if maps is None:
            maps = np.zeros((0, *(raw_start.get("shape") or [len(frames)])))
        extents, dim_names = _grid(raw_start, maps.shape[1:])
        array = maps_to_xarray(particles, maps, extents=extents, dims=dim_names)
    results = RunResults(raw_uid, tables["features"], frames, tables["tracks"], particles, array, problems, failure,
                         points, placement, complete=bool(stop))
    return _with_grains(results, run, tables["grains"])


def _with_grains(results: RunResults, run, table: pd.DataFrame) -> RunResults:
    """The stored grains: the ``maps`` stream's ``grain`` of each particle, the ``grains`` stream's
    table (its ``particles`` without the -1 padding) and maps; the label map made again from
    them. (Which fragments are one reflection is not stored: ``grains`` has no ``reflection``.)"""
    if "grains" not in run or "grain" not in results.particles.columns:
        return results
    maps = results.maps
    grain_table = typed(table, GRAIN_DTYPES) if len(table) else typed(pd.DataFrame(columns=list(GRAIN_DTYPES)),
                                                                        GRAIN_DTYPES)
    if len(table):
        members = np.asarray(run["grains"]["particles"].read()).reshape(len(table), -1)
        values = np.asarray(run["grains"]["map"].read(), dtype=np.float64).reshape(len(table), *maps.shape[1:])
    else:
        members, values = np.zeros((0, 0), np.int64), np.zeros((0, *maps.shape[1:]))
    grain_table = grain_table.assign(particles=[tuple(int(p) for p in row if p >= 0) for row in members])
    grain_table = grain_table.set_index("grain")[["particles", "n_reflections", "n_particles", "footprint"]]
    coords = grid_coords(maps)
    grain_maps = xr.DataArray(values, dims=("grain", *maps.dims[1:]), name="grain_map",
                              coords={"grain": grain_table.index.to_numpy(), **coords})
    labels = xr.DataArray(grain_label_map(values), dims=maps.dims[1:], name="grain", coords=coords)
    per_particle = results.particles[["particle", "grain"]].reset_index(drop=True)
    return replace(results, grains=per_particle, grain_table=grain_table, grain_maps=grain_maps, grain_labels=labels)


def _merged(tracks: pd.DataFrame, relabels: pd.DataFrame) -> pd.DataFrame:
    """The stored tracks (their live particle ids) with each merged particle given the id it was
    merged into, as the pipeline's results report them."""
    if not len(tracks) or not len(relabels):
        return tracks
    into = {}
    for row in relabels[relabels["kind"] == "merge"].itertuples(index=False):
        into[int(row.particle)] = int(row.into)

    def final(particle: int) -> int:
        while particle in into:
            particle = into[particle]
        return particle

    return tracks.assign(particle=[final(int(p)) for p in tracks["particle"]])


def _stored_grid(points: pd.DataFrame, dims: list[str]) -> dict:
    """The maps' grid of a stored run, from its ``points`` stream: each axis's coordinates
    (the points' positions at each index), or the points themselves."""
    if len(points) and all(f"index_{d}" in points.columns for d in dims):
        coords = [points.groupby(f"index_{d}")[d].first().sort_index().to_numpy() for d in dims]
        return {"shape": [len(c) for c in coords], "dims": dims, "coords": coords}
    return {"shape": [len(points)], "dims": ["point"], "coords": [points["point"].to_numpy() if len(points) else []]}


def _table(run, stream: str) -> pd.DataFrame:
    if stream not in run:
        return pd.DataFrame()
    node = run[stream]
    columns = [key for key in node if key not in ("time", "seq_num", "map", "particles") and not key.startswith("ts_")]
    return pd.DataFrame({key: np.asarray(node[key].read()) for key in columns})


def _grid(start: Mapping, shape) -> tuple:
    raw = {"shape": start.get("shape"), "extents": start.get("extents"), "snaking": start.get("snaking"),
           "motors": start.get("motors")}
    if raw["shape"] and tuple(raw["shape"]) == tuple(shape):
        _, _, extents, dims = grid_of(raw)
        return extents, dims
    return None, None
