"""A simulated crystal rod and the bluesky devices that scan it, with the truth known.

``sample`` is the rod and its diffraction images (pure numpy); ``devices`` the ophyd motors
and detector that a real RunEngine scans with bluesky's own plans; ``scoring`` compares the
grains a run found with the truth.
"""
from .devices import HDF5FrameWriter, SimDexela, make_devices, simulate_scan, with_dark_frames
from .sample import CrystalRod, Grain, GroundTruth
from .scoring import GrainMatch, score_grains

__all__ = ["SimDexela", "HDF5FrameWriter", "make_devices", "simulate_scan", "with_dark_frames", "CrystalRod", "Grain",
           "GroundTruth", "GrainMatch", "score_grains"]
