"""streamcrystal: crystal mapping from streaming X-ray diffraction data.

The main object is :func:`peak_tracking`, a declarative streamz graph that turns the live
event-model document stream of a grid scan into Bragg-peak tables, linked tracks and
crystal maps, emitted as event-model documents.

Public names are imported lazily, so ``import streamcrystal`` stays fast (trackpy, numba,
bluesky and streamz load when first used).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "peak_tracking": "pipeline",
    "Pipeline": "pipeline",
    "RunResults": "results",
    "locate": "peaks",
    "link_features": "tracks",
    "crystal_maps": "maps",
    "process_frames": "frames",
    "reshape": "plot",
    "plot_real_aspect": "plot",
    "plot_maps": "plot",
    "plot_peaks": "plot",
    "load_pipeline": "pipeline_files",
    "catalog": "tiled_catalog",
    "load_results": "writeback",
    "replay": "replaying",
    "DocumentError": "errors",
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
