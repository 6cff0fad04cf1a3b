"""The peak-tracking pipeline: a declarative streamz graph of event-model documents.

:func:`peak_tracking` builds the graph (nothing per-frame runs at construction);
:class:`Pipeline` runs it as a bluesky callback, ``pipe(name, doc)``.

The graph::

    documents ─ runs ─┬─ start ──────────────────────────────┬──────────────┐
                      ├─ descriptor ┐                        │              │
                      ├─ external ──┴─ cache_external        │              │
                      │    └─ stream_datum ─ read_stream ─┐  │              │
                      ├─ event ─ select ─ fill ───────────┴─ background     │
                      │      ─ average ─ subtract ─ clip ─ locate ─┬─ collect ─ link ─ map ─ results
                      ├─ problems ─────────────────────────────────┘      │     │
                      └─ stop ───────────────────────────────────────────(─)    to_event_model ─ outputs

With a Dask client, average ─ subtract ─ clip ─ locate is one task per frame on the
workers, between ``scatter`` and ``gather`` (``parallel.py``); the stops travel that
channel too, so each reaches ``collect`` after its run's last frame.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from streamz import Stream
from streamz.sinks import Sink

from . import __version__
from .analysis_run import to_event_model
from .documents import EXTERNAL_DOCUMENTS, ExternalData, RunTable, route_document
from . import drawing
from .frames import average_frames
from .peaks import check_locate_arguments
from .results import ResultStore, RunResults
from .schema import feature_columns
from .steps import (
    apply_background,
    average_step,
    clip_step,
    collect_run,
    link_step,
    locate_step,
    map_step,
    subtract_step,
)

if TYPE_CHECKING:
    from distributed import Client

    from .parallel import DaskFrames

__all__ = ["Pipeline", "peak_tracking", "LOCATE_KEYWORDS", "LINK_KEYWORDS"]

logger = logging.getLogger("streamcrystal")

#: Keywords of ``trackpy.locate`` a pipeline accepts (``raw_image``/``diameter`` aside).
LOCATE_KEYWORDS = frozenset(
    {"minmass", "maxsize", "separation", "noise_size", "smoothing_size", "threshold", "invert",
     "percentile", "topn", "preprocess", "max_iterations", "filter_before", "filter_after", "characterize"}
)
#: Keywords of ``trackpy.link`` a pipeline accepts (``search_range`` aside).
LINK_KEYWORDS = frozenset(
    {"memory", "predictor", "adaptive_stop", "adaptive_step", "neighbor_strategy", "link_strategy", "dist_func", "to_eucl"}
)


def _named(*names: str) -> Callable[[Any], bool]:
    """A predicate: is this routed document one of ``names``, and usable?"""
    wanted = frozenset(names)
    return lambda routed: routed.name in wanted and routed.problem is None


def _has_problem(routed) -> bool:
    return routed.problem is not None


class Pipeline:
    """A built streamz graph that turns raw documents into analysis documents.

    Call it with ``(name, doc)`` like any bluesky callback; subscribe callbacks to its output
    documents. Analysis never raises into the caller: a failure is logged (logger
    ``streamcrystal``) with the run uid and ends up in the analysis run's stop document.

    With a Dask client (``peak_tracking(..., client=...)``) the call returns once the
    document's frames are on the cluster (it waits while ``max_in_flight`` items are in
    flight), and a stop returns once its run is linked and mapped; the graph, and the
    callbacks subscribed to it, run on the client's event-loop thread.

    Attributes
    ----------
    nodes : dict of str -> streamz.Stream
        The graph's nodes by name (``pipe.nodes["locate"].sink(print)`` branches off).
    parameters : dict
        Every parameter the pipeline was built with.
    dask : streamcrystal.parallel.DaskFrames or None
        The Dask segment (client, ``max_in_flight``, ``in_flight``), if any.
    """

    def __init__(self, source: Stream, outputs: Stream, nodes: Mapping[str, Stream], parameters: Mapping,
                 result_store: ResultStore, dask: DaskFrames | None = None) -> None:
        self.source = source
        self.outputs = outputs
        self.nodes = dict(nodes)
        self.parameters = dict(parameters)
        self.dask = dask
        self._closed = False
        self._results = result_store
        self._subscriptions: dict[int, Stream] = {}

    def __call__(self, name: str, doc: Mapping) -> None:
        """Process one document (bluesky callback signature). Never raises."""
        if self._closed:
            logger.error("this pipeline was closed; the %s document is ignored", name)
            return
        try:
            with self.dask.entering() if self.dask else contextlib.nullcontext():
                self.source.emit((name, doc))
            if name == "stop":
                self.flush()
        except Exception:  # analysis must never kill acquisition
            run = doc.get("run_start") or doc.get("uid") if isinstance(doc, Mapping) else None
            logger.exception("run %s: the pipeline failed on a %s document", run, name)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every document given so far is processed; False if ``timeout`` (s) ran out.

        A serial pipeline processes each document within its call: always True.
        """
        return self.dask.flush(timeout) if self.dask else True

    def close(self) -> None:
        """Let the graph go: later documents are refused (logged), and its memory can be freed.

        streamz keeps every sink in a module-level set, and with it the whole graph it hangs
        from: ``close`` disconnects the sinks (the subscriptions, ``results``, branches such as
        ``pipe.nodes["locate"].sink_to_list()``). With Dask it also ends the buffer's coroutine
        on the client's event loop and frees the background held by the workers; frames
        still in flight are given up (:meth:`flush` first). :meth:`results` still answers.
        """
        if self._closed:
            return
        self._closed = True
        if self.dask is not None:
            self.dask.close()
        for node in _connected(self.source):
            if isinstance(node, Sink):
                node.destroy()
        self._subscriptions.clear()

    def subscribe(self, callback: Callable[[str, dict], Any]) -> int:
        """Send each output document to ``callback(name, doc)``; returns a token."""
        sink = self.outputs.sink(lambda item: callback(*item))
        token = id(sink)
        self._subscriptions[token] = sink
        return token

    def unsubscribe(self, token: int) -> None:
        """Stop sending documents to the callback of ``token``."""
        sink = self._subscriptions.pop(token)
        sink.destroy()

    def results(self, raw_uid: str | None = None) -> RunResults:
        """Features, frames, tracks and maps (pandas/xarray) of a completed run (default the last)."""
        return self._results.get(raw_uid)

    def edges(self) -> list[tuple[str, str]]:
        """The graph's edges as (upstream name, downstream name), in construction order."""
        names = {id(node): name for name, node in self.nodes.items()}
        return [
            (name, names[id(down)])
            for name, node in self.nodes.items()
            for down in node.downstreams
            if id(down) in names
        ]

    @property
    def provenance(self) -> dict:
        """What an analysis start document records under ``pipeline``."""
        return _provenance(self)

    def visualize(self, filename: str | None = None, *, engine: str = "auto", **kwargs):
        """Draw the graph; ``filename`` ending in .png/.svg/.pdf writes a file.

        With graphviz's program ``dot`` installed the graph is laid out by graphviz (streamz's
        drawing); without it, by networkx and matplotlib (:mod:`streamcrystal.drawing`):
        the same nodes and edges, the node names readable. ``engine`` forces one
        (``"graphviz"`` or ``"matplotlib"``). Returns an IPython image (shown in a notebook
        cell) when IPython is available.
        """
        return drawing.visualize(self.source, filename, engine=engine, **kwargs)

    def __repr__(self) -> str:
        return f"<Pipeline {self.parameters.get('data_key')!r}: {len(self.nodes)} nodes>"


def _connected(source: Stream) -> list[Stream]:
    """Every node connected to ``source``, up or down."""
    seen: dict[int, Stream] = {}
    todo = [source]
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        todo.extend(node.downstreams)
        todo.extend(node.upstreams)
    return list(seen.values())


def _versions() -> dict[str, str]:
    import pandas
    import streamz
    import trackpy

    return {
        "streamcrystal": __version__,
        "trackpy": trackpy.__version__,
        "streamz": streamz.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
    }


def _provenance(pipe: Pipeline) -> dict:
    return {
        "nodes": list(pipe.nodes),
        "edges": [list(edge) for edge in pipe.edges()],
        "parameters": pipe.parameters,
        "versions": _versions(),
    }


def _describe_background(subtrahend: np.ndarray | None) -> dict | None:
    import hashlib

    if subtrahend is None:
        return None
    return {
        "shape": list(subtrahend.shape),
        "mean": float(subtrahend.mean()),
        "sha256": hashlib.sha256(np.ascontiguousarray(subtrahend).tobytes()).hexdigest(),
    }


def _feature_columns(p: Mapping) -> tuple[str, ...]:
    """The feature columns of a pipeline's parameters (those ``locate_step`` gives)."""
    return feature_columns(p.get("diameter", 1), characterize=p.get("locate_kwargs", {}).get("characterize", True))


def _split_keywords(more: Mapping[str, Any]) -> tuple[dict, dict]:
    locate, link = {}, {}
    for key, value in more.items():
        if key in LOCATE_KEYWORDS:
            locate[key] = value
        elif key in LINK_KEYWORDS:
            link[key] = value
        else:
            raise TypeError(
                f"peak_tracking() got an unexpected keyword {key!r}; valid keywords of trackpy.locate: "
                f"{sorted(LOCATE_KEYWORDS)}, of trackpy.link: {sorted(LINK_KEYWORDS)}"
            )
    return locate, link


def peak_tracking(
    data_key: str,
    *,
    subtrahend: np.ndarray | None = None,
    diameter: int,
    percentile: float = 64,
    separation: float | None = None,
    search_range: float,
    intensity: str = "mass",
    min_frames: int = 1,
    stream_name: str = "primary",
    dark_stream: str | None = "dark",
    engine: str = "fast",
    locate_kwargs: Mapping[str, Any] | None = None,
    link_kwargs: Mapping[str, Any] | None = None,
    handler_registry: Mapping | None = None,
    root_map: Mapping[str, str] | None = None,
    keep_results: int = 8,
    client: Client | DaskFrames | None = None,
    max_in_flight: int | None = None,
    **more: Any,
) -> Pipeline:
    """Build the streaming peak-tracking pipeline (the "old" crystal-mapping algorithm).

    Per raw event of ``stream_name``: average its frames, subtract the background, clip
    negatives, ``trackpy.locate`` the Bragg peaks (emitted at once). At the run's stop:
    ``trackpy.link`` the peaks into particles and make one crystal map per particle.

    Parameters
    ----------
    data_key : str
        The data key of the detector frames, e.g. ``"dexela_image"``.
    subtrahend : array_like, optional
        Background image (2-D, or frames that are averaged). If not given, the mean of the
        run's ``dark_stream`` events received so far is used; if there are none, nothing.
    diameter : int or (int, int)
        trackpy's feature diameter (odd, pixels), or one per axis (rows, columns): the
        features then have trackpy's ``size_y, size_x, ep_y, ep_x`` columns.
    percentile, separation
        trackpy.locate's keywords (``separation`` default: ``diameter + 1``).
    search_range : float
        trackpy.link's largest displacement (pixels) between linked frames.
    intensity : str
        The feature column filled into the crystal maps (``"mass"``, ``"signal"``, ...).
    min_frames : int
        A particle gets a map only if it is seen on at least this many grid points. With
        noisy data most particles are one-frame noise maxima: raise it (and ``minmass``).
    stream_name : str
        The stream processed; other streams (``baseline``, monitors) never reach the peak
        finder.
    dark_stream : str or None
        The stream whose mean is the background when no ``subtrahend`` is given.
    engine : str
        The peak finder of :func:`streamcrystal.peaks.locate`: ``"fast"`` (default; exactly
        trackpy's features, its numba kernels compiled or loaded from numba's cache here, at
        construction, not on the first event) or ``"trackpy"``.
    locate_kwargs, link_kwargs : dict, optional
        More keywords of ``trackpy.locate`` / ``trackpy.link``. Linking follows scan
        order, so a grain spanning several rows of the grid reappears after a gap of up to
        one row (two when the fast axis snakes): set ``memory``, or ``memory="grid"`` for
        the gap of each run's own grid (:func:`~streamcrystal.maps.scan_memory`: points
        per row - 1, or 2 x points per row - 2 when snaking), else one grain becomes one
        particle per row.
    handler_registry, root_map
        For Resource/Datum external data (default: area-detector HDF5).
    keep_results : int
        How many completed runs :meth:`Pipeline.results` keeps in memory.
    client : distributed.Client, optional
        Run the per-frame work (average, subtract, clip, locate) on this Dask cluster, one
        task per frame, between a ``scatter`` and a ``gather`` node; only the features come
        back. The results are those of the serial pipeline (same features in the same
        order, same links and maps). Frames from StreamResource/StreamDatum HDF5 files are
        read by the workers (only the file, dataset and index are sent). A frame that fails
        is logged and skipped; a frame lost with a worker that died is submitted again. See
        :mod:`streamcrystal.parallel`; :func:`streamcrystal.parallel.make_client` makes a
        client from ``"local:N"`` or ``"tcp://host:port"``. A
        :class:`~streamcrystal.parallel.DaskFrames` (a client with its options) is accepted
        too.
    max_in_flight : int, optional
        With ``client``: the most frames (and stops) on the cluster at once, >= 3; a faster
        producer waits in ``pipe(name, doc)``. Default: twice the cluster's threads + 1.
    **more
        Any keyword of ``trackpy.locate`` (``minmass=...``) or ``trackpy.link``
        (``memory=...``), sorted to the right one.

    Returns
    -------
    Pipeline

    Examples
    --------
    >>> pipe = peak_tracking("dexela_image", diameter=15, percentile=80, separation=100,
    ...                      search_range=50, memory=12)
    >>> pipe.parameters["link_kwargs"]
    {'memory': 12}
    >>> docs = []
    >>> token = pipe.subscribe(lambda name, doc: docs.append(name))
    >>> "locate" in pipe.nodes
    True
    """
    sizes = np.atleast_1d(diameter) if np.ndim(diameter) <= 1 else np.array([0.5])
    if not (sizes.size in (1, 2) and all(isinstance(d, (int, np.integer)) and d >= 1 and d % 2 == 1 for d in sizes.tolist())):
        raise ValueError(f"diameter must be an odd positive integer, or one per axis (rows, columns) "
                         f"(trackpy's convention), got {diameter!r}; round up")
    diameter = int(sizes[0]) if np.ndim(diameter) == 0 else tuple(int(d) for d in sizes)
    if search_range is None or search_range <= 0:
        raise ValueError(f"search_range must be a positive number of pixels, got {search_range!r}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be at least 1, got {min_frames!r}")
    extra_locate, extra_link = _split_keywords(more)
    locate_options = {"percentile": percentile, "separation": separation, **dict(locate_kwargs or {}), **extra_locate}
    if locate_options["separation"] is None:
        del locate_options["separation"]
    link_options = {**dict(link_kwargs or {}), **extra_link}
    memory = link_options.get("memory", 0)
    if memory != "grid" and not (isinstance(memory, (int, np.integer)) and memory >= 0):
        raise ValueError(f"memory must be a number of frames >= 0 or 'grid' (the gap of each run's grid), got {memory!r}")
    for key in set(locate_options) - LOCATE_KEYWORDS:
        raise TypeError(f"locate_kwargs: {key!r} is not a keyword of trackpy.locate; valid: {sorted(LOCATE_KEYWORDS)}")
    for key in set(link_options) - LINK_KEYWORDS:
        raise TypeError(f"link_kwargs: {key!r} is not a keyword of trackpy.link; valid: {sorted(LINK_KEYWORDS)}")
    check_locate_arguments(diameter, **locate_options)  # refused now, not event by event
    background = None if subtrahend is None else average_frames(subtrahend)

    parameters = {
        "data_key": data_key,
        "diameter": diameter if isinstance(diameter, int) else list(diameter),
        "locate_kwargs": locate_options,
        "search_range": float(search_range),
        "link_kwargs": link_options,
        "intensity": intensity,
        "min_frames": int(min_frames),
        "stream_name": stream_name,
        "dark_stream": dark_stream,
        "engine": engine,
        "subtrahend": _describe_background(background),
    }
    dask = None
    if client is not None:
        from .parallel import DaskFrames

        if isinstance(client, DaskFrames):
            if max_in_flight is not None:
                raise ValueError("pass max_in_flight to DaskFrames(...), not with it")
            dask = client
        else:
            dask = DaskFrames(client, max_in_flight=max_in_flight)
        parameters["dask"] = dask.describe()
    elif max_in_flight is not None:
        raise ValueError("max_in_flight bounds the frames on a Dask cluster: pass client= too")
    external = ExternalData(data_key, handler_registry=handler_registry, root_map=root_map,
                            read_stream_data=dask is None)
    store = ResultStore(keep_results)
    provenance: dict = {}  # filled below, once the graph it describes exists
    nodes = _build_graph(parameters, external, background, store, provenance, dask)
    pipe = Pipeline(nodes["documents"], nodes["outputs"], nodes, parameters, store, dask)
    provenance.update(pipe.provenance)
    return pipe


def _build_graph(
    p: Mapping, external: ExternalData, background, store: ResultStore, provenance: Mapping,
    dask: DaskFrames | None = None,
) -> dict[str, Stream]:
    """Wire the nodes; returns them by name. Nothing per-frame runs here."""
    n: dict[str, Stream] = {}
    input_nodes(n, external, streams={p["stream_name"], p["dark_stream"]} - {None})
    background_node(n, stream_name=p["stream_name"], dark_stream=p["dark_stream"], subtrahend=background)
    if dask is None:
        frame_nodes(n)
        locate_node(n, diameter=p["diameter"], engine=p["engine"], locate_kwargs=p["locate_kwargs"])
        run_nodes(n, p)
    else:  # per-frame work on the cluster; stops and problems come out after their frames
        dask.build(n, diameter=p["diameter"], engine=p["engine"], locate_kwargs=p["locate_kwargs"], subtrahend=background)
        run_nodes(n, p, after_frames=("in_order",))
    n["results"] = n["map"].sink(store.add, stream_name="results")
    # out: one analysis run per raw run
    n["to_event_model"] = (
        n["start"].union(n["locate"], n["map"], stream_name="start+features+maps")
        .accumulate(to_event_model, start={}, returns_state=True, provenance=provenance,
                    feature_columns=_feature_columns(p), stream_name="to_event_model")
    )
    n["outputs"] = n["to_event_model"].flatten(stream_name="outputs")
    return n


# The segments of the graph, shared with the seed's callbacks (``callbacks.py``).

def input_nodes(n: dict[str, Stream], external: ExternalData, *, streams: set[str]) -> None:
    """documents -> runs -> split by type; frames of ``streams`` as tasks (node ``frames``)."""
    n["documents"] = Stream(stream_name="documents")
    n["runs"] = n["documents"].accumulate(route_document, start=RunTable(), returns_state=True, stream_name="runs")
    n["split"] = routed = n["runs"].flatten(stream_name="split")
    n["start"] = routed.filter(_named("start"), stream_name="start")
    n["descriptor"] = routed.filter(_named("descriptor"), stream_name="descriptor")
    n["external"] = routed.filter(_named(*EXTERNAL_DOCUMENTS), stream_name="resource/datum")
    n["event"] = routed.filter(_named("event"), stream_name="event")
    n["stop"] = routed.filter(_named("stop"), stream_name="stop")
    n["problems"] = routed.filter(_has_problem, stream_name="problems")
    n["cache_external"] = n["descriptor"].union(n["external"], stream_name="descriptors+resources")
    n["cache_external"].sink(external.register, stream_name="cache")
    n["stop"].sink(lambda routed: external.forget_run(routed.run_uid), stream_name="forget")
    # frames of the wanted streams: inline, filled from Resource/Datum, or read for StreamDatum
    n["select"] = n["event"].filter(lambda routed: routed.stream in streams, stream_name=f"select {sorted(streams)}")
    n["fill"] = (
        n["select"].map(external.event_task, stream_name="fill")
        .filter(lambda task: task is not None, stream_name="inline or filled")
    )
    n["read_stream"] = (
        n["external"].filter(lambda routed: routed.name == "stream_datum" and routed.stream in streams, stream_name="stream_datum")
        .map(external.stream_datum_tasks, stream_name="read_stream")
        .flatten(stream_name="frames of datum")
    )
    n["frames"] = n["fill"].union(n["read_stream"], stream_name="frames")


def background_node(n: dict[str, Stream], *, stream_name: str, dark_stream: str | None, subtrahend) -> None:
    """frames (+ stops, to forget a run's dark mean) -> tasks of ``stream_name`` with their background."""
    step = functools.partial(apply_background, stream=stream_name, dark_stream=dark_stream, subtrahend=subtrahend)
    n["background"] = (
        n["frames"].union(n["stop"], stream_name="frames+stops")
        .accumulate(step, start={}, returns_state=True, stream_name="background")
        .flatten(stream_name="tasks")
    )


def frame_nodes(n: dict[str, Stream]) -> None:
    """tasks -> average -> subtract -> clip: the processed image.

    The average step's one-pass kernel for integer frames is warmed up here.
    """
    from .fastlocate import warmup

    warmup(dtypes=())
    n["average"] = n["background"].map(average_step, stream_name="average")
    n["subtract"] = n["average"].map(subtract_step, stream_name="subtract")
    n["clip"] = n["subtract"].map(clip_step, stream_name="clip")


def locate_node(n: dict[str, Stream], *, diameter: int, engine: str, locate_kwargs: Mapping) -> None:
    """clip -> locate: the features of each frame (a FrameResult; the image is let go).

    The fast engine is warmed up here, so the first event does not wait for numba.
    """
    if engine == "fast":
        from .fastlocate import warmup

        warmup()
    n["locate"] = n["clip"].map(locate_step, diameter=diameter, engine=engine, **locate_kwargs, stream_name="locate")


def run_nodes(n: dict[str, Stream], p: Mapping, *, after_frames: tuple[str, ...] = ("problems", "stop")) -> None:
    """start + per-frame results + problems + stop -> collect -> link -> map, per run.

    ``after_frames`` names the nodes of the problems and stops (the Dask segment's
    ``in_order`` brings them after the frames in flight).
    """
    n["collect"] = (
        n["start"].union(n["locate"], *(n[name] for name in after_frames), stream_name="start+results+stop")
        .accumulate(collect_run, start={}, returns_state=True, stream_name="collect")
        .flatten(stream_name="runs done")
    )
    n["link"] = n["collect"].map(
        link_step, search_range=p["search_range"], stream=p["stream_name"], columns=_feature_columns(p),
        **p["link_kwargs"], stream_name="link"
    )
    n["map"] = n["link"].map(map_step, intensity=p["intensity"], min_frames=p["min_frames"], stream_name="map")
