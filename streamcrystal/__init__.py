"""streamcrystal: crystal mapping from streaming X-ray diffraction data.

The main object is :func:`peak_tracking`, a declarative streamz graph that turns the live
event-model document stream of a scan into Bragg-peak tables, linked tracks and crystal
maps, emitted as event-model documents.

This module lists the public names; each lives in the layer that does its job::

    science/    arrays in, arrays out: frames, peaks (+ fastlocate/), tracks, maps
    documents/  event-model documents in (routing, external data, HDF5) and out (analysis runs, tally)
    graph/      the streamz graph: steps, segments, pipeline, Dask, the seed's callbacks, results
    storage/    the catalog, write-back, replay, the spool
    serve/      0MQ: wire format, server, transport
    views/      figures, progress bar, live maps
    sim/        the simulated sample and devices
    cli/        the ``streamcrystal`` command

Public names are imported lazily, so ``import streamcrystal`` stays fast (trackpy, numba,
bluesky and streamz load when first used).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "peak_tracking": "graph.pipeline",
    "Pipeline": "graph.pipeline",
    "RunResults": "graph.results",
    "load_pipeline": "graph.files",
    "make_client": "graph.cluster",
    "locate": "science.peaks",
    "link_features": "science.tracks",
    "crystal_maps": "science.maps",
    "process_frames": "science.frames",
    "catalog": "storage.catalog",
    "load_results": "storage.writeback",
    "replay": "storage.replay",
    "reshape": "views.plot",
    "plot_real_aspect": "views.plot",
    "plot_maps": "views.plot",
    "plot_peaks": "views.plot",
    "plot_grains": "views.plot",
    "plot_points": "views.plot",
    "group_grains": "science.grains",
    "LiveProgress": "views.progress",
    "LiveMap": "views.live_map",
    "LiveGrains": "views.live_grains",
    "FrameError": "errors",
    "StreamCrystalError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'streamcrystal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
