"""The seed's callbacks, same names: ``ImageProcessor``, ``PeakTracker``, ``TrackLinker``.

Each is a small streamz graph built from the same segments and steps as
:func:`~streamcrystal.pipeline.peak_tracking`, so a chain of them gives the same features and
links as the pipeline::

    ip = ImageProcessor("dexela_image", subtrahend=image)
    pt = PeakTracker("dexela_image", diameter=15, percentile=80, separation=100)
    tl = TrackLinker(db=DB2, search_range=50)
    tl.subscribe(DB2.insert)
    pt.subscribe(tl)
    pt.subscribe(DB2.insert)
    ip.subscribe(pt)

Each callback's output run has its events in the default stream, ``primary``, as bluesky's
``LiveDispatcher`` wrote them in the original: ``db[-1].table()`` gives the processed images,
the peaks (one row per peak) or the linked peaks (with ``particle``). A ``PeakTracker`` run
also has a ``frames`` stream (one row per image: peaks found, skip reason).

Between callbacks the raw event's ``seq_num`` travels as the data key ``frame``, so frames
keep the scan's numbering (the original numbered them in output order). The tracker keeps
the features of a run in memory, so linking does not depend on the order in which the
callbacks were subscribed to the database (the original read them back from ``db``).
"""
from __future__ import annotations

import logging
import time as ttime
from collections.abc import Callable, Mapping
from typing import Any

import event_model
import numpy as np
import pandas as pd
from streamz import Stream

from ..documents.analysis_run import AnalysisRun, derived_run_metadata
from ..documents.external import ExternalData
from ..records import FrameResult, FrameTask, Routed, RunAnalysis
from ..schema import feature_columns
from ..science.frames import average_frames
from ..science.peaks import check_locate_arguments
from ..science.tracks import concat_features, link_features
from . import segments
from .pipeline import LINK_KEYWORDS, LOCATE_KEYWORDS, check_mask
from .steps import debugging

__all__ = ["ImageProcessor", "PeakTracker", "TrackLinker"]

logger = logging.getLogger("streamcrystal")


class _GraphCallback:
    """A bluesky callback around a streamz graph: ``cb(name, doc)`` in, ``subscribe`` out."""

    def __init__(self, nodes: dict[str, Stream], parameters: Mapping) -> None:
        self.nodes = nodes
        self.parameters = dict(parameters)

    def __call__(self, name: str, doc: Mapping) -> None:
        try:
            self.nodes["documents"].emit((name, doc))
        except Exception:  # a callback must never kill acquisition
            if debugging():
                raise
            logger.exception("%s failed on a %s document", type(self).__name__, name)

    def subscribe(self, callback: Callable[[str, dict], Any]) -> None:
        """Send each output document to ``callback(name, doc)``."""
        self.nodes["outputs"].sink(lambda item: callback(*item))

    def _provenance(self) -> dict:
        return {"callback": type(self).__name__, "parameters": self.parameters}


class ImageProcessor(_GraphCallback):
    """Average the frames of each event, subtract ``subtrahend``, clip negatives to zero.

    Emits a run whose ``primary`` events hold the processed image under ``data_key`` and
    the raw ``seq_num`` under ``frame``.

    Parameters
    ----------
    data_key : str
        The key of the detector frames.
    subtrahend : array_like, optional
        The background (2-D, or frames averaged); default: the run's ``dark`` stream mean.
    stream_name : str
        The raw stream to process.
    mask : numpy.ndarray of bool, shape (rows, cols), or "saturated", optional
        The detector's masked pixels (True: masked), as :class:`~streamcrystal.Pipeline`'s
        ``mask``: they are zero in the processed image; NaN pixels are masked always.

    Raises
    ------
    ValueError
        A mask that is neither a 2-D boolean image nor ``"saturated"``.
    """

    def __init__(self, data_key: str, subtrahend=None, *, stream_name: str = "primary", mask=None,
                 **external_kwargs) -> None:
        background = None if subtrahend is None else average_frames(subtrahend)
        mask = check_mask(mask)
        source = segments.inputs(ExternalData(data_key, **external_kwargs), streams={stream_name, "dark"})
        work = segments.frame_work(source, stream_name=stream_name, dark_stream="dark", subtrahend=background,
                                   locate_options=None, mask=mask)
        n = segments.named_nodes(source, work)
        super().__init__(n, {"data_key": data_key, "stream_name": stream_name,
                             "mask": mask if mask is None or isinstance(mask, str) else f"{int(mask.sum())} pixels"})
        out = source.start.union(work.frame_results, source.stop, stream_name="start+images+stop")
        n["to_event_model"] = out.accumulate(self._compose, start={}, returns_state=True, stream_name="to_event_model")
        n["outputs"] = n["to_event_model"].flatten(stream_name="outputs")

    def _compose(self, state: dict, item) -> tuple[dict, list]:
        key = self.parameters["data_key"]
        if isinstance(item, FrameTask):
            if item.run_uid not in state or item.problem is not None:
                return state, []
            bundle, descriptor = state[item.run_uid]
            docs = []
            if descriptor is None:
                data_keys = {
                    key: {"dtype": "array", "shape": list(item.image.shape), "dtype_numpy": "<f8", "source": "ImageProcessor"},
                    "frame": {"dtype": "integer", "shape": [], "source": "ImageProcessor"},
                }
                descriptor = bundle.compose_descriptor(name="primary", data_keys=data_keys)
                state[item.run_uid] = (bundle, descriptor)
                docs.append(("descriptor", descriptor.descriptor_doc))
            now = ttime.time()
            docs.append(("event", descriptor.compose_event(data={key: item.image, "frame": item.seq_num},
                                                            timestamps={key: now, "frame": now})))
            return state, docs
        if item.name == "start":
            metadata = {"raw_uid": item.run_uid, "analysis_stage": "image_processing", "plan_name": "image_processing",
                        "pipeline": self._provenance(), **derived_run_metadata(item.doc)}
            bundle = event_model.compose_run(metadata=metadata)
            state[item.run_uid] = (bundle, None)
            return state, [("start", bundle.start_doc)]
        bundle, _ = state.pop(item.run_uid)
        stop = bundle.compose_stop(exit_status=item.doc.get("exit_status", "success"), reason=item.doc.get("reason", ""))
        return state, [("stop", stop)]


class PeakTracker(_GraphCallback):
    """Find the Bragg peaks of each processed image; emit one ``primary`` event per peak.

    Parameters
    ----------
    data_key : str
        The key of the (processed) images.
    diameter : int or (int, int)
        trackpy's feature diameter, or one per axis (then the peaks have trackpy's
        ``size_y, size_x, ep_y, ep_x``).
    **locate_kwargs
        More keywords of ``trackpy.locate`` (``percentile``, ``separation``, ...). What
        trackpy would refuse is refused here, at construction.
    """

    def __init__(self, data_key: str, diameter, *, engine: str = "fast", stream_name: str = "primary",
                 **locate_kwargs) -> None:
        unknown = set(locate_kwargs) - LOCATE_KEYWORDS
        if unknown:
            raise TypeError(f"not keywords of trackpy.locate: {sorted(unknown)}; valid: {sorted(LOCATE_KEYWORDS)}")
        check_locate_arguments(diameter, **locate_kwargs)
        self.feature_columns = feature_columns(diameter, characterize=locate_kwargs.get("characterize", True))
        source = segments.inputs(ExternalData(data_key, frame_key="frame"), streams={stream_name})
        work = segments.frame_work(source, stream_name=stream_name, dark_stream=None, subtrahend=None,
                                   locate_options={"diameter": diameter, "engine": engine, **locate_kwargs})
        n = segments.named_nodes(source, work)
        super().__init__(n, {"data_key": data_key, "diameter": diameter, "locate_kwargs": locate_kwargs})
        out = source.start.union(work.frame_results, source.stop, stream_name="start+features+stop")
        n["to_event_model"] = out.accumulate(self._compose, start={}, returns_state=True, stream_name="to_event_model")
        n["outputs"] = n["to_event_model"].flatten(stream_name="outputs")

    def _compose(self, state: dict, item) -> tuple[dict, list]:
        if isinstance(item, FrameResult):
            run = state.get(item.run_uid)
            return state, (run.frame(item) if run else [])
        if item.name == "start":
            raw_uid = item.doc.get("raw_uid", item.run_uid)
            run = AnalysisRun({**item.doc, "uid": raw_uid}, self._provenance(), stage="peak_finding",
                              feature_columns=self.feature_columns, stream_names={"features": "primary"})
            state[item.run_uid] = run
            return state, run.open()
        run = state.pop(item.run_uid)
        return state, run.close_without_tracks(item.doc)


def _feature_result(routed: Routed) -> FrameResult:
    """A peak (``primary`` event) of a PeakTracker run as a one-row frame result."""
    data = routed.doc["data"]
    row = pd.DataFrame({column: [float(value)] for column, value in data.items() if column != "frame"})
    frame = int(data["frame"])
    return FrameResult(routed.run_uid, frame, row.assign(frame=np.int64(frame)))


class TrackLinker(_GraphCallback):
    """Link the peaks of a PeakTracker run at its stop; emit one ``primary`` event per linked peak.

    Parameters
    ----------
    db : databroker.Broker, optional
        Accepted for the seed's signature. The features arrive through the subscription
        chain and are kept in memory, so nothing is read back from ``db``.
    search_range : float
        trackpy.link's largest displacement (pixels).
    **link_kwargs
        More keywords of ``trackpy.link`` (``memory``, ...).
    """

    def __init__(self, *, db=None, search_range: float, **link_kwargs) -> None:
        unknown = set(link_kwargs) - LINK_KEYWORDS
        if unknown:
            raise TypeError(f"not keywords of trackpy.link: {sorted(unknown)}; valid: {sorted(LINK_KEYWORDS)}")
        self.db = db
        source = segments.inputs(ExternalData("frame"), streams=set())
        peaks = (
            source.event.filter(lambda routed: routed.stream == "primary", stream_name="peaks")
            .map(_feature_result, stream_name="peak rows")
        )
        parameters = {"search_range": search_range, "link_kwargs": link_kwargs}
        linked = (
            source.start.union(peaks, source.stop, stream_name="start+peaks+stop")
            .accumulate(_link_at_stop, start={}, returns_state=True, search_range=search_range,
                        link_kwargs=link_kwargs, stream_name="link")
            .flatten(stream_name="runs linked")
        )
        n = {**segments.named_nodes(source), "peaks": peaks, "link": linked}
        super().__init__(n, parameters)
        out = source.start.union(linked, stream_name="start+tracks")
        n["to_event_model"] = out.accumulate(self._compose, start={}, returns_state=True, stream_name="to_event_model")
        n["outputs"] = n["to_event_model"].flatten(stream_name="outputs")

    def _compose(self, state: dict, item) -> tuple[dict, list]:
        if isinstance(item, RunAnalysis):
            run = state.pop(item.run_uid)
            # the peaks' columns are those of the PeakTracker's events (trackpy's, for its diameter)
            run.feature_columns = tuple(c for c in item.features.columns if c != "frame")
            return state, run.close(item, streams=("tracks",))
        raw_uid = item.doc.get("raw_uid", item.run_uid)
        run = AnalysisRun({**item.doc, "uid": raw_uid}, self._provenance(), stage="track_linking",
                          stream_names={"tracks": "primary"})
        state[item.run_uid] = run
        return state, run.open(streams=())


def _link_at_stop(state: dict, item, *, search_range: float, link_kwargs) -> tuple[dict, list[RunAnalysis]]:
    """The TrackLinker's ``link`` node: a run's peaks kept until its stop, then ``trackpy.link``."""
    if isinstance(item, FrameResult):
        if item.run_uid in state:
            state[item.run_uid][1].append(item.features)
        return state, []
    if item.name == "start":
        state[item.run_uid] = (item.doc, [])
        return state, []
    if item.run_uid not in state:
        return state, []
    start, tables = state.pop(item.run_uid)
    features = concat_features(tables, ())
    failure = None
    try:
        tracks = link_features(features, search_range, **link_kwargs)
    except Exception as err:  # the peaks are kept; the run says why it has no tracks
        failure = f"linking failed: {type(err).__name__}: {err}"
        logger.error("run %s: %s", item.run_uid, failure)
        tracks = features.iloc[:0].assign(particle=pd.Series(dtype=np.int64))
    return state, [RunAnalysis(item.run_uid, start, item.doc, features, pd.DataFrame(), tracks, None, None, {},
                               failure=failure)]
