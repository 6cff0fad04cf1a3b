"""The demo: a simulated crystal-rod grid scan, mapped live by the peak-tracking pipeline.

A real bluesky RunEngine runs ``grid_scan`` over ophyd simulated motors and detector; the
pipeline of ``pipelines/peak_tracking.py`` is subscribed to it. Returns a report; the CLI
prints it.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .documents.tally import RunTally
from .graph.files import load_pipeline
from .science.frames import process_frames
from .science.peaks import noise_minmass
from .sim import CrystalRod, GrainMatch, score_grains, simulate_scan
from .storage.catalog import catalog, default_catalog_path, raw_data_dir
from .storage.writeback import catalog_writer
from .views.plot import plot_grains, plot_maps
from .views.progress import LiveProgress

__all__ = ["DemoReport", "demo", "match_grains", "sample_parameters", "replay_flags"]


@dataclass
class DemoReport:
    """What the demo did and found: the analysis run's tally, the grains against the truth, the files.

    ``grain_iou`` is per simulated grain the best IoU of one particle's map (one Bragg peak)
    with the grain's footprint; ``grains`` matches the grains found (peaks grouped by their
    maps) with the simulated ones.
    """

    tally: RunTally
    catalog: str
    n_linked: int
    events_per_second: float
    grain_iou: list[float]
    grains: list[GrainMatch] = field(default_factory=list)
    n_grains_found: int = 0
    files: list[Path] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)

    @property
    def raw_uid(self) -> str:
        return self.tally.raw_uid

    def summary(self) -> str:
        ious = ", ".join(f"{iou:.2f}" for iou in self.grain_iou)
        return (
            f"raw run {self.raw_uid}, analysis run {self.tally.analysis_uid}, stored in the catalog {self.catalog}\n"
            f"  {self.tally.line()}\n"
            f"  {self.events_per_second:.1f} events/s, live with the RunEngine; {self.n_linked} particles linked, "
            f"{self.tally.particles} mapped (seen on enough grid points)\n"
            f"  simulated grains  {len(self.grain_iou)}; best map overlap (IoU) per grain: {ious}\n"
            f"  grains found {self.n_grains_found} (Bragg peaks grouped by their maps), "
            f"{sum(m.exact for m in self.grains)} of {len(self.grains)} simulated grains exactly "
            "(found once, with all their peaks and no other):\n"
            + "\n".join(f"    {m.line()}" for m in self.grains)
        )


def match_grains(maps: np.ndarray, footprints) -> list[float]:
    """For each true grain footprint, the best intersection-over-union of a particle's map."""
    found = maps > 0
    ious = []
    for footprint in footprints:
        inter = (found & footprint).sum(axis=tuple(range(1, found.ndim)))
        union = (found | footprint).sum(axis=tuple(range(1, found.ndim)))
        ious.append(float((inter / np.maximum(union, 1)).max()) if len(found) else 0.0)
    return ious


def demo(
    output: Path,
    *,
    grid_shape=(16, 12),
    detector_shape=(1024, 1024),
    frames_per_point: int = 5,
    n_grains: int = 6,
    seed: int = 0,
    pipeline: str = "peak_tracking",
    minmass: float | None = None,
    maxsize: float | None = 3.0,
    min_frames: int = 3,
    progress: bool = True,
    catalog_path=None,
    uri: str | None = None,
    api_key: str | None = None,
) -> DemoReport:
    """Simulate, map live, write figures and tables to ``output``; returns a :class:`DemoReport`.

    ``output`` gets ``crystal_maps.png`` (one map per Bragg peak), ``grains.png`` (the
    grain-label map and one map per grain), ``pipeline.png``, the tables as CSV and
    ``background.npy``, the background subtracted (for ``streamcrystal replay --subtrahend``).

    The pipeline is ``pipelines/peak_tracking.py`` (the seed's parameters, ``memory="grid"``)
    with three choices a user makes for a sample: ``minmass`` (default: twice the strongest
    noise maximum of two empty-point exposures, :func:`default_minmass`), ``maxsize`` (3 px:
    the simulated Bragg spots have trackpy ``size`` ~2.1 px, as the real Dexela spots of
    ``reference/diffraction_patch.png``; powder-ring maxima ~4 px) and ``min_frames``.

    The raw scan (frames in HDF5 files) and its analysis run are stored in the catalog
    (:func:`streamcrystal.catalog` of ``catalog_path``, or of ``uri``).
    """
    import matplotlib

    matplotlib.use("Agg")
    from bluesky import RunEngine

    output = Path(output)
    rod = CrystalRod(grid_shape, detector_shape, frames_per_point=frames_per_point, n_grains=n_grains, seed=seed)
    # As in the seed: the background is an exposure at an empty grid point (air only).
    empty_row, empty_col = np.argwhere(rod.truth.empty)[0]
    background = rod.frames(int(empty_row), int(empty_col), np.random.default_rng(seed + 1))
    pipeline_file = load_pipeline(pipeline)
    chosen = sample_parameters(rod, pipeline_file, minmass=minmass, maxsize=maxsize, min_frames=min_frames)
    pipe = pipeline_file.make_pipeline(subtrahend=background, **chosen)
    live = LiveProgress(total=grid_shape[0] * grid_shape[1], disable=not progress, desc="grid points", pipeline=pipe)
    pipe.subscribe(live)
    db = catalog(catalog_path, uri=uri, api_key=api_key)
    pipe.subscribe(catalog_writer(db))

    t0 = time.perf_counter()
    raw_uid, truth = simulate_scan(
        RunEngine({}), grid_shape=grid_shape, detector_shape=detector_shape, frames_per_point=frames_per_point,
        n_grains=n_grains, seed=seed, callbacks=[db.insert, pipe], write_dir=raw_data_dir(db),
    )
    elapsed = time.perf_counter() - t0
    results = pipe.results(raw_uid)

    output.mkdir(parents=True, exist_ok=True)  # once there is something to write (not for a failed demo)
    files = [output / "background.npy"]  # the background subtracted: `replay --subtrahend` gives the same answer
    np.save(files[0], background)
    for name, table in [("features", results.features), ("tracks", results.tracks), ("frames", results.frames),
                        ("particles", results.particles)]:
        path = output / f"{name}.csv"
        table.to_csv(path, index=False)
        files.append(path)
    figure = plot_maps(results.maps)
    figure.savefig(output / "crystal_maps.png", dpi=110)
    files.append(output / "crystal_maps.png")
    if results.grain_maps is not None and results.grain_maps.sizes["grain"]:
        figure = plot_grains(results.grain_labels, results.grain_maps,
                             title=f"{len(results.particles)} Bragg peaks")
        figure.savefig(output / "grains.png", dpi=110)
        files.append(output / "grains.png")
    pipe.visualize(str(output / "pipeline.png"))  # graphviz's layout if 'dot' is installed, else matplotlib's
    files.append(output / "pipeline.png")

    return DemoReport(
        tally=live.latest,
        catalog=str(uri or (catalog_path or default_catalog_path())),
        n_linked=int(results.tracks["particle"].nunique()) if len(results.tracks) else 0,
        events_per_second=live.latest.events / elapsed,
        grain_iou=match_grains(results.maps.values, [g.footprint for g in truth.grains]),
        grains=score_grains(truth, results.particles, results.grains,
                            {int(g): results.grain_maps.sel(grain=g).values for g in results.grain_maps["grain"].values}),
        n_grains_found=int(results.grain_maps.sizes["grain"]),
        files=files,
        parameters=chosen,
    )


def sample_parameters(rod, pipeline_file, *, minmass: float | None = None, maxsize: float | None = 3.0,
                      min_frames: int = 3) -> dict:
    """The demo's three choices for the simulated sample, as ``make_pipeline`` overrides.

    ``minmass`` defaults to :func:`default_minmass` (from ``pipeline_file.PARAMETERS['diameter']``).
    ``streamcrystal replay`` of the same scan gives the demo's answer with these values.

    Raises
    ------
    ValueError
        If ``minmass`` is None and the pipeline file has no ``PARAMETERS['diameter']``.
    """
    if minmass is None:
        parameters = getattr(pipeline_file, "PARAMETERS", {})
        if "diameter" not in parameters:
            raise ValueError(f"pipeline {Path(pipeline_file.__file__).stem!r} has no PARAMETERS['diameter'] to estimate "
                             "minmass from; give minmass (--minmass) explicitly")
        minmass = default_minmass(rod, parameters)
    return {"minmass": float(minmass), "maxsize": maxsize, "min_frames": min_frames}


def replay_flags(parameters: Mapping) -> str:
    """``sample_parameters`` as ``streamcrystal replay`` options (``minmass`` to the last digit
    that reads back as the same float: a peak on the threshold stays on the same side).

    Examples
    --------
    >>> replay_flags({"minmass": 405.47123456789, "maxsize": 3.0, "min_frames": 3})
    '--minmass 405.47123456789 --maxsize 3.0 --min-frames 3'
    >>> replay_flags({"minmass": 405.0, "maxsize": None, "min_frames": 3})
    '--minmass 405.0 --maxsize 0 --min-frames 3'
    """
    maxsize = parameters["maxsize"] or 0
    return f"--minmass {float(parameters['minmass'])!r} --maxsize {maxsize} --min-frames {parameters['min_frames']}"


def default_minmass(rod, parameters) -> float:
    """Twice the strongest noise maximum of two exposures at empty grid points (air only).

    What a beamline user can do too: take two exposures off the sample, and keep features
    clearly stronger than anything located on their difference (see :func:`noise_minmass`).
    """
    (row_a, col_a), (row_b, col_b) = np.argwhere(rod.truth.empty)[[0, -1]]
    rng = np.random.default_rng(rod.seed + 2)
    first, second = (process_frames(rod.frames(int(r), int(c), rng)) for r, c in [(row_a, col_a), (row_b, col_b)])
    keywords = {k: parameters[k] for k in ("percentile", "separation") if k in parameters}
    return noise_minmass(first, second, parameters["diameter"], **keywords)
