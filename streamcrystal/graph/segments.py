"""The segments of a pipeline graph: each builds a few named streamz nodes and returns them.

A segment is a function that takes the nodes it hangs from and returns a small frozen
object of the nodes it made, by name (``inputs(...).stop``, ``frame_work(...).locate``).
:func:`~streamcrystal.graph.pipeline.peak_tracking` and the seed's callbacks
(:mod:`.callbacks`) compose the same segments::

    inputs       documents ─ runs ─┬─ start, descriptor, external, event, stop, problems
                                   └─ frames (inline, filled from Resource/Datum, or StreamDatum)
    frame_work   frames ─ background ─ channel (+ problems, stops) ─ process ─ locate ─ frame_results
                 with Dask: channel ─ group ─ in_flight ─ scatter ─ locate (one task: process, locate) ─ buffer ─ gather
    run_work     start + the channel's output ─ runs ─┬─ placed (each reading placed and linked, live)
                                                      └─ link ─ map (at the stop)
    outputs      placed + map ─ to_event_model ─ outputs

Nothing runs at construction: the nodes only wire the functions of :mod:`.steps`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from streamz import Stream

from ..documents.analysis_run import to_event_model
from ..documents.external import ExternalData
from ..documents.routing import EXTERNAL_DOCUMENTS, DocumentRouting
from ..records import FrameResult, FrameTask, Placed, RunFeatures, RunOpened
from ..science import frames as science_frames
from ..science import fastlocate
from .results import ResultStore
from .runs import run_step
from .steps import apply_background, link_step, locate_step, map_step, process_step

if TYPE_CHECKING:
    from .dask import DaskFrames

__all__ = ["Inputs", "FrameWork", "RunWork", "Outputs", "inputs", "frame_work", "run_work", "outputs", "named_nodes"]


class _Segment:
    """Named nodes; iterating gives ``(name, node)`` pairs."""

    def __iter__(self) -> Iterator[tuple[str, Stream]]:
        for field in fields(self):
            node = getattr(self, field.name)
            if node is not None:
                yield field.name, node


def named_nodes(*segments: _Segment) -> dict[str, Stream]:
    """The nodes of ``segments`` by name, in the order they were built."""
    return {name: node for segment in segments for name, node in segment}


def _first(*nodes: Stream | None) -> Stream:
    return next(node for node in nodes if node is not None)


def _named(*names: str) -> Callable:
    """A predicate: is this routed document one of ``names``, and usable?"""
    wanted = frozenset(names)
    return lambda routed: routed.name in wanted and routed.problem is None


@dataclass(frozen=True)
class Inputs(_Segment):
    """Raw documents in, attributed to their run and stream; frames of the wanted streams as tasks."""

    documents: Stream
    runs: Stream
    start: Stream
    descriptor: Stream
    external: Stream
    event: Stream
    stop: Stream
    problems: Stream
    frames: Stream


def inputs(external: ExternalData, *, streams: set[str]) -> Inputs:
    """documents -> runs -> by type; the frames of ``streams``, inline, filled or read, as tasks."""
    documents = Stream(stream_name="documents")
    runs = documents.map(DocumentRouting().route, stream_name="runs").flatten(stream_name="routed")
    start = runs.filter(_named("start"), stream_name="start")
    descriptor = runs.filter(_named("descriptor"), stream_name="descriptor")
    external_docs = runs.filter(_named(*EXTERNAL_DOCUMENTS), stream_name="resource/datum")
    event = runs.filter(_named("event"), stream_name="event")
    stop = runs.filter(_named("stop"), stream_name="stop")
    problems = runs.filter(lambda routed: routed.problem is not None, stream_name="problems")
    descriptor.union(external_docs, stream_name="descriptors+resources").sink(external.register, stream_name="cache")
    # a stopped run's leftovers (events whose StreamDatum never came, ...) come before its stop
    left = stop.map(external.stop_run, stream_name="leftovers").flatten(stream_name="left")
    filled = (
        event.filter(lambda routed: routed.stream in streams, stream_name=f"select {sorted(streams)}")
        .map(external.event_task, stream_name="fill")
        .flatten(stream_name="inline or filled")
    )
    read = (
        external_docs.filter(lambda routed: routed.name == "stream_datum" and routed.stream in streams,
                             stream_name="stream_datum")
        .map(external.stream_datum_tasks, stream_name="read_stream")
        .flatten(stream_name="frames of datum")
    )
    frames = filled.union(read, left, stream_name="frames")
    return Inputs(documents, runs, start, descriptor, external_docs, event, stop, problems, frames)


@dataclass(frozen=True)
class FrameWork(_Segment):
    """The per-frame work: background, then ``process`` and ``locate`` for each frame task.

    ``channel`` carries a run's tasks, then its problem documents and its stop; ``done``
    gives them back in the same order (after ``gather`` on Dask), frame tasks turned into
    :class:`~streamcrystal.records.FrameResult`; ``frame_results`` only the results.
    """

    background: Stream
    channel: Stream
    group: Stream | None
    in_flight: Stream | None
    scatter: Stream | None
    process: Stream | None
    locate: Stream | None
    buffer: Stream | None
    gather: Stream | None
    frame_results: Stream

    @property
    def done(self) -> Stream:
        return _first(self.gather, self.locate, self.process)


def frame_work(source: Inputs, *, stream_name: str, dark_stream: str | None, subtrahend,
               locate_options: Mapping | None, dask: DaskFrames | None = None, mask=None) -> FrameWork:
    """frames -> background -> channel -> process -> locate, on this process or on a Dask cluster.

    The kernels are compiled (or loaded from numba's cache) here, so the first frame does
    not wait for them. With ``dask``, the ``locate`` node submits one task per frame to its
    workers, which runs both steps, between ``scatter`` and ``gather`` (there is no ``process``
    node: :meth:`~streamcrystal.graph.dask.DaskFrames.around`).
    Without ``locate_options`` there is no ``locate`` node (the seed's ``ImageProcessor``):
    ``frame_results`` are the processed tasks.
    """
    step = functools.partial(apply_background, stream=stream_name, dark_stream=dark_stream, subtrahend=subtrahend)
    background = (
        source.frames.union(source.stop, stream_name="frames+stops")
        .accumulate(step, start={}, returns_state=True, stream_name="background")
        .flatten(stream_name="tasks")
    )
    channel = background.union(source.problems, source.stop, stream_name="channel")
    science_frames.warmup()
    if locate_options is not None and locate_options.get("engine", "fast") == "fast":
        fastlocate.warmup()
    if dask is None:
        process = channel.map(process_step, mask=mask, stream_name="process")
        locate = None if locate_options is None else process.map(locate_step, **locate_options, stream_name="locate")
        group = in_flight = scatter = buffer = gather = None
    else:
        process = None
        group, in_flight, scatter, locate, buffer, gather = dask.around(channel, locate_options, subtrahend, mask)
    done = _first(gather, locate, process)
    frame_results = done.filter(lambda item: isinstance(item, (FrameResult, FrameTask)), stream_name="frame_results")
    return FrameWork(background, channel, group, in_flight, scatter, process, locate, buffer, gather, frame_results)


@dataclass(frozen=True)
class RunWork(_Segment):
    """Per run: each reading placed on the sample and linked as it comes (``runs``); at the
    stop, the run's tables (``link``) and maps (``map``)."""

    runs: Stream
    placed: Stream
    link: Stream
    map: Stream


def run_work(source: Inputs, done: Stream, *, search_range: float, stream_name: str, feature_columns,
             link_kwargs: Mapping, plan_options: Mapping, tolerance=None, intensity: str = "mass",
             min_frames: int = 1, grain_options: Mapping | None = None, store: ResultStore | None = None) -> RunWork:
    """start + descriptors + the channel's output (results, problems, stop) -> runs -> (placed
    readings; link -> map)."""
    runs = (
        source.start.union(source.descriptor, done, stream_name="start+descriptors+channel")
        .accumulate(run_step, start={}, returns_state=True, processed_stream=stream_name, plan_options=plan_options,
                    search_range=search_range, link_kwargs=link_kwargs, tolerance=tolerance, store=store,
                    map_options={"intensity": intensity, "min_frames": min_frames, "grain_options": grain_options,
                                 "columns": feature_columns}, stream_name="runs")
        .flatten(stream_name="run records")
    )
    placed = runs.filter(lambda item: isinstance(item, (RunOpened, Placed)), stream_name="placed")
    link = (
        runs.filter(lambda item: isinstance(item, RunFeatures), stream_name="runs done")
        .map(link_step, stream=stream_name, columns=feature_columns, stream_name="link")
    )
    mapped = link.map(map_step, intensity=intensity, min_frames=min_frames, grain_options=grain_options,
                      stream_name="map")
    return RunWork(runs, placed, link, mapped)


@dataclass(frozen=True)
class Outputs(_Segment):
    """The analysis run's documents: one analysis run per raw run."""

    to_event_model: Stream
    outputs: Stream


def outputs(placed: Stream, mapped: Stream, *, provenance: Mapping, feature_columns) -> Outputs:
    """run openings + placed readings + maps -> to_event_model -> outputs."""
    composed = (
        placed.union(mapped, stream_name="readings+maps")
        .accumulate(to_event_model, start={}, returns_state=True, provenance=provenance,
                    feature_columns=feature_columns, stream_name="to_event_model")
    )
    return Outputs(composed, composed.flatten(stream_name="outputs"))
