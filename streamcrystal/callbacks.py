"""The seed's callbacks under the seed's import path: ``from streamcrystal.callbacks import
ImageProcessor, PeakTracker, TrackLinker`` (defined in :mod:`streamcrystal.graph.callbacks`)."""
from .graph.callbacks import ImageProcessor, PeakTracker, TrackLinker

__all__ = ["ImageProcessor", "PeakTracker", "TrackLinker"]
