"""Bluesky's own plans over the simulated rod (continuous detector), placed and linked, with the
simulator's truth. Also, run as ``python -m tests.science.plans``: both linkers against the
truth on every plan (grains recovered as exactly one particle)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import trackpy
from bluesky import RunEngine
from bluesky import plan_stubs as bps
from bluesky import plans as bp
from bluesky import preprocessors as bpp
from bluesky.utils import RunEngineInterrupted
from cycler import cycler
from scipy.sparse.csgraph import connected_components

from streamcrystal.science.maps import grid_of, scan_memory
from streamcrystal.science.linking import SampleLinker, link_sample_space
from streamcrystal.science.placement import Placement, scan_dimensions, scan_order_memory
from streamcrystal.sim import make_devices
from streamcrystal.sim.sample import CrystalRod

#: The rod: a 12 x 10 grid of 0.5 mm (y 0..5.5, x 0..4.5); grains in y < 3.25, powder below.
ROD = dict(grid_shape=(12, 10), detector_shape=(128, 128), frames_per_point=3, n_grains=3, peaks_per_grain=1,
           min_peak_distance=40, extents=((0.0, 5.5), (0.0, 4.5)))
LOCATE = dict(diameter=9, separation=20, percentile=80)
MINMASS, MAXSIZE, SEARCH_RANGE, NEAR = 180.0, 2.1, 4.0, 2.0


def _pause_after(plan, n_points: int):
    """``plan`` with a pause right after the ``n_points``-th reading (the RunEngine re-takes it)."""
    count = 0

    def mutate(msg):
        nonlocal count
        if msg.command == "save":
            count += 1
            if count == n_points:
                return None, bps.pause()
        return None, None

    return (yield from bpp.plan_mutator(plan, mutate))


def plans(dets, y, x) -> dict:
    """Plan factories (called after the motors are at 0, 0)."""
    def rel_grid():
        yield from bps.mv(y, 1.0, x, 2.0)
        yield from bp.rel_grid_scan(dets, y, -1.0, 2.0, 7, x, -2.0, 2.5, 10, snake_axes=True)

    def scan_at_grain_row():
        yield from bps.mv(y, 1.5)
        yield from bp.scan(dets, x, 0, 4.5, 19)

    path_y = [2 * v for v in (0.0, 0.2, 0.5, 0.7, 0.6, 0.9, 1.1, 1.3, 1.2, 1.0, 0.8, 0.5, 0.3)]
    path_x = [2 * v for v in (0.8, 1.0, 1.1, 0.9, 1.3, 1.4, 1.2, 1.0, 0.7, 0.6, 0.5, 0.6, 0.4)]
    return {
        "grid_scan": lambda: bp.grid_scan(dets, y, 0, 3, 7, x, 0, 4.5, 10),
        "grid_scan snake": lambda: bp.grid_scan(dets, y, 0, 3, 7, x, 0, 4.5, 10, snake_axes=True),
        "rel_grid_scan": rel_grid,
        "list_grid_scan": lambda: bp.list_grid_scan(dets, y, [0, 0.5, 2, 3], x, [0, 0.2, 0.4, 1.5, 2.5], snake_axes=True),
        "list_grid_scan descending": lambda: bp.list_grid_scan(dets, y, [3.0, 2.5, 2.0, 1.0, 0.5, 0.0], x,
                                                               [4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.0]),
        "scan": scan_at_grain_row,
        "list_scan": lambda: bp.list_scan(dets, y, path_y, x, path_x),
        "spiral_square": lambda: bp.spiral_square(dets, x, y, 2.25, 1.5, 4.5, 3.0, 10, 7),
        "spiral": lambda: bp.spiral(dets, x, y, 2.2, 1.6, 4.4, 3.0, 0.4, 6),
        "spiral_fermat": lambda: bp.spiral_fermat(dets, x, y, 2.2, 1.6, 4.4, 3.0, 0.3, 1),
        "scan_nd": lambda: bp.scan_nd(dets, cycler(y, np.linspace(0, 3, 7)) * cycler(x, np.linspace(4.5, 0, 10))),
        "grid_scan paused": lambda: _pause_after(bp.grid_scan(dets, y, 0, 3, 7, x, 0, 4.5, 10, snake_axes=True), 24),
    }


@dataclass
class Run:
    """A plan run, placed and linked live; readings keyed by point (the current one only)."""
    rod: CrystalRod
    start: dict
    placement: Placement
    linker: SampleLinker
    readings: dict = field(default_factory=dict)     # point -> (seq_num, (y, x), features DataFrame)
    superseded: list = field(default_factory=list)   # the Readings superseded
    seq_nums: list = field(default_factory=list)

    def features(self) -> pd.DataFrame:
        """Current readings' features with ``point``, ``feature``, ``frame`` (seq_num)."""
        tables = [f.assign(point=p, feature=np.arange(len(f)), frame=s) for p, (s, _, f) in self.readings.items()]
        return pd.concat(tables, ignore_index=True).sort_values(["point", "feature"], ignore_index=True)

    def truth(self) -> tuple[np.ndarray, np.ndarray]:
        """Points (sorted) and which grains the beam hit at each: bool (n_points, n_grains)."""
        points = np.array(sorted(self.readings))
        yx = np.array([self.readings[p][1] for p in points])
        return points, self.rod.grains_at(yx[:, 0], yx[:, 1])


def run_plan(name: str, *, seed: int = 2) -> Run:
    rod = CrystalRod(**ROD, seed=seed)
    y, x, dexela = make_devices(rod, continuous=True)
    background = rod.frames_at(6.0, 0.0, np.random.default_rng(99)).mean(axis=0)   # an air point
    state: dict = {}

    def consume(kind, doc):
        if kind == "start":
            state["start"] = doc
        elif kind == "descriptor" and doc["name"] == "primary":
            dims = scan_dimensions(state["start"])
            keys = doc["data_keys"]
            state["run"] = Run(rod, state["start"], Placement.from_start(state["start"], precision={d: keys[d].get("precision") for d in dims if d in keys}),
                               None)
            state["run"].linker = SampleLinker(state["run"].placement.neighbours, SEARCH_RANGE)
        elif kind == "event" and "run" in state:
            run = state["run"]
            data = doc["data"]
            position = tuple(data[d] for d in run.placement.dimensions)
            yx = (data.get("sample_y", y.position), data.get("sample_x", x.position))
            placed = run.placement.add(doc["seq_num"], position)
            for old in placed.supersedes:
                run.superseded.append(old)
                if old.point != placed.point:
                    run.readings.pop(old.point, None)
                    run.linker.discard(old.point)
            image = np.clip(data["dexela_image"].mean(axis=0) - background, 0, None)
            found = trackpy.locate(image, **LOCATE)
            found = found[(found["mass"] >= MINMASS) & (found["size"] <= MAXSIZE)].reset_index(drop=True)
            run.linker.add(placed.point, found[["y", "x"]].to_numpy())
            run.readings[placed.point] = (doc["seq_num"], yx, found)
            run.seq_nums.append(doc["seq_num"])

    RE = RunEngine({})
    plan = plans([dexela], y, x)[name]()
    try:
        RE(plan, consume)
    except RunEngineInterrupted:
        RE.resume()
    return state["run"]


def grain_outcome(run: Run, tracks: pd.DataFrame) -> list[dict]:
    """Per grain peak: the points where the grain is, where its peak was found, the particles
    holding those features, whether they hold anything else, and how many connected patches
    (under the placement's neighbours) the grain's points make."""
    points, covers = run.truth()
    out = []
    for grain in run.rod.truth.grains:
        peak = grain.peaks[0]
        near = np.hypot(tracks["y"] - peak[0], tracks["x"] - peak[1]) < NEAR
        covered = set(points[covers[:, grain.index]].tolist())
        particles = set(tracks.loc[near, "particle"])
        foreign = tracks["particle"].isin(particles) & ~near
        index = {p: i for i, p in enumerate(sorted(covered))}
        edges = [(index[p], index[q]) for p in covered for q in run.placement.neighbours(p) if q in index]
        graph = np.zeros((len(index), len(index)))
        for i, j in edges:
            graph[i, j] = 1
        patches = connected_components(graph, directed=False)[0] if index else 0
        out.append({"grain": grain.index, "covered": covered, "found": set(tracks.loc[near, "point"]),
                    "particles": particles, "foreign": int(foreign.sum()), "patches": patches})
    return out


def one_particle(outcome: dict) -> bool:
    return outcome["found"] == outcome["covered"] and len(outcome["particles"]) == 1 and not outcome["foreign"]


def figures(names=None) -> pd.DataFrame:
    rows = []
    for name in names or plans(None, None, None):
        run = run_plan(name)
        features = run.features()
        sample = link_sample_space(features, SEARCH_RANGE, neighbours=run.placement.neighbours)
        memory = scan_order_memory(run.placement)
        shape, snaking, _, _ = grid_of(run.start, len(run.seq_nums))
        today = scan_memory(shape, snaking)
        ordered = features.sort_values("frame", kind="stable")
        linked = [trackpy.link(ordered, SEARCH_RANGE, memory=m) if len(features) else sample for m in (memory, today)]
        both = [grain_outcome(run, t) for t in (sample, *linked)]
        rows.append({"plan": name, "points": run.placement.n_points, "features": len(features), "grid": run.placement.is_grid(),
                     "grains seen": sum(bool(o["covered"]) for o in both[0]),
                     "seen on one patch": sum(o["patches"] == 1 for o in both[0]),
                     "sample-space": sum(map(one_particle, both[0])),
                     "trackpy, memory from positions": sum(map(one_particle, both[1])), "memory": memory,
                     "trackpy, memory of maps.grid_of (today)": sum(map(one_particle, both[2])), "today": today})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    trackpy.quiet()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(figures().to_string(index=False))
