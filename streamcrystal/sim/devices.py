"""A simulated crystal-rod grid scan, run by a real bluesky RunEngine over ophyd devices.

:func:`make_devices` gives two simulated motors (``sample_y``: grid rows, slow axis;
``sample_x``: grid columns, fast axis) and a detector ``dexela`` whose reading is computed, at
each trigger, from the motors' positions on a :class:`~streamcrystal.sim.sample.CrystalRod`.
:func:`simulate_scan` runs ``bluesky.plans.grid_scan`` with them, optionally after a ``dark``
stream taken with the shutter closed, and returns the run's start uid and the
:class:`~streamcrystal.sim.sample.GroundTruth`.

Examples
--------
>>> names = []
>>> uid, truth = simulate_scan(grid_shape=(3, 4), detector_shape=(64, 64), frames_per_point=1,
...                            n_grains=1, peaks_per_grain=1, min_peak_distance=20,
...                            callbacks=[lambda name, doc: names.append(name)])
>>> names.count("event"), truth.grid_shape, truth.background_seq_num
(12, (3, 4), 8)
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import plans as bp
from bluesky import preprocessors as bpp
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.sim import NullStatus, SynAxis

from ..documents.hdf5 import HDF5Appender
from .sample import CrystalRod, Grain, GroundTruth

__all__ = ["SimDexela", "HDF5FrameWriter", "make_devices", "simulate_scan", "with_dark_frames", "CrystalRod", "Grain", "GroundTruth"]


class _ArraySignal(Signal):
    """A Signal holding an ndarray; ``describe`` adds its numpy dtype (``dtype_numpy``)."""

    def describe(self) -> dict[str, dict[str, Any]]:
        description = super().describe()
        description[self.name]["dtype_numpy"] = np.asarray(self.get()).dtype.str
        return description


class SimDexela(Device):
    """A simulated area detector looking at a :class:`CrystalRod` where two motors put it.

    ``trigger()`` reads the motors, snaps their positions to the nearest grid point of the
    rod's ``truth.extents`` (linearly spaced, as ``grid_scan`` moves them) and takes
    ``frames_per_point`` noisy frames there, or dark-current frames while ``shutter_open`` is
    False. The reading: ``<name>_image`` (F, H, W) uint16 and ``<name>_stats1_total``, the sum
    of the frame-averaged image (like an area-detector stats plugin). The noise comes from a
    generator seeded by the rod's seed: the same plan on new devices gives the same images.

    Parameters
    ----------
    rod : CrystalRod
        The sample.
    slow, fast : ophyd positioners
        The motors of the grid's rows and columns.
    name : str
        The device name.
    continuous : bool
        Take the frames where the motors are (:meth:`CrystalRod.frames_at`), for any plan,
        instead of at the nearest grid point.
    """

    image = Cpt(_ArraySignal, value=np.zeros((1, 1, 1), np.uint16), kind="normal")
    stats1_total = Cpt(Signal, value=0.0, kind="hinted")
    shutter_open = Cpt(Signal, value=True, kind="config")

    def __init__(self, rod: CrystalRod, slow, fast, *, name: str = "dexela", write_dir=None, continuous: bool = False,
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.rod, self.slow, self.fast, self.continuous = rod, slow, fast, bool(continuous)
        self.image.put(np.zeros((rod.truth.frames_per_point, *rod.truth.detector_shape), np.uint16))
        self._rng = np.random.default_rng([rod.seed, 1])  # the rod's structure uses stream [seed]
        self._writer = None if write_dir is None else HDF5FrameWriter(write_dir, self.image.name)

    def grid_point(self) -> tuple[int, int]:
        """The grid point (row, col) nearest the motors' current positions."""
        truth = self.rod.truth
        point = []
        for motor, (start, stop), n in zip((self.slow, self.fast), truth.extents, truth.grid_shape):
            fraction = (motor.position - start) / (stop - start) if stop != start else 0.0
            point.append(int(np.clip(round(fraction * (n - 1)), 0, n - 1)))
        return point[0], point[1]

    def trigger(self) -> NullStatus:
        if self.shutter_open.get() and self.continuous:
            row, col = self.rod.grid_coordinates(self.slow.position, self.fast.position)
            frames = self.rod.frames_at(float(row), float(col), self._rng)
        elif self.shutter_open.get():
            frames = self.rod.frames(*self.grid_point(), self._rng)
        else:
            frames = self.rod.dark_frames(self._rng)
        self.stats1_total.put(float(frames.sum(dtype=np.uint64)) / len(frames))
        if self._writer is None:
            self.image.put(frames)
        else:
            self._writer.append("open" if self.shutter_open.get() else "closed", frames)
        return NullStatus()

    # With ``write_dir`` the frames go to an HDF5 file per run, as an area detector's HDF5
    # plugin writes them: the reading has no image, and StreamResource/StreamDatum documents
    # say where the frames are.
    def stage(self) -> list:
        if self._writer is not None:
            self._writer.open_file()
        return super().stage()

    def unstage(self) -> list:
        if self._writer is not None:
            self._writer.close_file()
        return super().unstage()

    def describe(self) -> dict[str, dict[str, Any]]:
        description = super().describe()
        if self._writer is not None:
            key = self.image.name
            description[key] = {
                "source": f"HDF5:{key}", "dtype": "array", "dtype_numpy": np.dtype(np.uint16).str,
                "shape": [self.rod.truth.frames_per_point, *self.rod.truth.detector_shape], "external": "STREAM:",
            }
        return description

    def read(self) -> dict[str, dict[str, Any]]:
        reading = super().read()
        if self._writer is not None:
            reading.pop(self.image.name, None)
        return reading

    def collect_asset_docs(self):
        """StreamResource (once per shutter state and run) and StreamDatum of the last trigger."""
        if self._writer is not None:
            yield from self._writer.collect_asset_docs()


class HDF5FrameWriter:
    """Append each trigger's frames to an HDF5 file per run, with their asset documents.

    One dataset per shutter state (``/entry/open``, ``/entry/closed``: light and dark
    frames go to different streams, and a StreamResource serves one stream), each of shape
    ``(n_triggers, frames, rows, cols)`` with one chunk per trigger, written by an
    :class:`~streamcrystal.documents.hdf5.HDF5Appender` at every trigger, so that readers
    (the pipeline live, a catalog) can open the file at any time between triggers.
    """

    def __init__(self, directory, data_key: str) -> None:
        self.directory = Path(directory)
        self.data_key = data_key
        self._appender: HDF5Appender | None = None
        self._pending: list[tuple[str, dict]] = []

    @property
    def path(self) -> Path | None:
        """The file of the run in progress (None outside a run)."""
        return None if self._appender is None else self._appender.path

    def open_file(self) -> None:
        self._appender = HDF5Appender(self.directory / f"{uuid.uuid4()}.h5")
        self._pending = []

    def close_file(self) -> None:
        self._appender = None

    def append(self, state: str, frames: np.ndarray) -> None:
        if self._appender is None:
            raise RuntimeError("the detector writes to HDF5 only while staged (inside a plan's run)")
        self._pending += self._appender.append(f"/entry/{state}", self.data_key, frames)

    def collect_asset_docs(self):
        pending, self._pending = self._pending, []
        yield from pending


def make_devices(rod: CrystalRod, *, write_dir=None, continuous: bool = False) -> tuple[SynAxis, SynAxis, SimDexela]:
    """The motors ``sample_y`` (rows, slow) and ``sample_x`` (columns, fast) and the detector
    ``dexela`` of a simulated scan of ``rod``, for running your own plans. With ``write_dir``
    the detector writes its frames to HDF5 files there (StreamResource/StreamDatum documents);
    with ``continuous`` it sees the sample where the motors are, for any plan (the truth at
    any position: ``rod.grains_at(sample_y, sample_x)``).

    Examples
    --------
    >>> rod = CrystalRod((4, 5), (64, 64), frames_per_point=2, n_grains=1, peaks_per_grain=1,
    ...                  min_peak_distance=20)
    >>> slow, fast, dexela = make_devices(rod)
    >>> dexela.describe()["dexela_image"]["shape"], dexela.describe()["dexela_image"]["dtype_numpy"]
    ([2, 64, 64], '<u2')
    """
    slow, fast = SynAxis(name="sample_y"), SynAxis(name="sample_x")
    return slow, fast, SimDexela(rod, slow, fast, name="dexela", write_dir=write_dir, continuous=continuous)


def with_dark_frames(plan: Generator, detector: SimDexela, n_frames: int) -> Generator:
    """``plan`` with ``n_frames`` readings of ``detector`` in a stream ``dark``, shutter closed,
    right after the run opens (before any other reading)."""
    inserted = False

    def dark() -> Generator:
        yield from bps.abs_set(detector.shutter_open, False, wait=True)
        for _ in range(n_frames):
            yield from bps.trigger_and_read([detector], name="dark")
        yield from bps.abs_set(detector.shutter_open, True, wait=True)

    def after_open_run(msg):
        nonlocal inserted
        if msg.command == "open_run" and not inserted:
            inserted = True
            return None, dark()
        return None, None

    return (yield from bpp.plan_mutator(plan, after_open_run))


def simulate_scan(
    RE=None,
    *,
    grid_shape: tuple[int, int] = (16, 12),
    detector_shape: tuple[int, int] = (1024, 1024),
    frames_per_point: int = 5,
    n_grains: int = 6,
    peaks_per_grain: int = 3,
    min_peak_distance: float = 110.0,
    seed: int = 0,
    snake: bool = True,
    extents: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 3.75), (0.0, 2.75)),
    dark_frames: int = 0,
    callbacks: Iterable[Callable[[str, dict], Any]] = (),
    md: Mapping[str, Any] | None = None,
    write_dir=None,
) -> tuple[str, GroundTruth]:
    """Run a ``grid_scan`` of a simulated crystal rod; return the run's start uid and the truth.

    Parameters
    ----------
    RE : bluesky.RunEngine, optional
        The RunEngine; a new ``RunEngine({})`` if None.
    grid_shape, detector_shape, frames_per_point, n_grains, peaks_per_grain, min_peak_distance, seed
        The sample and detector: see :class:`CrystalRod`.
    snake : bool
        ``snake_axes`` of ``grid_scan``: the fast axis runs backwards on odd rows.
    extents : ((float, float), (float, float))
        (start, stop) of ``sample_y`` (rows) and ``sample_x`` (columns).
    dark_frames : int
        If > 0, the run first takes this many readings, shutter closed, in a stream ``dark``.
    callbacks : iterable of callables
        Subscribed to ``RE`` for this scan only.
    md : mapping, optional
        Extra start-document metadata, over ``{"sample": "simulated crystal rod",
        "simulation_seed": seed}``.
    write_dir : path, optional
        Write the frames to an HDF5 file in this directory, as a beamline detector does, and
        emit StreamResource/StreamDatum documents; by default the frames are inline in the events.

    Returns
    -------
    uid : str
        The start document's uid.
    truth : GroundTruth
        Grains, powder, empty points and the background ``seq_num``, with this scan's
        ``extents`` and ``snaking``.
    """
    if RE is None:
        from bluesky import RunEngine

        RE = RunEngine({})
    if dark_frames < 0:
        raise ValueError(f"dark_frames must be >= 0, got {dark_frames}")
    rod = CrystalRod(grid_shape, detector_shape, frames_per_point=frames_per_point, n_grains=n_grains,
                     peaks_per_grain=peaks_per_grain, min_peak_distance=min_peak_distance, seed=seed,
                     extents=extents, snake=snake)
    slow, fast, dexela = make_devices(rod, write_dir=write_dir)
    (y0, y1), (x0, x1) = rod.truth.extents
    (n_rows, n_cols) = rod.truth.grid_shape
    plan = bp.grid_scan([dexela], slow, y0, y1, n_rows, fast, x0, x1, n_cols, snake_axes=snake,
                        md={"sample": "simulated crystal rod", "simulation_seed": seed, **(md or {})})
    if dark_frames:
        plan = with_dark_frames(plan, dexela, dark_frames)
    starts: list[str] = []

    def remember_start(name: str, doc: dict) -> None:
        if name == "start":
            starts.append(doc["uid"])

    RE(plan, [remember_start, *callbacks])
    return starts[0], rod.truth
