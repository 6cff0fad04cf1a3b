"""Event-model documents out: one analysis run per raw run (the ``to_event_model`` node).

Streams of an analysis run:

``features``  one row per located peak (an ``event_page`` per raw event), emitted as each raw
              event is processed;
``frames``    one event per processed raw event (peaks found, intensity, skip reason);
``tracks``    one row per linked feature (features + ``particle``), a page per raw event as it
              is linked (after the raw stop, for the seed's scan-order linker);
``maps``      after the raw stop, one event per particle: its crystal map over the scan grid.

The descriptors of ``features`` and ``frames`` are emitted with the start, so a run without
any peak still has them (the original emitted none).
"""
from __future__ import annotations

import logging
import time as ttime
from collections.abc import Mapping

import event_model
import numpy as np
import pandas as pd

from ..records import FrameResult, Placed, RunAnalysis, RunOpened
from ..schema import GRAIN_DTYPES, PARTICLE_DTYPES, data_keys, feature_columns

__all__ = ["AnalysisRun", "to_event_model", "derived_run_metadata", "PAGE_ROWS"]

logger = logging.getLogger("streamcrystal")

PAGE_ROWS = 10_000
"""The most rows of one ``event_page`` of the ``features`` or ``tracks`` stream (a whole run's
``tracks`` of the seed's linker come at the stop: in pages of this size)."""


def _plain(value):
    """A JSON/msgpack-friendly Python scalar of a numpy or pandas value."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _column_values(values, n: int) -> list:
    """``n`` plain Python values of a column: a pandas or numpy column, or one scalar for every row."""
    if isinstance(values, pd.Series):
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":
            return values.to_numpy().tolist()
        return [_plain(value) for value in values.tolist()]
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "biuf":
        return values.tolist()
    if np.ndim(values) == 0:
        return [_plain(values.item() if isinstance(values, np.generic) else values)] * n
    return [_plain(value) for value in values]


def _feature_lists(features: pd.DataFrame) -> dict[str, list]:
    """Each column of ``features`` as a list of plain Python values.

    ``DataFrame.items`` rather than ``features[column]`` per column, which costs a lookup each.
    """
    return {column: _column_values(values, len(features)) for column, values in features.items()}


def derived_run_metadata(raw_start: Mapping) -> dict:
    """Keys a derived run copies from its raw run, so bluesky's live views can show it.

    ``BestEffortCallback`` formats ``plan_type`` and ``scan_id`` of every start it sees;
    ``raw_grid`` holds the raw start's ``shape``, ``extents``, ``snaking`` and ``motors``.
    """
    metadata = {"plan_type": "streamcrystal", "scan_id": raw_start.get("scan_id", 0)}
    if "sample" in raw_start:
        metadata["sample"] = raw_start["sample"]
    # the raw scan's grid, so that maps and live views need not find the raw run
    grid = {key: raw_start[key] for key in ("shape", "extents", "snaking", "motors") if key in raw_start}
    if grid:
        metadata["raw_grid"] = grid
    return metadata


class AnalysisRun:
    """Compose the documents of the analysis run of one raw run.

    Parameters
    ----------
    raw_start : dict
        The raw run's start document.
    provenance : dict
        The pipeline's description (nodes, edges, parameters, versions), stored under
        ``pipeline`` in the analysis start.
    stage : str
        ``analysis_stage`` of the start document.
    feature_columns : sequence of str
        The columns of the features (:func:`~streamcrystal.schema.feature_columns`).
    stream_names : dict, optional
        The name of each stream if not its own (the seed's callbacks put their features or
        tracks in ``primary``, where ``header.table()`` reads).
    placement : dict, optional
        How the raw run's readings are placed and linked (stored under ``placement`` in the
        analysis start; its ``dimensions`` become columns of the ``frames`` and ``points`` streams).
    """

    def __init__(self, raw_start: Mapping, provenance: Mapping, *, stage: str = "peak_tracking",
                 feature_columns=feature_columns(), stream_names: Mapping[str, str] | None = None,
                 placement: Mapping | None = None) -> None:
        self.raw_uid = raw_start["uid"]
        self.feature_columns = tuple(feature_columns)
        self.stream_names = dict(stream_names or {})
        self.dimensions = list((placement or {}).get("dimensions", ()))
        self._where = ("frame", "reading", "point") if placement is not None else ("frame",)
        metadata = {
            "raw_uid": self.raw_uid,
            "analysis_stage": stage,
            "plan_name": stage,
            "pipeline": dict(provenance),
            **derived_run_metadata(raw_start),
        }
        if placement is not None:
            metadata["placement"] = dict(placement)
        self._bundle = event_model.compose_run(metadata=metadata)
        self._composers: dict[str, event_model.ComposeDescriptorBundle] = {}
        self._readings = 0
        self._latencies: list[float] = []
        self._columns: dict[str, list[str]] = {}  # the data keys of the features and tracks streams

    @property
    def uid(self) -> str:
        return self._bundle.start_doc["uid"]

    def _descriptor(self, stream: str, keys: dict) -> list:
        bundle = self._bundle.compose_descriptor(name=self.stream_names.get(stream, stream), data_keys=keys)
        self._composers[stream] = bundle
        return [("descriptor", bundle.descriptor_doc)]

    def _keys(self, stream: str, **more) -> dict:
        keys = data_keys(stream, feature_columns=self.feature_columns, dimensions=self.dimensions, **more)
        if stream in ("features", "tracks"):  # where a feature was seen: the seed's callbacks know only the frame
            keys = {key: spec for key, spec in keys.items() if key not in ("reading", "point") or key in self._where}
        return keys

    def _event(self, stream: str, data: dict, *, plain: bool = False) -> tuple[str, dict]:
        now = ttime.time()
        if not plain:  # ``plain``: the values are Python scalars already
            data = {key: _plain(value) for key, value in data.items()}
        # Not validated here: jsonschema costs ~0.7 ms an event and a noisy frame has hundreds
        # of features; the keys come from our own descriptor, and the tests validate every
        # document the pipeline emits against event-model's schemas.
        return ("event", self._composers[stream].compose_event(data=data, timestamps=dict.fromkeys(data, now),
                                                                validate=False))

    def open(self, streams=("features", "frames")) -> list[tuple[str, dict]]:
        """The start document and the descriptors of the per-frame ``streams``."""
        docs = [("start", self._bundle.start_doc)]
        for stream in streams:
            docs += self._descriptor(stream, self._keys(stream))
        return docs

    def _features(self, stream: str, features: pd.DataFrame, extra: Mapping, lists: Mapping | None = None
                  ) -> list[tuple[str, dict]]:
        """The rows of ``features`` as ``event_page`` documents, a row per peak (``extra``: more
        columns, scalars or one value per row; ``lists``: the columns of ``features`` as lists
        already, :func:`_feature_lists`).

        One page per frame (per :data:`PAGE_ROWS` rows of a whole run's table) rather than one
        event per row: the same rows in the catalog (``TiledWriter`` and bluesky's callbacks,
        ``DocumentRouter`` subclasses, unpack a page), at a fraction of the cost. Events by
        the row were most of the client's CPU per event with a Dask cluster.
        """
        columns = self._columns.get(stream)
        if columns is None:
            columns = self._columns[stream] = list(self._keys(stream))
        n = len(features)
        if n == 0:
            return []
        lists = _feature_lists(features) if lists is None else lists
        data = {column: _column_values(extra[column], n) if column in extra else lists[column] if column in lists
                else [np.nan] * n for column in columns}
        composer = self._composers[stream]
        docs = []
        for first in range(0, n, PAGE_ROWS):
            page = data if n <= PAGE_ROWS else {key: values[first:first + PAGE_ROWS] for key, values in data.items()}
            now, rows = ttime.time(), len(page[columns[0]])
            # Not validated, as _event says; a list of its own per key, as event-model's pack_event_page makes
            docs.append(("event_page", composer.compose_event_page(
                data=page, timestamps={key: [now] * rows for key in page}, validate=False)))
        return docs

    def _frames_row(self, result: FrameResult, reading: int, point: int, position=(), superseded=False,
                    latency: float = float("nan")) -> dict:
        row = {"frame": result.seq_num, "reading": reading, "point": point, "n_peaks": result.n_peaks,
               "total_intensity": result.total_intensity, "masked_fraction": result.masked_fraction,
               "superseded": superseded, "skipped": result.problem is not None, "skip_reason": result.problem or "",
               "latency": latency}
        row.update({dim: position[k] if position else np.nan for k, dim in enumerate(self.dimensions)})
        return row

    def frame(self, result: FrameResult) -> list[tuple[str, dict]]:
        """One ``features`` event per peak of a frame, then its ``frames`` event (the seed's callbacks)."""
        self._readings += 1
        docs = self._features("features", result.features, {})
        docs.append(self._event("frames", self._frames_row(result, self._readings, -1)))
        return docs

    def placed(self, placed: Placed) -> list[tuple[str, dict]]:
        """A reading placed and linked: its ``features``, its ``tracks`` (each feature with its
        live particle), its ``frames`` event, the ``relabels`` it made, and a ``frames`` event
        marking each earlier reading it supersedes."""
        result = placed.result
        where = {"reading": placed.reading, "point": placed.point}
        lists = _feature_lists(result.features)  # once for both streams
        docs = self._features("features", result.features, where, lists)
        if "tracks" in self._composers and result.n_peaks and placed.point >= 0:
            docs += self._features("tracks", result.features, {**where, "particle": placed.particles}, lists)
        docs.append(self._event("frames", self._frames_row(result, placed.reading, placed.point, placed.position,
                                                           latency=placed.latency)))
        if placed.latency == placed.latency:  # not NaN
            self._latencies.append(placed.latency)
        for old in placed.supersedes:
            docs.append(self._event("frames", self._frames_row(old.result, old.reading, old.point, old.position,
                                                               superseded=True, latency=old.latency)))
        if "relabels" in self._composers:
            for particle, into in placed.relabelled.items():
                kind = "merge" if into < particle else "split"
                docs.append(self._event("relabels", {"frame": result.seq_num, "reading": placed.reading,
                                                     "particle": particle, "into": into, "kind": kind}))
        return docs

    def close(self, analysis: RunAnalysis, streams=("points", "maps", "grains")) -> list[tuple[str, dict]]:
        """The run's final streams (``points``, ``maps`` and ``grains``; ``tracks`` for the seed's
        linker) and its stop."""
        docs = []
        if "tracks" in streams:
            docs += self._descriptor("tracks", self._keys("tracks"))
            docs += self._features("tracks", analysis.tracks, {})
        if "points" in streams and analysis.points is not None:
            docs += self._points(analysis.points)
        if "maps" in streams:
            docs += self._maps(analysis)
        if "grains" in streams and analysis.grains is not None:
            docs += self._grains(analysis)
        docs.append(("stop", self._stop(analysis.stop, analysis.problems, analysis.failure)))
        return docs

    def close_without_tracks(self, raw_stop: Mapping) -> list[tuple[str, dict]]:
        """Only the stop document (for a run of per-frame streams only)."""
        return [("stop", self._stop(raw_stop, (), None))]

    def _points(self, points: pd.DataFrame) -> list[tuple[str, dict]]:
        keys = {key: spec for key, spec in self._keys("points").items() if key in points.columns}
        docs = self._descriptor("points", keys)
        columns = list(keys)
        for row in points.reindex(columns=columns).itertuples(index=False):
            docs.append(self._event("points", dict(zip(columns, row))))
        return docs

    def _maps(self, analysis: RunAnalysis) -> list[tuple[str, dict]]:
        grid = analysis.grid
        docs = self._descriptor("maps", self._keys("maps", grid_shape=grid["shape"], grid_dims=grid["dims"]))
        particles = analysis.particles if analysis.particles is not None else pd.DataFrame()
        columns = list(PARTICLE_DTYPES)
        for row, particle_map in zip(particles.reindex(columns=columns).itertuples(index=False), analysis.maps):
            docs.append(self._event("maps", {**dict(zip(columns, row)), "map": particle_map}))
        return docs

    def _grains(self, analysis: RunAnalysis) -> list[tuple[str, dict]]:
        grid, grains = analysis.grid, analysis.grains
        table = grains.table.reset_index()
        members = [tuple(int(p) for p in particles) for particles in table.get("particles", [])]
        width = max(map(len, members), default=1)
        docs = self._descriptor("grains", self._keys("grains", grid_shape=grid["shape"], grid_dims=grid["dims"],
                                                     max_members=width))
        columns = list(GRAIN_DTYPES)
        for row, grain_map, particles in zip(table.reindex(columns=columns).itertuples(index=False), grains.maps,
                                             members):
            padded = np.full(width, -1, np.int64)
            padded[:len(particles)] = particles
            docs.append(self._event("grains", {**dict(zip(columns, row)), "particles": padded,
                                               "map": grain_map.reshape(grid["shape"])}))
        return docs

    def _stop(self, raw_stop: Mapping, problems, failure: str | None) -> dict:
        exit_status = raw_stop.get("exit_status", "success")
        reasons = [raw_stop["reason"]] if raw_stop.get("reason") else []
        if failure:
            exit_status = "fail"
            reasons.append(failure)
        if problems:
            reasons.append(f"skipped {len(problems)}: " + "; ".join(problems))
        stop = self._bundle.compose_stop(exit_status=exit_status, reason=" | ".join(reasons))
        if self._latencies:  # seconds from a raw event to its features, over the run
            stop["latency"] = {"median": float(np.median(self._latencies)), "worst": float(max(self._latencies))}
        return stop


def to_event_model(state: dict, item, *, provenance: Mapping, feature_columns=feature_columns()
                   ) -> tuple[dict, list[tuple[str, dict]]]:
    """Turn analysis records into documents (the ``to_event_model`` node, per-run state).

    ``item`` is a :class:`RunOpened` (opens an analysis run), a :class:`Placed` (features,
    tracks, frames and relabels events, as each reading comes) or a :class:`RunAnalysis`
    (points, maps, stop; closes the analysis run).
    """
    if isinstance(item, RunOpened):
        run = AnalysisRun(item.start, provenance, feature_columns=feature_columns, placement=item.placement)
        state[item.run_uid] = run
        return state, run.open(streams=("features", "frames", "tracks", "relabels"))
    run = state.get(item.run_uid)
    if run is None:
        logger.warning("run %s: %s for a run whose start was not seen; dropped", item.run_uid, type(item).__name__)
        return state, []
    if isinstance(item, Placed):
        return state, run.placed(item)
    del state[item.run_uid]
    return state, run.close(item)
