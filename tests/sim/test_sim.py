"""The simulated crystal-rod scan: a real RunEngine's documents checked against the ground truth."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from streamcrystal.sim import make_devices, simulate_scan
from streamcrystal.sim.sample import EDGE_FRACTION, PEAK_MAX_RANGE, CrystalRod

SMALL = dict(grid_shape=(6, 5), detector_shape=(256, 256), frames_per_point=2, n_grains=2, peaks_per_grain=2,
             min_peak_distance=60)


def run_small(**kwargs):
    docs = []
    uid, truth = simulate_scan(callbacks=[lambda name, doc: docs.append((name, doc))], **{**SMALL, **kwargs})
    return uid, truth, docs


def events(docs, stream):
    descriptors = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == stream}
    return [d for n, d in docs if n == "event" and d["descriptor"] in descriptors]


def images_by_seq_num(docs, stream="primary"):
    return {e["seq_num"]: e["data"]["dexela_image"] for e in events(docs, stream)}


def spot_snr(image: np.ndarray, peak) -> float:
    """Signal-to-noise of the 5 x 5 box sum at ``peak`` over the local background: median and
    standard deviation of the pixels 8 to 20 px away (on the frame-averaged image)."""
    r, c = np.round(peak).astype(int)
    window = image[r - 20:r + 21, c - 20:c + 21].astype(float)
    ring = np.ones(window.shape, bool)
    ring[12:29, 12:29] = False
    box = window[18:23, 18:23]
    return float((box - np.median(window[ring])).sum() / (window[ring].std() * 5))


@pytest.fixture(scope="module")
def small_scan():
    return run_small(seed=3, dark_frames=2)


def test_start_document_has_grid_scan_metadata(small_scan):
    uid, truth, docs = small_scan
    (name, start), = [(n, d) for n, d in docs if n == "start"]
    assert start["uid"] == uid
    assert tuple(start["shape"]) == truth.grid_shape == (6, 5)
    assert [tuple(e) for e in start["extents"]] == [tuple(e) for e in truth.extents] == [(0.0, 3.75), (0.0, 2.75)]
    assert tuple(start["snaking"]) == truth.snaking == (False, True)
    assert tuple(start["motors"]) == ("sample_y", "sample_x")
    assert start["plan_name"] == "grid_scan"
    assert start["sample"] == "simulated crystal rod" and start["simulation_seed"] == 3
    assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "success"


def test_primary_events_carry_frames_as_described(small_scan):
    _, truth, docs = small_scan
    (descriptor,) = [d for n, d in docs if n == "descriptor" and d["name"] == "primary"]
    key = descriptor["data_keys"]["dexela_image"]
    assert key["shape"] == [2, 256, 256] and key["dtype"] == "array" and key["dtype_numpy"] == "<u2"
    assert descriptor["configuration"]["dexela"]["data"]["dexela_shutter_open"] is True
    primary = events(docs, "primary")
    assert [e["seq_num"] for e in primary] == list(range(1, 31))
    for event in primary:
        image = event["data"]["dexela_image"]
        assert image.shape == (2, 256, 256) and image.dtype == np.uint16
        assert event["data"]["dexela_stats1_total"] == pytest.approx(image.mean(axis=0).sum())


def test_seq_num_of_matches_the_motor_positions(small_scan):
    _, truth, docs = small_scan
    axes = [np.linspace(start, stop, n) for (start, stop), n in zip(truth.extents, truth.grid_shape)]
    seen = set()
    for event in events(docs, "primary"):
        y, x = event["data"]["sample_y"], event["data"]["sample_x"]
        row, col = int(np.argmin(abs(axes[0] - y))), int(np.argmin(abs(axes[1] - x)))
        assert (axes[0][row], axes[1][col]) == pytest.approx((y, x))
        assert truth.seq_num_of(row, col) == event["seq_num"]
        assert truth.grid_index_of(event["seq_num"]) == (row, col)
        seen.add((row, col))
    assert len(seen) == 30


def test_grain_peaks_are_bright_exactly_on_their_footprint(small_scan):
    _, truth, docs = small_scan
    images = {k: v.mean(axis=0) for k, v in images_by_seq_num(docs).items()}
    checked_on = checked_off = 0
    for grain, (row, col) in itertools.product(truth.grains, np.ndindex(truth.grid_shape)):
        image = images[truth.seq_num_of(row, col)]
        snrs = [spot_snr(image, peak) for peak in grain.peaks]
        if grain.footprint[row, col]:
            assert min(snrs) > 5, (grain.index, row, col, snrs)
            checked_on += 1
        elif truth.powder[row, col] == 0:  # powder rings may cross a peak position
            assert max(snrs) < 5, (grain.index, row, col, snrs)
            checked_off += 1
    assert checked_on >= 4 and checked_off >= 10
    background = images[truth.background_seq_num]
    assert max(spot_snr(background, p) for g in truth.grains for p in g.peaks) < 5


def test_dark_stream_comes_first_without_beam(small_scan):
    _, truth, docs = small_scan
    dark = events(docs, "dark")
    assert [e["seq_num"] for e in dark] == [1, 2]
    (descriptor,) = [d for n, d in docs if n == "descriptor" and d["name"] == "dark"]
    assert descriptor["configuration"]["dexela"]["data"]["dexela_shutter_open"] is False
    event_names = [(n, d["descriptor"]) for n, d in docs if n == "event"]
    assert {d for _, d in event_names[:2]} == {descriptor["uid"]}
    images = [e["data"]["dexela_image"].mean(axis=0) for e in dark]
    for image in images:
        assert max(spot_snr(image, p) for g in truth.grains for p in g.peaks) < 5
        # no air scattering: the beam centre is no brighter than the corners (air: +30 counts)
        assert abs(image[100:150, 110:160].mean() - image[:40, :40].mean()) < 8
        assert abs(image.mean() - 100) < 5
    assert not np.array_equal(*[e["data"]["dexela_image"] for e in dark])
    background = images_by_seq_num(docs)[truth.background_seq_num].mean(axis=0)
    assert background[100:150, 110:160].mean() - images[0][100:150, 110:160].mean() > 20


def test_same_seed_same_images_other_seed_other_images():
    first, again, other = run_small(seed=7), run_small(seed=7), run_small(seed=8)
    a, b, c = (images_by_seq_num(docs) for _, _, docs in (first, again, other))
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a)
    assert first[0] != again[0]  # two runs, two uids
    assert [g.peaks.tolist() for g in first[1].grains] == [g.peaks.tolist() for g in again[1].grains]
    assert [g.peaks.tolist() for g in first[1].grains] != [g.peaks.tolist() for g in other[1].grains]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kwargs", [{}, {k: v for k, v in SMALL.items() if k != "frames_per_point"}],
                         ids=["default", "small"])
def test_ground_truth_geometry(seed, kwargs):
    rod = CrystalRod(**kwargs, seed=seed)
    truth = rod.truth
    distance = kwargs.get("min_peak_distance", 110.0)
    peaks = np.concatenate([g.peaks for g in truth.grains])
    assert len(peaks) == kwargs.get("n_grains", 6) * kwargs.get("peaks_per_grain", 3)
    gaps = np.hypot(*(peaks[:, None] - peaks[None]).transpose(2, 0, 1))[np.triu_indices(len(peaks), 1)]
    assert gaps.min() >= distance
    margin = max(20, distance / 2 - 1)  # trackpy.locate ignores maxima within separation // 2 - 1 of an edge
    assert (peaks >= margin).all() and (peaks <= np.array(truth.detector_shape) - 1 - margin).all()
    for grain in truth.grains:
        assert ndimage.label(grain.footprint)[1] == 1
        assert grain.footprint.any(axis=1).sum() >= 2
        assert not (grain.footprint & truth.empty).any() and (truth.powder[grain.footprint] == 0).all()
        assert np.array_equal(grain.intensity > 0, grain.footprint)
        inside = grain.intensity[grain.footprint]
        assert inside.min() >= EDGE_FRACTION * PEAK_MAX_RANGE[0] and inside.max() <= PEAK_MAX_RANGE[1]
    assert truth.empty.any() and truth.empty[:, 0].all() and truth.empty[:, -1].all()
    assert truth.empty[truth.grid_index_of(truth.background_seq_num)]
    assert (truth.powder[truth.empty] == 0).all() and truth.powder[-1].max() > 0.9


@pytest.mark.parametrize("snake", [True, False])
def test_seq_num_of_follows_grid_scan_order(snake):
    truth = CrystalRod((4, 3), (64, 64), n_grains=1, peaks_per_grain=1, min_peak_distance=10, snake=snake).truth
    order = [truth.grid_index_of(k) for k in range(1, 13)]
    second_row = [(1, 2), (1, 1), (1, 0)] if snake else [(1, 0), (1, 1), (1, 2)]
    assert order[:6] == [(0, 0), (0, 1), (0, 2), *second_row]
    assert [truth.seq_num_of(*point) for point in order] == list(range(1, 13))
    with pytest.raises(IndexError, match=r"\(4, 0\)"):
        truth.seq_num_of(4, 0)


def test_frames_are_independent_poisson_like_draws():
    rod = CrystalRod((3, 3), (64, 64), frames_per_point=400, n_grains=1, peaks_per_grain=1, min_peak_distance=10)
    frames = rod.frames(1, 1, np.random.default_rng(0)).astype(float)
    mean = rod.mean_image(1, 1)
    assert abs(frames.mean(axis=0) - mean).max() < 6 * np.sqrt(mean.max() / 400)
    ratio = frames.var(axis=0).mean() / mean.mean()
    assert ratio == pytest.approx(1.0, abs=0.03)  # Poisson: variance = mean
    residuals = (frames - mean).reshape(len(frames), -1)
    assert abs(np.corrcoef(residuals[:2])[0, 1]) < 0.05


def test_make_devices_runs_a_users_plan():
    from bluesky import RunEngine
    from bluesky import plans as bp

    rod = CrystalRod((3, 3), (64, 64), frames_per_point=1, n_grains=1, peaks_per_grain=1, min_peak_distance=10)
    slow, fast, dexela = make_devices(rod)
    docs = []
    RunEngine({})(bp.scan([dexela], slow, 0, 0.5, fast, 0.5, 0, 3), lambda n, d: docs.append((n, d)))
    for event in events(docs, "primary"):  # a diagonal of the rod's 0.25 mm grid
        point = round(event["data"]["sample_y"] / 0.25), round(event["data"]["sample_x"] / 0.25)
        expected = rod.mean_image(*point).sum()
        assert event["data"]["dexela_stats1_total"] == pytest.approx(expected, abs=5 * np.sqrt(expected))
    assert dexela.grid_point() == (2, 0)


def test_too_many_peaks_for_the_detector_says_how_to_fix():
    with pytest.raises(ValueError, match=r"use a larger detector \(detector_shape, --detector\), fewer grains"):
        CrystalRod((6, 5), (128, 128), n_grains=4, peaks_per_grain=3, min_peak_distance=60)


@pytest.mark.slow
def test_default_scan_every_footprint_peak_is_located_with_the_seeds_parameters():
    """End to end: the default scan, the seed's ``trackpy.locate`` on each footprint point."""
    import trackpy

    rod = CrystalRod()
    truth = rod.truth
    background = rod.frames(*truth.grid_index_of(truth.background_seq_num), np.random.default_rng(99)).mean(axis=0)
    wanted = {truth.seq_num_of(*p): [g for g in truth.grains if g.footprint[p]] for p in np.ndindex(truth.grid_shape)}
    missed, found = [], 0

    def locate(name, doc):
        nonlocal found
        if name != "event" or not wanted.get(doc["seq_num"]):
            return
        image = np.clip(doc["data"]["dexela_image"].mean(axis=0) - background, 0, None)
        features = trackpy.locate(image, 15, percentile=80, separation=100)[["y", "x"]].to_numpy()
        for grain in wanted[doc["seq_num"]]:
            for peak in grain.peaks:
                ok = len(features) and np.hypot(*(features - peak).T).min() < 2
                found += bool(ok)
                missed.extend([] if ok else [(doc["seq_num"], grain.index, tuple(peak))])

    uid, truth = simulate_scan(callbacks=[locate])
    assert not missed
    assert found == sum(g.footprint.sum() * len(g.peaks) for g in truth.grains)
