"""The fast peak finder gives exactly trackpy.locate's answer (issue 5).

Equivalence is tested end to end (the DataFrame, compared exactly, and trackpy's warnings)
on many seeded images, and step by step against the trackpy/scipy/numpy code each kernel
replaces, each kernel strategy forced in turn.
"""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import warnings

import numba
import numpy as np
import pandas as pd
import pytest
import trackpy
from scipy import ndimage
from trackpy.find import percentile_threshold as trackpy_percentile
from trackpy.masks import binary_mask, gaussian_kernel
from trackpy.preprocessing import bandpass, convert_to_int
from trackpy.uncertainty import measure_noise

from streamcrystal.errors import ShapeMismatchError
from streamcrystal.graph.steps import process_step
from streamcrystal.records import FrameTask
from streamcrystal.science import fastlocate, peaks
from streamcrystal.science.fastlocate import engine
from streamcrystal.science.fastlocate._bandpass import bandpass_kernel
from streamcrystal.science.fastlocate._maxima import maxima_kernel
from streamcrystal.science.fastlocate._noise import (
    background_kernel,
    covered_kernel,
    pairwise_sum,
)
from streamcrystal.science.fastlocate.percentile import percentile_threshold
from streamcrystal.science.frames import (
    average_frames,
    clip_negative,
    process_frames,
    processed_image,
    subtract_background,
    supports_fused,
)
from streamcrystal.sim.sample import CrystalRod

# with pytest-xdist: on one worker, so that each kernel's numba compilation for each dtype (tens
# of seconds in all, on a clean checkout) is done once, not by both workers at the same time
pytestmark = pytest.mark.xdist_group("fastlocate")


def numpy_process_frames(frames, background=None):
    """The three numpy steps the fused kernel replaces; a NaN pixel (of the background) is masked: zero."""
    image = clip_negative(subtract_background(average_frames(frames), background))
    return np.where(np.isnan(image), 0.0, image)


def _outcome(locate, image, diameter, **kwargs):
    """(result or exception, warning messages) of one call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = locate(image, diameter, **kwargs)
        except Exception as err:  # compared with trackpy's below
            result = err
    # ResourceWarnings come from the garbage collector (sockets of earlier tests), not the call
    return result, [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]


def assert_identical(found: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same values bit for bit, dtypes, and index and column classes (a RangeIndex is not an Index)."""
    pd.testing.assert_frame_equal(found, expected, check_exact=True, check_index_type=True, check_column_type=True)


def assert_same_as_trackpy(image, diameter, **kwargs):
    """fastlocate.locate == trackpy.locate (and peaks.locate's two engines), exactly."""
    expected, expected_warnings = _outcome(trackpy.locate, image, diameter, **kwargs)
    found, found_warnings = _outcome(fastlocate.locate, image, diameter, **kwargs)
    if isinstance(expected, Exception):
        assert type(found) is type(expected), (found, expected)
    else:
        assert_identical(found, expected)
    assert found_warnings == expected_warnings
    fast, _ = _outcome(peaks.locate, image, diameter, engine="fast", **kwargs)
    slow, _ = _outcome(peaks.locate, image, diameter, engine="trackpy", **kwargs)
    if isinstance(slow, Exception):
        assert type(fast) is type(slow)
    else:
        assert_identical(fast, slow)
    return expected


@functools.lru_cache(maxsize=4)
def _rod(shape: tuple[int, int], seed: int) -> CrystalRod:
    return CrystalRod((6, 5), shape, frames_per_point=3, n_grains=3, peaks_per_grain=2, min_peak_distance=40,
                      seed=seed)


def _simulated(rng, dtype) -> np.ndarray:
    """A processed (dark-subtracted, clipped) simulated detector image, or a raw frame."""
    rod = _rod((int(rng.choice([160, 200])), int(rng.choice([180, 240]))), int(rng.integers(2)))
    row, col = np.argwhere(sum(g.footprint for g in rod.truth.grains))[int(rng.integers(3))]
    frames = rod.frames(row, col, rng)
    if dtype == "uint16":
        return frames[0]
    image = numpy_process_frames(frames, rod.dark_image())
    return image if dtype == "float64" else np.clip(image, 0, 255).astype(np.uint8)


def _drawn(rng, dtype, diameter) -> np.ndarray:
    """trackpy.artificial spots (Gaussian, flat-topped, rings, steps), some at the edges."""
    shape = tuple(int(n) for n in rng.integers(3 * diameter + 10, 3 * diameter + 120, 2))
    n = int(rng.integers(1, 10))
    positions = rng.uniform(0, np.array(shape) - 1, (n, 2))
    if rng.random() < 0.4:  # edge and corner peaks
        positions = np.vstack([positions, [[0, shape[1] // 2], [shape[0] - 1, shape[1] - 2], [2, 2]]])
    feature = str(rng.choice(["gauss", "gauss", "hat", "ring", "step"]))
    extra = {"disc_size": 0.5} if feature == "hat" else {"thickness": 1} if feature == "ring" else {}
    image = trackpy.artificial.draw_spots(shape, positions, max(diameter // 4, 1), noise_level=int(rng.choice([0, 3, 40])),
                                          bitdepth=16, feat_func=feature, **extra)
    if dtype == "uint8":
        return np.clip(image // 64, 0, 255).astype(np.uint8)
    return image.astype(dtype) * (rng.choice([1.0, 1e-3]) if dtype == "float64" else 1)


def _special(rng, dtype) -> np.ndarray:
    shape = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
    kind = rng.choice(["zeros", "flat", "line", "single"])
    image = np.zeros(shape, dtype=dtype)
    if kind == "flat":
        image[...] = 7
    elif kind == "line":
        image[shape[0] // 2] = 200
    elif kind == "single":
        image[shape[0] // 2, shape[1] // 3] = 100
    return image


def random_case(seed: int):
    """An image and trackpy.locate keywords drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    dtype = str(rng.choice(["uint8", "uint16", "float64"]))
    diameter = int(rng.choice(np.arange(3, 32, 2)))
    source = rng.choice(["drawn", "drawn", "simulated", "special"], p=[0.35, 0.25, 0.3, 0.1])
    if source == "simulated":
        image = _simulated(rng, dtype)
    elif source == "drawn":
        image = _drawn(rng, dtype, diameter)
    else:
        image = _special(rng, dtype)
    kwargs = {"percentile": float(rng.choice([64, 80, 50, 30, 99.5, 0, 100], p=[.3, .25, .1, .1, .1, .1, .05]))}
    choices = {
        "separation": [None, 3, diameter + 1, 2 * diameter, (diameter, 1.5 * diameter), 0.5],
        "minmass": [None, 0, 10.0, 500],
        "maxsize": [None, 50.0, 2.5],
        "noise_size": [1, 0, 0.5, 1.7, (1, 0.5)],
        "smoothing_size": [None, diameter + 2, (diameter + 4, diameter)],
        "threshold": [None, 0, 5, 0.01],
        "topn": [None, 1, 3],
        "max_iterations": [10, 1],
    }
    for key, values in choices.items():
        value = values[int(rng.integers(len(values)))] if rng.random() < 0.4 else values[0]
        if value is not None:
            kwargs[key] = value
    return image, diameter, kwargs


@pytest.mark.parametrize("seed", range(48))
def test_same_features_as_trackpy_on_random_images(seed):
    image, diameter, kwargs = random_case(seed)
    reason = fastlocate.fallback_reason(image, diameter, **kwargs)
    assert reason is None or "noise_size" in reason  # only trackpy's own rejections fall back
    assert_same_as_trackpy(image, diameter, **kwargs)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
def test_a_dexela_like_image_with_the_seed_parameters(dtype):
    rod = CrystalRod((6, 5), (300, 420), frames_per_point=5, n_grains=2, peaks_per_grain=2, min_peak_distance=100)
    row, col = np.argwhere(rod.truth.grains[0].footprint)[0]
    image = numpy_process_frames(rod.frames(row, col, np.random.default_rng(7)), rod.dark_image())
    image = image if dtype == "float64" else np.clip(image, 0, np.iinfo(dtype).max).astype(dtype)
    found = assert_same_as_trackpy(image, 15, percentile=80, separation=100)
    assert len(found) >= 2 and fastlocate.fallback_reason(image, 15, percentile=80, separation=100) is None


def test_views_squeezable_and_fortran_images_give_the_same_answer():
    image = trackpy.artificial.draw_spots((120, 100), [(30, 40), (80, 60)], 3, noise_level=20, bitdepth=16)
    for view in (image[::2], image[:, 10:], image[None], np.asfortranarray(image), image.astype(">u2")):
        assert_same_as_trackpy(view, 9, separation=12)


# --- what falls back, and trackpy's errors --------------------------------------------------

def test_unsupported_calls_fall_back_to_trackpy_and_log_once(monkeypatch, caplog):
    monkeypatch.setattr(fastlocate, "_logged", set())
    caplog.set_level(logging.INFO, logger="streamcrystal")
    image = trackpy.artificial.draw_spots((64, 64), [(20, 30), (40, 40)], 3, noise_level=10)
    for _ in range(2):
        found = fastlocate.locate(image, 7, preprocess=False)
        pd.testing.assert_frame_equal(found, trackpy.locate(image, 7, preprocess=False), check_exact=True)
    records = [r for r in caplog.records if "preprocess=False" in r.getMessage()]
    assert len(records) == 1 and "trackpy.locate" in records[0].getMessage()
    volume = np.zeros((9, 32, 32), np.uint8)
    volume[4, 16, 16] = 200
    pd.testing.assert_frame_equal(fastlocate.locate(volume, 5), trackpy.locate(volume, 5), check_exact=True)
    assert any("3-D images" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kwargs, reason", [
    ({"invert": True}, "invert=True"),
    ({"characterize": False}, "characterize=False"),
    ({"engine": "python"}, "engine='python'"),
    ({"filter_after": True}, "filter_after=True"),
    ({"percentile": np.float32(64)}, "percentile"),
])
def test_fallback_reasons_are_named(kwargs, reason):
    image = np.ones((32, 32), np.uint16)
    assert reason in fastlocate.fallback_reason(image, 7, **kwargs)
    assert fastlocate.fallback_reason(image.astype(np.int32), 7).startswith("images of dtype int32")


@pytest.mark.parametrize("diameter, kwargs", [
    (8, {}),  # even diameter
    (7, {"noise_size": 7}),  # noise not below smoothing
    (7, {"smoothing_size": 8}),  # even smoothing size
    (7, {"filter_before": True}),
    ((5, 7), {"maxsize": 3}),  # anisotropic size filter
    (7, {"separation": (3, 4, 5)}),  # wrong tuple length
])
def test_trackpys_errors_are_raised_too(diameter, kwargs):
    image = trackpy.artificial.draw_spots((48, 48), [(20, 20)], 3, noise_level=5)
    with pytest.raises(Exception) as expected:
        trackpy.locate(image, diameter, **kwargs)
    with pytest.raises(type(expected.value)):
        fastlocate.locate(image, diameter, **kwargs)


def test_images_with_nan_or_inf_get_trackpys_answer():
    image = trackpy.artificial.draw_spots((48, 48), [(20, 20), (30, 35)], 3, noise_level=5).astype(float)
    for bad in (np.nan, np.inf):
        corrupted = image.copy()
        corrupted[5, 5] = bad
        assert_same_as_trackpy(corrupted, 7)


# --- each kernel against what it replaces -----------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
@pytest.mark.parametrize("shape, noise, smoothing", [
    ((47, 61), (1, 1), (15, 15)), ((3, 50), (1, 0.5), (15, 7)), ((50, 2), (1.3, 0), (5, 31)),
    ((29, 33), (0.5, 2.2), (3, 9)), ((64, 70), (0, 1), (1, 31)),
])
def test_bandpass_is_bit_identical_to_scipys(dtype, shape, noise, smoothing):
    rng = np.random.default_rng(len(shape) + shape[0])
    scale = {"uint8": 255, "uint16": 65535, "float64": 1000.0}[dtype]
    raw = (rng.random(shape) ** 4 * scale).astype(dtype)
    threshold = 1 if dtype != "float64" else 1 / 255
    expected = bandpass(raw, noise, smoothing, threshold)
    found = np.empty(shape)
    weights = [gaussian_kernel(s, 4) if s > 0 else np.empty(0) for s in noise]
    image_max, nonfinite = bandpass_kernel(raw, *weights, *smoothing, dtype != "float64", float(threshold), found)
    np.testing.assert_array_equal(found.view(np.uint64), expected.view(np.uint64))
    assert image_max == expected.max() and nonfinite == 0
    p = fastlocate.plan(raw, 3, noise_size=noise, smoothing_size=smoothing)
    scale_factor, integer = convert_to_int(expected, p.int_dtype)
    found_integer, found_scale, histogram = engine.bandpassed(p)
    np.testing.assert_array_equal(found_integer, integer)
    assert found_scale == scale_factor
    np.testing.assert_array_equal(histogram, np.bincount(integer.ravel(), minlength=np.iinfo(p.int_dtype).max + 1))


@pytest.mark.parametrize("seed", range(6))
def test_percentile_threshold_is_numpys(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, [4, 256, 65536][seed % 3], int(rng.integers(1, 5000))).astype([np.uint8, np.uint8, np.uint16][seed % 3])
    histogram = np.bincount(values, minlength=np.iinfo(values.dtype).max + 1)
    for percentile in (0, 1, 33.3, 50, 64, 80, 99.99, 100, np.float64(64), np.int64(80)):
        expected = trackpy_percentile(values, percentile)
        found = percentile_threshold(histogram, percentile)
        assert found == expected or (np.isnan(found) and np.isnan(expected))


@pytest.mark.parametrize("strategy", [0, 1, 2])  # auto, candidates, dilation
def test_maxima_equal_trackpys_grey_dilation(strategy):
    rng = np.random.default_rng(strategy)
    for shape, sizes in [((60, 70), (5, 8)), ((40, 1100), (7, 141)), ((300, 700), (141, 2)), ((9, 9), (0, 1)),
                         ((30, 530), (30, 30))]:
        for dtype in (np.uint8, np.uint16):
            image = (rng.random(shape) ** 6 * 250).astype(dtype)
            threshold = float(rng.choice([0.5, 3, 20.7]))
            margin = (int(rng.integers(0, 5)), int(rng.integers(0, 5)))
            dilated = ndimage.grey_dilation(image, sizes, mode="constant")
            maxima = np.argwhere((image == dilated) & (image > threshold))
            inside = np.all((maxima >= margin) & (maxima < np.array(shape) - margin), axis=1)
            coords, n_maxima = maxima_kernel(image, *sizes, image.dtype.type(np.floor(threshold)), *margin,
                                             np.empty_like(image), strategy)
            np.testing.assert_array_equal(coords, maxima[inside])
            assert n_maxima == len(maxima)


@pytest.mark.parametrize("strategy", [0, 1, 2])  # auto, painting, row distances
def test_background_equals_trackpys_measure_noise(strategy):
    rng = np.random.default_rng(10 + strategy)
    for density in (0.0, 0.002, 0.05, 0.5, 1.0):
        for dtype in ("uint8", "uint16", "float64"):
            shape = (int(rng.integers(5, 90)), int(rng.integers(5, 90)))
            image = (rng.random(shape) < density).astype(np.uint8)
            raw = (rng.random(shape) * 300).astype(dtype)
            radius = (int(rng.integers(1, 9)),) * 2
            covered = np.empty(shape, np.uint8)
            covered_kernel(image, engine._half_widths(radius), int(image.sum()), covered, strategy)
            np.testing.assert_array_equal(covered.astype(bool), ndimage.binary_dilation(image, binary_mask(radius, 2)))
            n, mean, std = background_kernel(raw, covered, np.empty(raw.size))
            np.testing.assert_array_equal([mean, std], np.array(measure_noise(image, raw, radius), float))


def test_pairwise_sum_is_numpys_to_the_last_bit():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 9, 127, 128, 129, 1000, 8193, 65537, 1_000_003):
        values = rng.random(n) * 1e3 - 1
        assert 0.0 + pairwise_sum(values, 0, n) == np.add.reduce(values)


# --- frames: one pass, same bits ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint16", "uint8", "int16", "uint32"])
@pytest.mark.parametrize("leading", [(), (1,), (5,), (2, 3)])
def test_fused_frames_equal_average_subtract_clip_bit_for_bit(dtype, leading):
    rng = np.random.default_rng(len(leading))
    info = np.iinfo(dtype)
    frames = rng.integers(max(info.min, -500), min(info.max, 70000), (*leading, 17, 23)).astype(dtype)
    backgrounds = [None, rng.normal(100, 30, (17, 23)), np.full((17, 23), np.nan), np.full((17, 23), -np.inf)]
    for background in backgrounds:
        assert supports_fused(frames, background)
        expected = numpy_process_frames(frames, background)
        found, problem = processed_image(frames, background)[:2]
        np.testing.assert_array_equal(found.view(np.uint64), expected.view(np.uint64))
        mean = average_frames(frames)
        unmasked = ~np.isnan(mean - (0.0 if background is None else background))
        if unmasked.any():  # the problem is None exactly when the mean is nonzero where it is not masked
            assert (problem is None) == bool(np.any(mean[unmasked]))
        else:
            assert problem.startswith("nothing usable")
    assert not supports_fused(frames.astype(float), None)
    np.testing.assert_array_equal(process_frames(frames.astype(float)), numpy_process_frames(frames.astype(float)))


def test_process_step_fuses_and_keeps_the_three_steps_answers():
    frames = np.random.default_rng(1).integers(0, 500, (5, 20, 30)).astype(np.uint16)
    background = np.full((20, 30), 250.0)
    task = FrameTask("uid", 1, "primary", frames=frames, background=background)
    fused = process_step(task)
    assert fused.problem is None
    np.testing.assert_array_equal(fused.image, numpy_process_frames(frames, background))
    zero = process_step(FrameTask("uid", 2, "primary", frames=np.zeros((5, 20, 30), np.uint16)))
    assert zero.problem == "process_step failed: ValueError: image is all zero"
    mismatch = process_step(FrameTask("uid", 3, "primary", frames=frames, background=np.zeros((3, 3))))
    assert mismatch.problem.startswith(f"process_step failed: {ShapeMismatchError.__name__}")


# --- packaging: lazy compilation, warm-up, self-check, benchmark --------------------------------

def test_importing_the_package_compiles_nothing():
    code = "import sys, streamcrystal; print('numba' in sys.modules, 'trackpy' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.split() == ["False", "False"]
    # the science modules load numba, but compile (or load from numba's cache) only when first called
    code = ("import streamcrystal.science.peaks, streamcrystal.science.frames as f, "
            "streamcrystal.science.fastlocate._bandpass as b; "
            "print(len(f._average_subtract_clip.signatures), len(b.bandpass_kernel.signatures))")
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert output.split() == ["0", "0"]


def test_warmup_is_idempotent_and_the_selfcheck_passes():
    import time

    from streamcrystal.science.fastlocate.selfcheck import selfcheck_problem

    fastlocate.warmup()
    start = time.perf_counter()
    fastlocate.warmup()
    assert time.perf_counter() - start < 0.05
    assert all(selfcheck_problem(dtype) is None for dtype in ("uint8", "uint16", "float64"))


def test_the_pipeline_uses_the_fast_engine_by_default():
    import streamcrystal

    pipe = streamcrystal.peak_tracking("dexela_image", diameter=15, search_range=50)
    assert pipe.parameters["engine"] == "fast"


def test_bench_locate_quick_prints_the_ratios(capsys):
    from benchmarks import bench_locate

    assert bench_locate.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "ratio locate 256 x 256:" in out and "ratio locate 384 x 486:" in out
    assert "ratio per-event 384 x 486:" in out
    assert "peak RSS" in out and "NO" not in out


# --- scale: exact division, bands of rows, threads ----------------------------------------------

@pytest.mark.parametrize("divisor", [3, 5, 7, 9, 15, 17, 31, 101, 255, 1023, 65535])
def test_division_without_a_divide_rounds_as_the_division(divisor):
    from streamcrystal.science.fastlocate._division import divide

    divide_all = numba.njit(lambda values, d: np.array([divide(v, d, 1.0 / d) for v in values]))
    rng = np.random.default_rng(divisor)
    values = np.concatenate([
        rng.random(200_000) * 10.0 ** rng.integers(-200, 200, 200_000),  # any magnitude
        np.floor(rng.random(200_000) * 2.0 ** 53),  # integers, as running sums of integer images
        divisor * np.floor(rng.random(200_000) * 2.0 ** 40) + rng.integers(-3, 4, 200_000),  # near multiples
        np.ldexp(1.0 + rng.random(100_000), rng.integers(-1000, 1020, 100_000)),  # down to 2**-1000
        [0.0, 1.0, float(divisor), 2.0 ** 1023, np.finfo(float).max],
    ])
    values = np.concatenate([values, -values[values != 0]])  # -0.0 gives +0.0 (totals are never -0.0)
    found = divide_all(values, float(divisor))
    np.testing.assert_array_equal(found.view(np.uint64), (values / divisor).view(np.uint64))


def test_images_with_tiny_pixels_are_filtered_with_the_divide_instruction(caplog):
    image = trackpy.artificial.draw_spots((60, 70), [(20, 30), (40, 45)], 3, noise_level=5).astype(float)
    image[10:12, 5:40] = 1e-300  # nonzero below 2**-800: the fma division is not proven there
    assert_same_as_trackpy(image, 7)
    assert_same_as_trackpy(image * 1e-290, 7)
    assert "not supported" not in caplog.text


@pytest.mark.parametrize("dtype", ["uint16", "float64"])
def test_bands_of_rows_give_the_whole_image(dtype):
    from streamcrystal.science.fastlocate._bandpass import bandpass_rows

    rng = np.random.default_rng(3)
    raw = (rng.random((97, 83)) ** 4 * 4000).astype(dtype)
    weights = gaussian_kernel(1, 4)
    whole = np.empty(raw.shape)
    expected_max, _ = bandpass_kernel(raw, weights, weights, 15, 15, dtype != "float64", 1.0, whole)
    for edges in ([0, 1, 97], [0, 40, 97], [0, 13, 14, 50, 96, 97]):
        banded = np.full(raw.shape, np.nan)
        maxima = [bandpass_rows(raw, weights, weights, 15, 15, dtype != "float64", 1.0, banded, a, b)[0]
                  for a, b in zip(edges[:-1], edges[1:])]
        np.testing.assert_array_equal(banded.view(np.uint64), whole.view(np.uint64))
        assert max(maxima) == expected_max


@pytest.fixture
def threads_on_small_images(monkeypatch):
    """Bands and background tasks on threads even for the tests' small images."""
    monkeypatch.setattr(engine, "MIN_PIXELS_PER_THREAD", 0)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_threads_give_the_same_features(threads, seed, threads_on_small_images):
    image, diameter, kwargs = random_case(100 + seed)
    expected, expected_warnings = _outcome(trackpy.locate, image, diameter, **kwargs)
    with fastlocate.using_threads(threads):
        found, found_warnings = _outcome(fastlocate.locate, image, diameter, **kwargs)
    assert_identical(found, expected)
    assert found_warnings == expected_warnings and fastlocate.get_threads() == 1


def test_threads_on_a_dense_and_a_sparse_detector_image(threads_on_small_images):
    rod = CrystalRod((6, 5), (400, 480), frames_per_point=5, n_grains=2, peaks_per_grain=2, min_peak_distance=100)
    row, col = np.argwhere(rod.truth.grains[0].footprint)[0]
    image = numpy_process_frames(rod.frames(row, col, np.random.default_rng(7)), rod.dark_image())
    sparse = image.copy()
    sparse[100:110, 200:210] += 5e4  # one bright peak: the noise rounds to zero, the background is counted
    for picture in (image, sparse):
        expected = trackpy.locate(picture, 15, percentile=80, separation=100)
        with fastlocate.using_threads(2):
            assert_identical(fastlocate.locate(picture, 15, percentile=80, separation=100), expected)


def test_small_images_stay_on_one_thread(monkeypatch):
    image = trackpy.artificial.draw_spots((64, 64), [(20, 30), (40, 40)], 3, noise_level=10)
    calls = []
    monkeypatch.setattr(engine, "map_bands", lambda function, ranges: calls.append(len(ranges)) or
                        [function(*band) for band in ranges])
    with fastlocate.using_threads(2):
        fastlocate.locate(image, 7)
    assert calls and set(calls) == {1}


def test_the_environment_sets_the_starting_threads():
    code = "import streamcrystal.science.fastlocate as f; print(f.get_threads())"
    for value, expected in (("3", "3"), ("0", "1"), ("two", "1")):
        environment = {**os.environ, "STREAMCRYSTAL_LOCATE_THREADS": value}
        output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=environment)
        assert output.stdout.split() == [expected]
        assert ("not a positive integer" in output.stderr) == (expected != value)


def test_set_threads_rejects_what_is_not_a_positive_count():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            fastlocate.set_threads(bad)
    assert fastlocate.get_threads() == 1


def test_maxima_of_flat_and_plateau_images_equal_trackpys():
    flat = np.full((70, 300), 9, np.uint8)
    plateaus = np.zeros((70, 300), np.uint8)
    plateaus[10:30, 20:200] = 50
    plateaus[40:60, 100:290:3] = 50
    for image in (flat, plateaus):
        for sizes in [(5, 141), (141, 141), (1, 30)]:
            dilated = ndimage.grey_dilation(image, sizes, mode="constant")
            maxima = np.argwhere((image == dilated) & (image > 3))
            coords, n_maxima = maxima_kernel(image, *sizes, image.dtype.type(3), 2, 2, np.empty_like(image), 2)
            inside = np.all((maxima >= 2) & (maxima < np.array(image.shape) - 2), axis=1)
            np.testing.assert_array_equal(coords, maxima[inside])
            assert n_maxima == len(maxima)


@pytest.mark.parametrize("strategy", [1, 2])
def test_the_background_mask_of_uint16_images(strategy):
    rng = np.random.default_rng(5)
    image = ((rng.random((61, 203)) < 0.02) * rng.integers(1, 60000, (61, 203))).astype(np.uint16)
    radius = (6, 6)
    covered = np.empty(image.shape, np.uint8)
    covered_kernel(image, engine._half_widths(radius), int(np.count_nonzero(image)), covered, strategy)
    np.testing.assert_array_equal(covered.astype(bool), ndimage.binary_dilation(image, binary_mask(radius, 2)))


def test_background_mean_and_std_summed_in_halves_on_threads_are_numpys():
    from streamcrystal.science.fastlocate._noise import mean_std

    values = np.random.default_rng(8).random(1_000_003) * 1e3
    with fastlocate.using_threads(2):
        assert mean_std(values.copy(), values.size) == (values.mean(), values.std())
