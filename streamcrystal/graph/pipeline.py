"""The peak-tracking pipeline: a declarative streamz graph of event-model documents.

:func:`peak_tracking` builds the graph from the segments of :mod:`.segments` (nothing
per-frame runs at construction); :class:`Pipeline` runs it as a bluesky callback,
``pipe(name, doc)``::

    documents ─ runs ─┬─ start ───────────────────────────────────────┬──────────────────┐
                      ├─ descriptor, resource/datum ─ cache           │                  │
                      ├─ event ─ fill ─┬─ frames ─ background ─┐      │                  │
                      ├─ stream_datum ─┘                       │      │                  │
                      ├─ problems ─────────────────────────── channel ─ process ─ locate ─┼─ frame_results
                      └─ stop ─────────────────────────────────┘                          │        │
                           collect (start + channel) ─ link ─ map ─ results               │        │
                                                          └────────── to_event_model ─────┴────────┘─ outputs

With a Dask client the same ``process`` and ``locate`` nodes run on the workers, between
``scatter`` and ``gather`` (:mod:`.dask`). A run's problem documents and its stop travel the
channel after its frames, so each reaches ``collect`` after the run's last frame.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas
import streamz
from streamz import Stream
from trackpy.linking.linking import Linker
from streamz.sinks import Sink

from .. import __version__
from ..documents.external import ExternalData
from ..documents.threads import DocumentThread
from ..schema import feature_columns
from ..science.frames import SATURATED, average_frames
from ..science.grains import DEFAULTS as GRAIN_DEFAULTS
from ..science.peaks import check_locate_arguments
from . import drawing, segments
from .dask import DaskFrames
from .results import ResultStore, RunResults
from .runs import LINKINGS
from .steps import debugging

if TYPE_CHECKING:
    from distributed import Client

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


class Pipeline:
    """A built streamz graph that turns raw documents into analysis documents.

    Call it with ``(name, doc)`` like any bluesky callback; subscribe callbacks to its output
    documents. Analysis never raises into the caller: a failure is logged (logger
    ``streamcrystal``) with the run uid and ends up in the analysis run's stop document.

    With a Dask client (``peak_tracking(..., client=...)``) the call returns once the
    document's frames are on the cluster, or queued to go there as one group with the small
    frames that come while ``max_in_flight`` items are in flight (a full group makes it wait:
    :class:`~streamcrystal.graph.dask.GroupFrames`); a stop returns once its run is linked
    and mapped; the graph, and the callbacks subscribed to it, run on the client's event-loop
    thread.

    With ``thread=True`` the call only queues the document (a few microseconds) and the
    graph runs on a thread of its own, in order; a full queue (``max_queued`` documents)
    makes the caller wait, logged once per run with the lag. :attr:`lag` tells how many raw
    events wait, :meth:`flush` waits for them. The numba kernels release the GIL, so the
    caller's thread (a RunEngine's) keeps running while a frame is processed.

    Attributes
    ----------
    nodes : dict of str -> streamz.Stream
        The graph's nodes by name (``pipe.nodes["locate"].sink(print)`` branches off).
    parameters : dict
        Every parameter the pipeline was built with.
    dask : streamcrystal.graph.dask.DaskFrames or None
        The Dask segment (client, ``max_in_flight``, ``in_flight``), if any.
    """

    def __init__(self, source: Stream, outputs: Stream, nodes: Mapping[str, Stream], parameters: Mapping,
                 result_store: ResultStore, dask: DaskFrames | None = None, *, thread: bool = False,
                 max_queued: int = 1000) -> None:
        self.source = source
        self.outputs = outputs
        self.nodes = dict(nodes)
        self.parameters = dict(parameters)
        self.dask = dask
        self._closed = False
        self._results = result_store
        self._subscriptions: dict[int, Stream] = {}
        self._waiting = 0  # raw events queued and not processed yet (thread=True)
        self._count = threading.Lock()
        self._lag_logged: set = set()
        self._given_run: str | None = None
        self._thread = DocumentThread(self._process, max_queued=max_queued, name="streamcrystal-pipeline",
                                      task="processing", on_full=self._full) if thread else None

    def __call__(self, name: str, doc: Mapping) -> None:
        """Process one document (bluesky callback signature). Never raises.

        With ``thread=True`` the document is queued for the pipeline's thread.
        """
        if self._closed:
            logger.error("this pipeline was closed; the %s document is ignored", name)
            return
        if self._thread is None:
            self._process(name, doc)
            return
        with self._count:
            self._waiting += _events_in(name, doc)
        if name == "start" and isinstance(doc, Mapping):
            self._given_run = doc.get("uid")  # the run a full queue is logged for
        self._thread(name, doc)

    @property
    def lag(self) -> int:
        """How many raw events wait to be processed (0 without ``thread=True``)."""
        return self._waiting

    def _full(self, name: str, doc: Mapping, queued: int) -> None:
        run = self._given_run
        if run not in self._lag_logged:
            self._lag_logged.add(run)
            logger.warning("run %s: the pipeline is %d raw events (%d documents) behind the RunEngine; the RunEngine "
                           "waits until there is room (nothing is dropped)", run, self._waiting, queued)

    def _process(self, name: str, doc: Mapping) -> None:
        try:
            with self.dask.entering() if self.dask else contextlib.nullcontext():
                self.source.emit((name, doc))
            if name == "stop" and self.dask is not None:  # a stop returns once its run is linked and mapped
                self.dask.flush()
        except Exception:  # analysis must never kill acquisition
            if debugging():
                raise
            run = doc.get("run_start") or doc.get("uid") if isinstance(doc, Mapping) else None
            logger.exception("run %s: the pipeline failed on a %s document", run, name)
        finally:
            if self._thread is not None:
                with self._count:
                    self._waiting -= _events_in(name, doc)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every document given so far is processed; False if ``timeout`` (s) ran out.

        A serial pipeline without a thread processes each document within its call: always True.
        """
        if self._thread is not None and not self._thread.flush(timeout):
            return False
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
        if self._thread is not None:
            self._thread.close()  # what was queued is processed first
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
        """Features, frames, tracks, maps and grains (pandas/xarray) of a run (default the newest).

        A run going on gives its results so far (``complete`` is False): the maps and grains
        of the tracks so far.
        """
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


def _events_in(name: str, doc) -> int:
    """How many raw events a document holds (an event page holds several)."""
    if name == "event":
        return 1
    if name == "event_page" and isinstance(doc, Mapping):
        return len(doc.get("seq_num", ()))
    return 0


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
    import trackpy  # imported when a pipeline is built: trackpy takes a while to import

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


def check_mask(mask):
    """A mask as the process step takes it: None, ``"saturated"`` or a 2-D boolean array."""
    if mask is None or (isinstance(mask, str) and mask == SATURATED):
        return mask
    if isinstance(mask, str):
        raise ValueError(f"mask {mask!r} is not a boolean image (True: masked) nor {SATURATED!r}")
    array = np.asarray(mask)
    if array.ndim != 2 or array.dtype != bool:
        raise ValueError(f"mask must be a 2-D boolean image of the detector (True: masked) or {SATURATED!r}, "
                         f"got an array of shape {array.shape} and dtype {array.dtype}")
    return array


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
    linking: str = "sample",
    mask=None,
    steps=None,
    neighbour_distance: float | None = None,
    position_tolerance=None,
    grain_options: Mapping[str, float] | None = None,
    thread: bool = False,
    max_queued: int = 1000,
    **more: Any,
) -> Pipeline:
    """Build the streaming peak-tracking pipeline (the "old" crystal-mapping algorithm).

    Per raw event of ``stream_name``: average its frames, subtract the background, clip
    negatives, ``trackpy.locate`` the Bragg peaks (emitted at once), place the event where the
    sample was (the motor positions it records) and link its peaks to the particles so far
    (emitted at once, ``tracks`` stream). At the run's stop: one crystal map per particle, on
    the scan's grid (or over its points, for a scan that is not a grid), and the grains that
    group them (``maps`` and ``grains`` streams). :meth:`Pipeline.results` answers during the
    run too.

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
        The largest detector distance (pixels) between two linked peaks: of neighbouring
        sample points (``linking="sample"``: a pixel or two suffice, 5 is the pipeline
        file's) or of frames in scan order (``linking="trackpy"``, trackpy.link's meaning).
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
        The peak finder of :func:`streamcrystal.science.peaks.locate`: ``"fast"`` (default; exactly
        trackpy's features, its numba kernels compiled or loaded from numba's cache here, at
        construction, not on the first event) or ``"trackpy"``.
    locate_kwargs, link_kwargs : dict, optional
        More keywords of ``trackpy.locate`` / ``trackpy.link`` (the latter with
        ``linking="trackpy"`` only). Scan-order linking sees a grain spanning several rows of
        the grid again after a gap of up to one row (two when the fast axis snakes): set
        ``memory``, or ``memory="grid"`` for the longest scan-order gap between neighbours of
        each run's planned grid, else one grain becomes one particle per row.
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
        :mod:`streamcrystal.graph.dask`; :func:`streamcrystal.make_client` makes a
        client from ``"local:N"`` or ``"tcp://host:port"``. A
        :class:`~streamcrystal.graph.dask.DaskFrames` (a client with its options) is accepted
        too.
    max_in_flight : int, optional
        With ``client``: the most frames (and stops) on the cluster at once, >= 3; a faster
        producer waits in ``pipe(name, doc)``. Default: twice the cluster's threads + 1.
    linking : {"sample", "trackpy"}
        How peaks become particles. ``"sample"`` (default): peaks seen at neighbouring sample
        points within ``search_range`` pixels are one particle, whatever the order the points
        were visited in (:mod:`streamcrystal.science.linking`). ``"trackpy"``: the seed's
        scan-order ``trackpy.link`` (with ``memory``; ``memory="grid"`` bridges the longest
        scan-order gap between neighbours of the planned grid).
    mask : numpy.ndarray of bool or "saturated", optional
        The detector's masked pixels (True), or ``"saturated"``: pixels at the saturation value
        of the frames' integer type, as Eiger/Pilatus-style detectors mark gaps and dead pixels.
        Masked pixels, and NaN pixels of float frames, count as no signal (zero).
    steps, neighbour_distance : optional
        How far apart neighbouring sample points are (motor units): one step per scan
        dimension, or one distance for all; default from the start document's plan, else
        learned from the first readings (:mod:`streamcrystal.science.placement`).
    position_tolerance : float, optional
        Readings closer than this (motor units) are one position (default: a quarter of the
        smallest step of the plan, or the motor's precision).
    grain_options : dict, optional
        Thresholds of the grain grouping (:func:`streamcrystal.science.grains.group_grains`:
        ``min_overlap``, ``min_correlation``, ``min_points``, ``search_range``, ``max_gap``);
        recorded in the provenance.
    thread : bool
        Process on a thread of the pipeline's own: ``pipe(name, doc)`` only queues the
        document, so a RunEngine subscribed to it is never held up (see :class:`Pipeline`).
    max_queued : int
        With ``thread``: the most documents waiting; beyond, the caller waits.
    **more
        Any keyword of ``trackpy.locate`` (``minmass=...``) or ``trackpy.link``
        (``memory=...``), sorted to the right one.

    Returns
    -------
    Pipeline

    Examples
    --------
    >>> pipe = peak_tracking("dexela_image", diameter=15, percentile=80, separation=100, search_range=5)
    >>> pipe.parameters["linking"], pipe.parameters["search_range"]
    ('sample', 5.0)
    >>> seed = peak_tracking("dexela_image", diameter=15, search_range=50, linking="trackpy", memory="grid")
    >>> seed.parameters["link_kwargs"]
    {'memory': 'grid'}
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
    if linking not in LINKINGS:
        raise ValueError(f"linking {linking!r} is not one of {list(LINKINGS)}")
    if linking == "sample" and link_options:
        raise ValueError(f"{sorted(link_options)} are keywords of trackpy's scan-order linking; linking='sample' "
                         "links neighbouring sample points and needs none: remove them, or pass linking='trackpy'")
    if linking == "trackpy":  # what trackpy refuses is refused now, not at the first run
        try:
            Linker(search_range, **{k: v for k, v in link_options.items() if k != "memory"})
        except Exception as err:
            raise ValueError(f"trackpy.link refuses {link_options}: {type(err).__name__}: {err}") from err
    mask = check_mask(mask)
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
        "linking": linking,
        "mask": mask if mask is None or isinstance(mask, str) else {"shape": list(mask.shape),
                                                                   "masked": int(mask.sum())},
        "steps": steps,
        "neighbour_distance": neighbour_distance,
        "position_tolerance": position_tolerance,
        "grain_options": {**GRAIN_DEFAULTS, **dict(grain_options or {})},
    }
    dask = None
    if client is not None:
        if isinstance(client, DaskFrames):
            if max_in_flight is not None:
                raise ValueError("pass max_in_flight to DaskFrames(...), not with it")
            dask = client
        else:
            dask = DaskFrames(client, max_in_flight=max_in_flight)
        parameters["dask"] = dask.describe()
    elif max_in_flight is not None:
        raise ValueError("max_in_flight bounds the frames on a Dask cluster: pass client= too")
    external = ExternalData(data_key, handler_registry=handler_registry, root_map=root_map)
    store = ResultStore(keep_results)
    provenance: dict = {}  # filled below, once the graph it describes exists
    columns = _feature_columns(parameters)
    source = segments.inputs(external, streams={stream_name, dark_stream} - {None})
    per_frame = segments.frame_work(
        source, stream_name=stream_name, dark_stream=dark_stream, subtrahend=background, dask=dask, mask=mask,
        locate_options={"diameter": diameter, "engine": engine, **locate_options})
    per_run = segments.run_work(
        source, per_frame.done, search_range=search_range, stream_name=stream_name, feature_columns=columns,
        link_kwargs=link_options, intensity=intensity, min_frames=min_frames, tolerance=position_tolerance,
        grain_options=parameters["grain_options"], store=store,
        plan_options={"linking": linking, "memory": link_options.get("memory", 0), "steps": steps,
                      "neighbour_distance": neighbour_distance})
    results = per_run.map.sink(store.add, stream_name="results")
    out = segments.outputs(per_run.placed, per_run.map, provenance=provenance, feature_columns=columns)
    nodes = {**segments.named_nodes(source, per_frame, per_run), "results": results, **segments.named_nodes(out)}
    pipe = Pipeline(source.documents, out.outputs, nodes, parameters, store, dask, thread=thread, max_queued=max_queued)
    provenance.update(pipe.provenance)
    return pipe
