"""Grains from particles (:mod:`streamcrystal.science.grains`), checked against independent truths:
the simulator's grains (which grain, which Bragg peaks, which footprint), grains built here
point by point, the three real grains of ``reference/CG_0046_grain_maps.nc``, and one simulated
scan run through the seed's pipeline.

Per-peak maps are made as a beamline makes them: each Bragg peak of a grain follows the grain's
intensity profile (its illuminated volume, the same for all its peaks, different from grain to
grain) times its own structure factor, with noise on every intensity; points below the detection
threshold are not seen. A peak that dips below the threshold across a band of its grain comes out
as several particles (the connected pieces of what is seen), at the same detector position up to
a fraction of a pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from streamcrystal.science.grains import DEFAULTS, grain_label_map, grain_maps, grain_maps_to_xarray, group_grains
from streamcrystal.sim.sample import CrystalRod

REFERENCE = Path(__file__).with_name("data") / "CG_0046_grain_maps.nc"  # real maps, see data/README.md
THRESHOLD = 250.0  # counts: detection threshold of the simulated peaks (the sim's minmass is ~350)
REAL_FLOOR = 20.0  # the real maps' noise floor: every value 3 points away from a grain is below 18.4


@dataclass
class TruthGrain:
    """A grain as the simulator describes it (``streamcrystal.sim.sample.Grain``): footprint,
    intensity profile (grid-shaped, 0 outside) and detector positions (row, col) of its peaks."""

    footprint: np.ndarray
    intensity: np.ndarray
    peaks: np.ndarray


@dataclass
class Particles:
    maps: np.ndarray  # (n, rows, cols)
    positions: np.ndarray  # (n, 2)
    grain: np.ndarray  # (n,) true grain index
    peak: np.ndarray  # (n,) true Bragg peak (global index)

    def seen_footprint(self, k: int) -> np.ndarray:
        """Where any peak of grain ``k`` was seen: its footprint, less a band where all its peaks dipped."""
        return (self.maps[self.grain == k] > 0).any(axis=0)


def ellipse(shape, centre, radii) -> np.ndarray:
    rows, cols = np.indices(shape)
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1


def textured(footprint: np.ndarray, rng, peak: float = 1500.0) -> np.ndarray:
    """A grain's own intensity profile: a dome (1 at its centre, 0.6 at its edge, like the sim's)
    times a smooth random texture (+-15 %), so that no two grains have the same profile."""
    rows, cols = np.nonzero(footprint)
    rr, cc = np.indices(footprint.shape)
    rho2 = ((rr - rows.mean()) / (np.ptp(rows) / 2 + 1)) ** 2 + ((cc - cols.mean()) / (np.ptp(cols) / 2 + 1)) ** 2
    texture = np.exp(0.15 * ndimage.gaussian_filter(rng.standard_normal(footprint.shape), 1.5) / 0.2)
    return np.where(footprint, peak * (0.6 + 0.4 * np.clip(1 - rho2, 0, 1)) * texture, 0.0)


def make_particles(grains, rng, *, dips=None, noise=0.05, threshold=THRESHOLD, jitter=0.3) -> Particles:
    """The particles a pipeline would find: one per Bragg peak, or one per piece of a peak that
    dips below ``threshold``. ``dips[(grain, peak)]`` lists row bands ``(start, stop)`` where
    that peak's intensity falls to 5 %."""
    dips = dips or {}
    maps, positions, grain_of, peak_of = [], [], [], []
    peak_index = 0
    for k, grain in enumerate(grains):
        for m, position in enumerate(np.asarray(grain.peaks, float)):
            factor = rng.uniform(0.7, 1.3)  # structure factor
            seen = grain.intensity * factor * (1 + noise * rng.standard_normal(grain.intensity.shape))
            for start, stop in dips.get((k, m), ()):
                seen[start:stop] *= 0.05
            seen = np.where(grain.footprint & (seen >= threshold), seen, 0.0)
            pieces, n_pieces = ndimage.label(seen > 0, structure=np.ones((3, 3)))
            for piece in range(1, n_pieces + 1):
                maps.append(np.where(pieces == piece, seen, 0.0))
                positions.append(position + rng.normal(0, jitter, 2))
                grain_of.append(k)
                peak_of.append(peak_index)
            peak_index += 1
    order = rng.permutation(len(maps))  # the pipeline numbers particles in its own order
    return Particles(np.array(maps)[order], np.array(positions)[order], np.array(grain_of)[order],
                     np.array(peak_of)[order])


def assert_grains_are_the_truth(found, particles: Particles, footprints, min_iou=0.9, *, unseen=()) -> list[float]:
    """Every true grain found once with exactly its own Bragg peaks (each peak one reflection,
    its fragments together), no two merged, grain maps on the true footprints (IoU >= min_iou;
    for the grains in ``unseen``, all of whose peaks dip on a band, exactly where they were seen);
    the label map names the only grain at each point covered by one, and no grain where there is
    none. Returns the IoU of each true grain with its true footprint."""
    def partition(labels):
        return sorted(sorted(np.flatnonzero(labels == v).tolist()) for v in np.unique(labels))

    assert partition(found.labels) == partition(particles.grain), found.table
    assert partition(found.reflections) == partition(particles.peak), found.reflection_table
    assert found.n_grains == len(footprints)
    ious = []
    label_map = found.label_map.reshape(np.shape(footprints[0]))
    for k, footprint in enumerate(footprints):
        grain_id = found.labels[particles.grain == k][0]
        support = found.maps[grain_id - 1].reshape(footprint.shape) > 0
        ious.append((support & footprint).sum() / (support | footprint).sum())
        if k in unseen:
            np.testing.assert_array_equal(support, footprint & particles.seen_footprint(k))
            assert ious[-1] < 1.0
        alone = footprint & (np.sum(footprints, axis=0) == 1) & support
        assert (label_map[alone] == grain_id).all(), f"grain {k}: labels {label_map[alone]}"
    assert (label_map[~np.any(footprints, axis=0)] == 0).all()
    assert min((iou for k, iou in enumerate(ious) if k not in unseen), default=1.0) >= min_iou, ious
    return ious


# -- the scenarios: each gives the particles, the true footprints, and the grains all of whose peaks
#    dip on a band (their maps miss it: nothing saw it). ``seed`` draws the textures, structure
#    factors, noise and positions; the tests use one seed, ``GRAINS_NOTES.md`` sweeps many.

@dataclass
class Scenario:
    particles: Particles
    footprints: list
    unseen: frozenset = frozenset()


def rod_scenario(seed: int, noise: float = 0.05) -> Scenario:
    """The simulator's rod on a 30 x 20 grid: 6 grains of 3 peaks (10-40 points each), some dipping."""
    truth = CrystalRod((30, 20), (1024, 1024), n_grains=6, peaks_per_grain=3, seed=seed).truth
    rng = np.random.default_rng(seed)
    grains = [TruthGrain(g.footprint, g.intensity * textured(g.footprint, rng, 1.0), g.peaks) for g in truth.grains]
    dips = {}
    for k, grain in enumerate(grains):  # bands through each grain's rows
        rows = np.flatnonzero(grain.footprint.any(axis=1))
        third = rows[0] + len(rows) // 3
        if k == 0:  # all its peaks dip on the same band: no peak is whole
            dips.update({(k, m): [(third, third + 1)] for m in range(3)})
        elif k == 1:  # one peak in three fragments
            dips[(k, 0)] = [(third, third + 1), (rows[-1] - 1, rows[-1])]
        elif k == 2:  # no peak whole, each dips on its own band
            dips.update({(k, 0): [(third, third + 1)], (k, 1): [(third + 2, third + 3)]})
    return Scenario(make_particles(grains, rng, dips=dips, noise=noise), [g.footprint for g in truth.grains],
                    frozenset({0}))


def demo_rod_scenario(seed: int) -> Scenario:
    """The demo's rod (16 x 12 grid, grains of 6-13 points), no dips."""
    truth = CrystalRod(n_grains=6, peaks_per_grain=3, seed=seed).truth
    rng = np.random.default_rng(seed + 100)
    grains = [TruthGrain(g.footprint, g.intensity, g.peaks) for g in truth.grains]
    return Scenario(make_particles(grains, rng), [g.footprint for g in truth.grains])


SHAPE = (24, 20)


def grain(rng, centre, radii, peaks) -> TruthGrain:
    footprint = ellipse(SHAPE, centre, radii)
    return TruthGrain(footprint, textured(footprint, rng), np.asarray(peaks, float))


def touching_scenario(seed: int) -> Scenario:
    """Two grains of 3 peaks sharing a boundary, one peak of each at the same pixel, both dipping:
    fragments at one position on both sides of the boundary."""
    rng = np.random.default_rng(seed)
    whole = ellipse(SHAPE, (11, 9.5), (8, 9))  # two grains with a boundary at column 10
    sides = [whole & (np.indices(SHAPE)[1] < 10), whole & (np.indices(SHAPE)[1] >= 10)]
    left = TruthGrain(sides[0], textured(sides[0], rng), np.array([(100, 100), (400, 700), (800, 300)], float))
    right = TruthGrain(sides[1], textured(sides[1], rng), np.array([(101, 101), (600, 200), (250, 850)], float))
    particles = make_particles([left, right], rng, dips={(0, 0): [(9, 10)], (1, 0): [(13, 14)]})
    return Scenario(particles, sides)


def overlapping_scenario(seed: int) -> Scenario:
    """A big grain, one crossing it (30-80 % of the smaller footprint shared), one hidden in it."""
    rng = np.random.default_rng(seed)
    big = grain(rng, (10, 9), (8, 7), [(120, 130), (500, 610), (870, 240)])
    crossing = grain(rng, (15, 15), (5, 4), [(300, 900), (700, 800), (150, 480)])
    hidden = grain(rng, (7, 7), (2.6, 2.6), [(900, 900), (450, 150)])
    particles = make_particles([big, crossing, hidden], rng, dips={(0, 1): [(8, 9)]})
    return Scenario(particles, [g.footprint for g in (big, crossing, hidden)])


def one_and_six_scenario(seed: int) -> Scenario:
    """A 6-peak grain (two peaks dipping) crossed by a 1-peak grain whose peak dips twice: three
    fragments with nothing else of their grain to join them."""
    rng = np.random.default_rng(seed)
    six = grain(rng, (8, 8), (7, 6), [(100 + 130 * m, 200 + 97 * m) for m in range(6)])
    one = grain(rng, (17, 12), (5.5, 6), [(860, 140)])
    dips = {(1, 0): [(15, 16), (19, 20)], (0, 2): [(5, 6)], (0, 4): [(9, 10)]}
    return Scenario(make_particles([six, one], rng, dips=dips), [six.footprint, one.footprint], frozenset({1}))


def one_at_pixel_scenario(seed: int) -> Scenario:
    """A 1-peak grain just below a 6-peak grain (within max_gap), on the pixel of one of its peaks."""
    rng = np.random.default_rng(seed)
    six = grain(rng, (8, 9), (6, 6), [(100 + 130 * m, 200 + 97 * m) for m in range(6)])
    one = grain(rng, (19, 9), (4, 5), [(360.5, 393.5)])
    return Scenario(make_particles([six, one], rng), [six.footprint, one.footprint])


def run(scenario: Scenario, **options):
    return group_grains(scenario.particles.maps, scenario.particles.positions, **options)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grains_of_a_simulated_rod_are_its_true_grains_with_their_own_peaks(seed):
    scenario = rod_scenario(seed)
    assert len(scenario.particles.maps) > 18  # some peaks did come out in fragments
    assert_grains_are_the_truth(run(scenario), scenario.particles, scenario.footprints, unseen=scenario.unseen)


def test_the_default_demo_rod_gives_its_six_grains_of_three_peaks():
    scenario = demo_rod_scenario(0)
    found = run(scenario)
    assert_grains_are_the_truth(found, scenario.particles, scenario.footprints)
    assert found.table["n_reflections"].tolist() == [3] * 6


def test_two_touching_grains_stay_apart_even_where_they_share_a_detector_position():
    scenario = touching_scenario(3)
    left, right = scenario.footprints
    assert (ndimage.binary_dilation(left) & right).sum() >= 10  # they touch along a side
    assert_grains_are_the_truth(run(scenario), scenario.particles, scenario.footprints)


def test_grains_that_overlap_partly_or_hide_a_small_grain_stay_apart():
    scenario = overlapping_scenario(4)
    big, crossing, hidden = scenario.footprints
    share = lambda a, b: (a & b).sum() / min(a.sum(), b.sum())  # noqa: E731
    assert 0.3 <= share(big, crossing) < DEFAULTS["min_overlap"]
    assert share(big, hidden) == 1.0  # footprints cannot tell: only intensities can
    assert_grains_are_the_truth(run(scenario), scenario.particles, scenario.footprints)
    with pytest.raises(AssertionError):  # and they do: without them, the hidden grain is merged
        assert_grains_are_the_truth(run(scenario, min_correlation=-1), scenario.particles, scenario.footprints)


def test_a_one_peak_grain_next_to_a_six_peak_grain():
    scenario = one_and_six_scenario(5)
    six, one = scenario.footprints
    assert 0 < (six & one).sum() < 0.5 * one.sum()
    assert (scenario.particles.grain == 1).sum() == 3
    found = run(scenario)
    assert_grains_are_the_truth(found, scenario.particles, scenario.footprints, unseen=scenario.unseen)
    assert sorted(found.table["n_reflections"]) == [1, 6]


def test_a_one_peak_grain_at_a_pixel_of_a_touching_six_peak_grain_is_not_taken_as_its_fragment():
    scenario = one_at_pixel_scenario(6)
    six, one = scenario.footprints
    assert not (six & one).any()
    assert (ndimage.binary_dilation(six, iterations=2) & one).any()  # within max_gap
    assert_grains_are_the_truth(run(scenario), scenario.particles, scenario.footprints)


def test_where_no_correlation_can_be_measured_coinciding_footprints_decide():
    # binary maps (constant intensities) and tiny grains: footprints alone
    tiny = [TruthGrain(ellipse(SHAPE, centre, (1, 1)), None, np.array(peaks, float))
            for centre, peaks in [((3, 3), [(50, 50), (300, 300)]), ((3, 5), [(600, 50), (50, 600)]),
                                  ((10, 10), [(900, 900), (700, 100), (100, 700)])]]
    maps, grain_of = [], []
    for k, g in enumerate(tiny):
        for _ in g.peaks:
            maps.append(g.footprint.astype(float))
            grain_of.append(k)
    positions = np.concatenate([g.peaks for g in tiny])
    found = group_grains(np.array(maps), positions)
    particles = Particles(np.array(maps), positions, np.array(grain_of), np.arange(len(maps)))
    assert_grains_are_the_truth(found, particles, [g.footprint for g in tiny], min_iou=1.0)


# -- the real maps ------------------------------------------------------------------------------

def load_real():
    """The three real grains: maps above the noise floor, detector (y, x), and each grain's body
    (its largest connected piece above the floor; the few small pieces far away are left out)."""
    with xr.open_dataset(REFERENCE) as ds:
        intensity = ds["intensity"].values
        positions = np.column_stack([ds["y"].values, ds["x"].values]).astype(float)
    seen = np.where(intensity > REAL_FLOOR, intensity, 0.0)
    bodies = []
    for m in seen:
        pieces, _ = ndimage.label(m > 0, structure=np.ones((3, 3)))
        bodies.append(pieces == np.argmax(np.bincount(pieces.ravel())[1:]) + 1)
    return seen, positions, np.array(bodies)


@pytest.fixture(scope="module")
def real():
    return load_real()


def test_the_three_real_grains_are_not_merged(real):
    seen, positions, _ = real
    footprints = seen > 0
    share = max((footprints[a] & footprints[b]).sum() / min(footprints[a].sum(), footprints[b].sum())
                for a, b in [(0, 1), (0, 2), (1, 2)])
    assert share >= DEFAULTS["min_overlap"]  # footprints alone would merge two of them
    found = group_grains(seen, positions)
    assert found.labels.tolist() == [1, 2, 3]
    assert found.label_map.shape == (133 * 33,)


def real_fragments_scenario(real, seed: int, bands=None) -> Scenario:
    """Each real grain's body, dipping below the floor on two row bands: its pieces, each at the
    grain's detector position (+-0.3 px)."""
    seen, positions, bodies = real
    rng = np.random.default_rng(seed)
    if bands is None:  # two bands of 1-2 rows, a third and two thirds down each body
        bands = []
        for body in bodies:
            rows = np.flatnonzero(body.any(axis=1))
            bands.append([(r, r + int(rng.integers(1, 3))) for r in rows[0] + np.array([1, 2]) * len(rows) // 3])
    maps, grain_of, where = [], [], []
    for k, (m, body) in enumerate(zip(seen, bodies)):
        dipped = np.where(body, m, 0.0)
        for start, stop in bands[k]:
            dipped[start:stop] = 0.0
        pieces, n = ndimage.label(dipped > 0, structure=np.ones((3, 3)))
        for piece in range(1, n + 1):
            maps.append(np.where(pieces == piece, dipped, 0.0))
            where.append(positions[k] + rng.normal(0, 0.3, 2))
            grain_of.append(k)
    particles = Particles(np.array(maps), np.array(where), np.array(grain_of), np.array(grain_of))
    return Scenario(particles, list(bodies), frozenset({0, 1, 2}))


def real_peaks_scenario(real, seed: int, noise: float = 0.1) -> Scenario:
    """Three Bragg peaks per real grain: its real map times a structure factor, with noise; some dip."""
    seen, positions, bodies = real
    rng = np.random.default_rng(seed)
    offsets = np.array([[0, 0], [700, -400], [-300, 500]])
    grains = [TruthGrain(body, np.where(body, m, 0.0), positions[k] + offsets)
              for k, (m, body) in enumerate(zip(seen, bodies))]
    dips = {(0, 1): [(70, 72)], (1, 0): [(60, 61)], (2, 2): [(80, 81), (100, 102)]}
    return Scenario(make_particles(grains, rng, dips=dips, threshold=REAL_FLOOR, noise=noise), list(bodies))


def test_fragments_of_the_real_grains_regroup_into_the_three_grains(real):
    scenario = real_fragments_scenario(real, 8, bands=[[(60, 61), (75, 77)], [(55, 56), (70, 71)],
                                                       [(65, 66), (90, 92)]])
    assert len(scenario.particles.maps) >= 9  # three or more fragments of each
    ious = assert_grains_are_the_truth(run(scenario), scenario.particles, scenario.footprints, unseen=scenario.unseen)
    assert min(ious) >= 0.9  # the dip bands are all they miss


def test_real_grains_with_several_noisy_peaks_each_regroup_into_the_three_grains(real):
    scenario = real_peaks_scenario(real, 9)
    assert len(scenario.particles.maps) > 9
    assert_grains_are_the_truth(run(scenario), scenario.particles, scenario.footprints)


# -- end to end: the seed's pipeline on a simulated scan ----------------------------------------

@pytest.mark.slow
def test_grains_of_a_scan_mapped_by_the_pipeline_are_the_simulated_grains():
    from bluesky import RunEngine

    from streamcrystal.demo import default_minmass
    from streamcrystal.graph.files import load_pipeline
    from streamcrystal.sim import simulate_scan

    scan = dict(grid_shape=(10, 8), detector_shape=(256, 256), frames_per_point=3, n_grains=3, peaks_per_grain=2,
                min_peak_distance=60, seed=2)  # seed 2: grains that touch on the grid
    rod = CrystalRod(scan["grid_shape"], scan["detector_shape"],
                     **{k: v for k, v in scan.items() if k not in ("grid_shape", "detector_shape")})
    row, col = np.argwhere(rod.truth.empty)[0]
    pipeline_file = load_pipeline("peak_tracking")
    parameters = {**pipeline_file.PARAMETERS, "separation": 40}  # peaks 60 px apart on a 256 px detector
    pipe = pipeline_file.make_pipeline(
        subtrahend=rod.frames(int(row), int(col), np.random.default_rng(11)), separation=40,
        minmass=default_minmass(rod, parameters), maxsize=3.0, min_frames=2)
    uid, truth = simulate_scan(RunEngine({}), callbacks=[pipe], **scan)
    results = pipe.results(uid)
    footprints = [g.footprint for g in truth.grains]
    assert any((ndimage.binary_dilation(a) & b).any() for a in footprints for b in footprints if a is not b)

    found = group_grains(results.maps.values, results.particles[["y", "x"]].to_numpy(),
                         ids=results.particles["particle"].to_numpy())
    # each particle's true grain and peak: the simulated peak within 2 px of it
    peaks = np.concatenate([g.peaks for g in truth.grains])
    grain_of_peak = np.repeat(np.arange(len(truth.grains)), [len(g.peaks) for g in truth.grains])
    distance = np.hypot(*(results.particles[["y", "x"]].to_numpy()[:, None, :] - peaks[None]).transpose(2, 0, 1))
    assert (distance.min(axis=1) < 2.0).all()
    nearest = distance.argmin(axis=1)
    assert sorted(nearest) == list(range(len(peaks)))  # every simulated peak is one particle
    particles = Particles(results.maps.values, results.particles[["y", "x"]].to_numpy(), grain_of_peak[nearest],
                          nearest)
    assert_grains_are_the_truth(found, particles, footprints)
    grid = grain_maps_to_xarray(found.maps, {dim: results.maps[dim].values for dim in results.maps.dims[1:]})
    assert grid.dims == ("grain", *results.maps.dims[1:])
    for k, footprint in enumerate(footprints):
        grain_id = found.labels[particles.grain == k][0]
        np.testing.assert_array_equal(grid.sel(grain=grain_id).values > 0, footprint)


# -- outputs, options, errors -------------------------------------------------------------------

def test_grain_maps_are_sums_of_peak_maps_normalised_to_their_maximum():
    maps = np.array([[0.0, 2.0, 4.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 30.0, 60.0]])
    by_hand = np.array([[0.0, 0.5, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 1.0]])
    combined = grain_maps(maps, [1, 1, 2])
    np.testing.assert_allclose(combined, [by_hand[0] + by_hand[1], by_hand[2]])
    assert grain_label_map(combined).tolist() == [1, 1, 1, 2]  # point 2: 1/1.5 of grain 1 beats 0.5 of grain 2


def test_grain_maps_to_xarray_has_the_grid_coordinates_of_the_scan():
    from streamcrystal.science.maps import grid_coords

    rows, cols = grid_coords((4, 3), ((0.0, 0.75), (1.0, 1.5)))
    da = grain_maps_to_xarray(np.arange(24.0).reshape(2, 12), {"sample_y": rows, "sample_x": cols}, grains=[3, 7])
    assert da.dims == ("grain", "sample_y", "sample_x")
    assert da.sel(grain=7, sample_y=0.25, sample_x=1.5).item() == 12 + 3 + 2  # C order: row 1, col 2
    with pytest.raises(ValueError, match=r"do not fit the grid \(4, 2\)"):
        grain_maps_to_xarray(np.ones((2, 12)), {"sample_y": rows, "sample_x": cols[:2]})


def test_non_grid_scans_give_point_positions_and_count_gaps_in_scan_steps():
    # a 1 x 9 line scan given as motor positions in mm (0.25 mm steps): a peak in two fragments
    maps = np.array([[6, 7, 8, 0, 0, 0, 0, 0, 0], [5, 6, 7, 6, 6, 4, 0, 0, 0], [0, 0, 0, 0, 7, 5, 0, 0, 0]], float)
    positions = [(100, 100), (300, 40), (100.5, 99.5)]
    mm = 0.25 * np.arange(9)
    assert group_grains(maps, positions, coords=mm).labels.tolist() == [1, 1, 1]
    assert group_grains(maps, positions, coords=mm, max_gap=1).reflections.tolist() == [1, 2, 3]  # gap of 2 steps


def test_options_are_kept_for_provenance():
    found = group_grains(np.ones((1, 4)), [(1.0, 2.0)], grid_shape=(2, 2), min_correlation=0.7)
    assert found.options == {**DEFAULTS, "min_correlation": 0.7}


@pytest.mark.parametrize("call, message", [
    (lambda: group_grains(np.ones((2, 6)), np.zeros((2, 2))), r"need grid_shape=\(rows, cols\) or coords=\(6, d\)"),
    (lambda: group_grains(np.ones((2, 2, 3)), np.zeros((3, 2))), r"positions of shape \(3, 2\) for 2 particle maps"),
    (lambda: group_grains(np.array([[1.0, np.nan]]), [(0, 0)], grid_shape=(1, 2)), r"particle 0 .*holds nan"),
    (lambda: group_grains(np.ones((2, 2, 3)), np.zeros((2, 2)), grid_shape=(3, 2)), r"grid_shape \(3, 2\) differs"),
    (lambda: group_grains(np.ones((2, 4)), np.zeros((2, 2)), grid_shape=(2, 2), ids=[5, 5]), "id 5 appears 2 times"),
    (lambda: group_grains(np.ones((1, 4)), [(0, 0)], grid_shape=(2, 2), min_overlap=1.5),
     r"min_overlap=1.5 .*\(0, 1\]"),
    (lambda: group_grains(np.ones((1, 4)), [(0, 0)], grid_shape=(2, 2), min_points=2), "min_points=2"),
])
def test_bad_input_is_refused_with_what_and_how_to_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()
