"""Benchmark: live science (issue 15): the RunEngine's callback time, and the per-event cost of live linking.

Run ``python -m benchmarks.bench_live`` from the repository root (``--help`` for options; a
benchmark, not a test). Two sections, each a table of medians of interleaved repeats:

1. **RunEngine callback.** A real bluesky ``RunEngine`` runs ``bluesky.plans.grid_scan`` over
   ``ophyd.sim`` motors and the simulated Dexela (:func:`streamcrystal.sim.devices.simulate_scan`:
   a crystal rod, 1024 x 1024 detector, 5 frames a point, 16 x 12 points), with the pipeline of
   ``pipelines/peak_tracking.py`` subscribed as the demo sets it up (background from an empty
   point, ``minmass`` from two empty exposures, ``maxsize=3``, ``min_frames=3``), once with
   ``thread=True`` and once with ``thread=False``. Every ``pipe(name, doc)`` call the RunEngine
   makes is timed (a callback wrapping the pipe): median, 99th percentile and max per document,
   the median per event document and the stop's call. With ``thread=True`` the call only queues
   the document (goal: median under 0.2 ms); with ``thread=False`` it does the whole per-event
   work (and the stop's linking, maps and grains). After ``pipe.flush()`` the results of every
   repeat of both modes must be identical (features, tracks, frames but their latency,
   particles, maps, grains): the benchmark fails otherwise.

2. **Live linking.** A synthetic run on a 100 x 100 snaking grid, 50 peaks an event (80 % Bragg
   peaks at fixed detector positions, seen at every point: the largest particles; 20 % random
   noise; :func:`benchmarks.bench_linking.make_run`), given as frame results with all of
   trackpy's feature columns to the pipeline's ``runs`` step,
   :meth:`streamcrystal.graph.runs.RunState.add` (placement on the sample + live linking), for
   both linkings (``"sample"``, search range 5 px; ``"trackpy"``: trackpy's ``Linker`` in scan
   order, search range 5 px, ``memory="grid"`` = 198 frames). Reported: the median (and mean)
   ms an event of ``RunState.add`` with its parts (``Placement.add``, the linker's ``add``,
   ``Placement.position``, the rest), its median in the first and last tenth of the run
   (whether it grows), the ``tracks`` documents an event emits (the ``to_event_model`` step),
   against the stop-time batch linking of the same features (``link_sample_space``;
   ``trackpy.link``) amortised per event; the live partition must equal the batch one. Live
   maps are computed only when asked (``pipe.results()`` during a run: ``RunState.snapshot``):
   the time of one such look at a quarter, half and all of the run is reported (with
   ``min_frames=3``, the demo's: with ``min_frames=1`` the ~100,000 one-point noise particles
   would each get a dense 100 x 100 map).

The grain grouping of a whole run is ``python -m benchmarks.bench_grains``.

Examples::

    python -m benchmarks.bench_live --repeats 5
    python -m benchmarks.bench_live --section callback --grid 16x12 --repeats 7
    python -m benchmarks.bench_live --section linking --link-grid 100x100 --peaks 50 --repeats 3
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import uuid

import numpy as np
import pandas as pd

DATA_KEY = "dexela_image"
DIMENSIONS = ("sample_y", "sample_x")


# ------------------------------------------------------------------------------------------
# 1. The RunEngine's callback time per document
# ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scan:
    """A simulated grid scan (the keywords of :class:`~streamcrystal.sim.sample.CrystalRod`)."""

    grid: tuple[int, int] = (16, 12)
    detector: tuple[int, int] = (1024, 1024)
    frames: int = 5
    n_grains: int = 6
    peaks_per_grain: int = 3
    min_peak_distance: float = 110.0
    seed: int = 0

    @property
    def extents(self):
        return tuple((0.0, 0.25 * (n - 1)) for n in self.grid)

    def rod_keywords(self) -> dict:
        return {"grid_shape": self.grid, "detector_shape": self.detector, "frames_per_point": self.frames,
                "n_grains": self.n_grains, "peaks_per_grain": self.peaks_per_grain,
                "min_peak_distance": self.min_peak_distance, "seed": self.seed, "extents": self.extents}


QUICK_SCAN = Scan(grid=(4, 3), detector=(256, 256), frames=2, n_grains=2, peaks_per_grain=2, min_peak_distance=60.0)


def pipeline_options(scan: Scan) -> dict:
    """The demo's choices for the pipeline file ``peak_tracking``: background, minmass, maxsize, min_frames."""
    from streamcrystal.demo import default_minmass
    from streamcrystal.graph.files import load_pipeline
    from streamcrystal.sim.sample import CrystalRod

    rod = CrystalRod(**scan.rod_keywords())
    empty_row, empty_col = np.argwhere(rod.truth.empty)[0]
    background = rod.frames(int(empty_row), int(empty_col), np.random.default_rng(scan.seed + 1))
    minmass = default_minmass(rod, load_pipeline("peak_tracking").PARAMETERS)
    return {"subtrahend": background, "minmass": minmass, "maxsize": 3.0, "min_frames": 3}


def timed_scan(RE, scan: Scan, options: dict, *, thread: bool) -> dict:
    """Run the scan with the pipeline subscribed through a timing callback; the pipe's results."""
    from streamcrystal.graph.files import load_pipeline
    from streamcrystal.sim.devices import simulate_scan

    pipe = load_pipeline("peak_tracking").make_pipeline(**options, thread=thread)
    calls: list[tuple[str, float]] = []

    def timed(name, doc):
        start = time.perf_counter()
        pipe(name, doc)
        calls.append((name, time.perf_counter() - start))

    start = time.perf_counter()
    uid, _ = simulate_scan(RE, **scan.rod_keywords(), callbacks=[timed])
    scanned = time.perf_counter() - start
    start = time.perf_counter()
    if not pipe.flush(600):
        raise RuntimeError("the pipeline did not catch up within 10 minutes")
    flushed = time.perf_counter() - start
    results = pipe.results(uid)
    pipe.close()
    times = np.array([t for _, t in calls])
    events = np.array([t for name, t in calls if name == "event"])
    stop = [t for name, t in calls if name == "stop"]
    return {"docs": len(calls), "median": float(np.median(times)), "p99": float(np.percentile(times, 99)),
            "max": float(times.max()), "event_median": float(np.median(events)), "stop": stop[-1],
            "scan": scanned, "flush": flushed, "latency": float(results.frames["latency"].median()),
            "results": results}


def assert_same_results(a, b) -> None:
    """The results two pipelines gave of the same scan are identical (latency aside)."""
    from pandas.testing import assert_frame_equal

    if not (a.complete and b.complete):
        raise AssertionError("a run is not complete after flush()")
    for name in ("features", "tracks", "particles", "points", "grains", "grain_table"):
        assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)
    assert_frame_equal(a.frames.drop(columns="latency"), b.frames.drop(columns="latency"), obj="frames")
    if not np.array_equal(a.maps.values, b.maps.values):
        raise AssertionError("the maps differ")
    if (a.grain_maps is None) != (b.grain_maps is None) or (
            a.grain_maps is not None and not np.array_equal(a.grain_maps.values, b.grain_maps.values)):
        raise AssertionError("the grain maps differ")
    if a.problems != b.problems or a.failure != b.failure:
        raise AssertionError(f"problems or failure differ: {a.problems, a.failure} vs {b.problems, b.failure}")


def callback_section(scan: Scan, repeats: int) -> dict:
    """Both modes, interleaved ``repeats`` times; per mode the median over repeats of each figure."""
    from bluesky import RunEngine

    options = pipeline_options(scan)
    RE = RunEngine({})
    runs: dict[bool, list[dict]] = {True: [], False: []}
    reference = None
    for _ in range(repeats):
        for thread in (True, False):
            run = timed_scan(RE, scan, options, thread=thread)
            if reference is None:
                reference = run["results"]
            else:
                assert_same_results(reference, run["results"])
            runs[thread].append(run)
    figures = {}
    for thread, done in runs.items():
        figures[thread] = {key: statistics.median(r[key] for r in done)
                           for key in ("docs", "median", "p99", "max", "event_median", "stop", "scan", "flush", "latency")}
        figures[thread]["worst"] = max(r["max"] for r in done)
    results = reference
    figures["results"] = {"features": len(results.features), "tracks": int(results.tracks["particle"].nunique()),
                          "particles": len(results.particles), "grains": len(results.grain_table),
                          "events": len(results.frames)}
    return figures


def print_callback(scan: Scan, repeats: int, figures: dict) -> None:
    n_events = scan.grid[0] * scan.grid[1]
    print(f"RunEngine callback time per document: grid_scan {scan.grid[0]} x {scan.grid[1]} ({n_events} events), "
          f"{scan.detector[0]} x {scan.detector[1]} detector, {scan.frames} frames/event; medians of {repeats} "
          f"interleaved repeats (worst: of all)")
    print(f"{'mode':<13} {'docs':>5} {'median ms':>10} {'p99 ms':>9} {'max ms':>9} {'worst ms':>9} {'event ms':>9} "
          f"{'stop ms':>9} {'scan s':>8} {'flush s':>8} {'latency s':>10}")
    for thread in (True, False):
        f = figures[thread]
        print(f"{'thread=' + str(thread):<13} {f['docs']:>5.0f} {1e3 * f['median']:>10.3f} {1e3 * f['p99']:>9.3f} "
              f"{1e3 * f['max']:>9.3f} {1e3 * f['worst']:>9.3f} {1e3 * f['event_median']:>9.3f} {1e3 * f['stop']:>9.3f} "
              f"{f['scan']:>8.2f} {f['flush']:>8.3f} {f['latency']:>10.4f}")
    r = figures["results"]
    print(f"results after flush(): identical in every repeat of both modes ({r['events']} events, {r['features']} "
          f"features, {r['tracks']} linked particles, {r['particles']} mapped, {r['grains']} grains)")


# ------------------------------------------------------------------------------------------
# 2. Live placement + linking per event, against the stop-time batch linking
# ------------------------------------------------------------------------------------------

def grid_start(rows: int, cols: int, step: float = 0.05) -> dict:
    """A start document as ``bluesky.plans.grid_scan`` writes it (snaking fast axis)."""
    return {"uid": str(uuid.uuid4()), "time": time.time(), "plan_name": "grid_scan", "shape": [rows, cols],
            "extents": [[0.0, step * (rows - 1)], [0.0, step * (cols - 1)]], "snaking": [False, True],
            "motors": list(DIMENSIONS), "num_points": rows * cols,
            "hints": {"dimensions": [[[d], "primary"] for d in DIMENSIONS]}}


def synthetic_results(rows: int, cols: int, peaks: int, run_uid: str, seed: int = 0):
    """The frame results of :func:`benchmarks.bench_linking.make_run`'s run, with trackpy's columns."""
    from streamcrystal.records import FrameResult
    from streamcrystal.schema import feature_columns

    from .bench_linking import make_run

    positions, features = make_run(rows, cols, peaks, seed)
    rng = np.random.default_rng(seed + 1)
    columns = feature_columns(15)
    results = []
    for seq, (position, yx) in enumerate(zip(positions, features), 1):
        table = pd.DataFrame(rng.uniform(1, 1000, (len(yx), len(columns))), columns=list(columns))
        table["y"], table["x"] = yx[:, 0], yx[:, 1]
        table["frame"] = np.int64(seq)
        results.append(FrameResult(run_uid, seq, table, total_intensity=float(table["mass"].sum()),
                                   readings=dict(zip(DIMENSIONS, position))))
    return results


class _Clock:
    """Wrap an object's method (on the instance only) to add up the time spent in it."""

    def __init__(self, owner, name: str) -> None:
        self.spent = 0.0
        method = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - start

        setattr(owner, name, timed)

    def take(self) -> float:
        spent, self.spent = self.spent, 0.0
        return spent


def live_run(start: dict, results, linking: str, *, search_range: float, snapshots=(0.25, 0.5, 1.0)) -> dict:
    """Feed the results to a fresh ``RunState`` (as the ``runs`` node does); time each ``add``."""
    from streamcrystal.documents.analysis_run import AnalysisRun
    from streamcrystal.graph.runs import RunState, placement_plan
    from streamcrystal.schema import feature_columns

    recorded = {d: {"dtype": "number", "shape": [], "source": "sim"} for d in DIMENSIONS}
    recorded[DATA_KEY] = {"dtype": "array", "shape": [5, 2048, 2048], "source": "sim"}
    plan = placement_plan(start, linking=linking, memory="grid" if linking == "trackpy" else 0, recorded=recorded)
    columns = feature_columns(15)
    state = RunState(start, plan, search_range=search_range, link_kwargs={},
                     map_options={"intensity": "mass", "min_frames": 3, "grain_options": None, "columns": columns})
    clocks = {"placement": _Clock(state.placement, "add"), "linker": _Clock(state.linker, "add"),
              "coordinates": _Clock(state.placement, "position")}
    documents = AnalysisRun(start, {}, feature_columns=columns, placement=plan)
    documents.open(streams=("features", "frames", "tracks", "relabels"))
    n = len(results)
    at = {max(1, int(round(f * n))): f for f in snapshots}
    add, parts, docs, untracked, looks = [], {key: [] for key in clocks}, [], [], {}
    for i, result in enumerate(results, 1):
        begin = time.perf_counter()
        placed = state.add(result)
        add.append(time.perf_counter() - begin)
        for key, clock in clocks.items():
            parts[key].append(clock.take())
        begin = time.perf_counter()
        documents.placed(placed)
        docs.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        documents.placed(dataclasses.replace(placed, point=-1))  # the same documents, but no tracks
        untracked.append(time.perf_counter() - begin)
        if i in at:
            begin = time.perf_counter()
            snapshot = state.snapshot()
            looks[at[i]] = (time.perf_counter() - begin, len(snapshot.particles), len(snapshot.grain_table))
    add, docs, untracked = np.array(add), np.array(docs), np.array(untracked)
    parts = {key: np.array(values) for key, values in parts.items()}
    tenth = max(1, n // 10)
    return {"add": add, "parts": parts, "first": float(np.median(add[:tenth])), "last": float(np.median(add[-tenth:])),
            "tracks_docs": docs - untracked, "docs": docs, "looks": looks, "state": state, "memory": plan.get("memory")}


def batch_link(table: pd.DataFrame, linking: str, *, search_range: float, neighbours, memory) -> pd.DataFrame:
    """The stop-time linking of the whole run's features (as before live linking)."""
    if linking == "sample":
        from streamcrystal.science.linking import link_sample_space

        return link_sample_space(table, search_range, neighbours=neighbours)
    import trackpy

    return trackpy.link(table, search_range, memory=memory)


def same_partition(a, b) -> bool:
    """Whether two labellings of the same features group them alike (ids may differ)."""
    pairs = pd.DataFrame({"a": np.asarray(a), "b": np.asarray(b)}).drop_duplicates()
    return len(pairs) == pairs["a"].nunique() == pairs["b"].nunique()


def linking_section(rows: int, cols: int, peaks: int, repeats: int, *, search_range: float = 5.0) -> dict:
    import trackpy

    trackpy.quiet()
    start = grid_start(rows, cols)
    results = synthetic_results(rows, cols, peaks, start["uid"])
    table = pd.concat([r.features for r in results], ignore_index=True)
    runs: dict[str, list[dict]] = {"sample": [], "trackpy": []}
    batch: dict[str, list[float]] = {"sample": [], "trackpy": []}
    checks: dict[str, tuple] = {}
    for _ in range(repeats):
        for linking in ("sample", "trackpy"):
            live = live_run(start, results, linking, search_range=search_range)
            state = live.pop("state")
            features = table.assign(point=np.repeat(_points_of(state, results), [r.n_peaks for r in results]))
            begin = time.perf_counter()
            linked = batch_link(features, linking, search_range=search_range, neighbours=state.placement.neighbours,
                                memory=live["memory"])
            batch[linking].append(time.perf_counter() - begin)
            live_tracks = state.tracks()
            linked = linked.sort_index()
            checks[linking] = (same_partition(live_tracks["particle"], linked["particle"]),
                               int(live_tracks["particle"].nunique()), int(linked["particle"].nunique()))
            if not checks[linking][0]:
                raise AssertionError(f"linking={linking!r}: the live tracks are not the batch linking's partition")
            runs[linking].append(live)
    figures = {"events": len(results), "features": len(table), "checks": checks}
    for linking, done in runs.items():
        f = {"median": statistics.median(float(np.median(r["add"])) for r in done),
             "mean": statistics.median(float(np.mean(r["add"])) for r in done),
             "first": statistics.median(r["first"] for r in done),
             "last": statistics.median(r["last"] for r in done),
             "tracks_docs": statistics.median(float(np.median(r["tracks_docs"])) for r in done),
             "docs": statistics.median(float(np.median(r["docs"])) for r in done),
             "batch": statistics.median(batch[linking]),
             "memory": done[0]["memory"]}
        for key in done[0]["parts"]:
            f[key] = statistics.median(float(np.median(r["parts"][key])) for r in done)
            f[key + "_mean"] = statistics.median(float(np.mean(r["parts"][key])) for r in done)
        f["looks"] = {fraction: tuple(statistics.median(r["looks"][fraction][k] for r in done) for k in range(3))
                      for fraction in done[0]["looks"]}
        f["batch_per_event"] = f["batch"] / len(results)
        figures[linking] = f
    return figures


def _points_of(state, results) -> np.ndarray:
    """The sample point of each result, in order (each read once)."""
    points = state.placement.points()
    by_seq = dict(zip(points["seq_num"], points["point"]))
    return np.array([by_seq[r.seq_num] for r in results], dtype=np.int64)


def print_linking(rows: int, cols: int, peaks: int, repeats: int, figures: dict) -> None:
    ms = 1e3
    print(f"live placement + linking (RunState.add) per event: {rows} x {cols} grid ({figures['events']} events), "
          f"{peaks} peaks/event ({figures['features']} features), search range 5 px; medians of {repeats} interleaved "
          f"repeats")
    print(f"{'linking':<30} {'add ms':>8} {'mean ms':>8} {'place ms':>9} {'link ms':>8} {'pos ms':>10} "
          f"{'rest ms':>8} {'1st 10% ms':>11} {'last 10% ms':>12} {'tracks docs ms':>15} {'batch s':>8} "
          f"{'batch ms/ev':>12} {'extra ms/ev':>12}")
    for linking in ("sample", "trackpy"):
        f = figures[linking]
        label = "sample" if linking == "sample" else f"trackpy (memory={f['memory']})"
        rest = f["median"] - f["placement"] - f["linker"] - f["coordinates"]
        print(f"{label:<30} {ms * f['median']:>8.3f} {ms * f['mean']:>8.3f} {ms * f['placement']:>9.3f} "
              f"{ms * f['linker']:>8.3f} {ms * f['coordinates']:>10.3f} {ms * rest:>8.3f} {ms * f['first']:>11.3f} "
              f"{ms * f['last']:>12.3f} {ms * f['tracks_docs']:>15.3f} {f['batch']:>8.2f} "
              f"{ms * f['batch_per_event']:>12.3f} {ms * (f['median'] - f['batch_per_event']):>12.3f}")
    for linking in ("sample", "trackpy"):
        same, live, batch = figures["checks"][linking]
        print(f"{linking}: live tracks = batch linking as a partition: {'yes' if same else 'NO'} "
              f"({live} particles live, {batch} batch)")
    print("live maps on demand (RunState.snapshot, what pipe.results() does during a run; min_frames=3):")
    for linking in ("sample", "trackpy"):
        looks = figures[linking]["looks"]
        print(f"  {linking:<8} " + "; ".join(f"after {fraction:.0%} of the run {ms * t:.0f} ms ({p:.0f} maps, {g:.0f} grains)"
                                            for fraction, (t, p, g) in sorted(looks.items())))


# ------------------------------------------------------------------------------------------

def _shape(text: str) -> tuple[int, int]:
    rows, cols = (int(n) for n in text.lower().split("x"))
    return rows, cols


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_live", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--section", choices=("all", "callback", "linking"), default="all")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported (default 3)")
    parser.add_argument("--grid", type=_shape, default=(16, 12), help="callback: the grid_scan's points (default 16x12)")
    parser.add_argument("--detector", type=_shape, default=(1024, 1024), help="callback: detector shape (default 1024x1024)")
    parser.add_argument("--frames", type=int, default=5, help="callback: frames per point (default 5)")
    parser.add_argument("--link-grid", type=_shape, default=(100, 100), help="linking: the grid (default 100x100)")
    parser.add_argument("--peaks", type=int, default=50, help="linking: peaks per event (default 50)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat each (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        scan, link_grid, peaks = QUICK_SCAN, (6, 5), 5
    else:
        scan, link_grid, peaks = Scan(grid=args.grid, detector=args.detector, frames=args.frames), args.link_grid, args.peaks
    if args.section in ("all", "callback"):
        print_callback(scan, args.repeats, callback_section(scan, args.repeats))
    if args.section == "all":
        print()
    if args.section in ("all", "linking"):
        print_linking(*link_grid, peaks, args.repeats, linking_section(*link_grid, peaks, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
