"""Frame arithmetic, including the original project's bugs that must stay fixed."""
import numpy as np
import pytest

from streamcrystal.errors import FrameError, ShapeMismatchError
from streamcrystal.science.frames import average_frames, clip_negative, image_problem, process_frames, subtract_background


def test_average_of_saturated_uint16_frames_does_not_overflow():
    frames = np.full((2, 3, 3), 65535, dtype=np.uint16)
    assert average_frames(frames).dtype == np.float64
    assert np.all(average_frames(frames) == 65535.0)  # uint16 arithmetic gave 32767


def test_average_takes_any_number_of_leading_dimensions():
    frames = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(average_frames(frames), frames.reshape(6, 4, 5).astype(float).mean(axis=0))
    with pytest.raises(FrameError, match="at least 2 dimensions"):
        average_frames(np.zeros(5))


def test_subtraction_keeps_minuend_minus_subtrahend_and_does_not_wrap():
    minuend = np.array([[5, 900], [7, 0]], dtype=np.uint16)
    subtrahend = np.array([[7, 100], [7, 3]], dtype=np.uint16)
    difference = subtract_background(minuend, subtrahend)
    assert difference[0, 1] == 800.0  # the original returned an all-zero image
    assert difference[0, 0] == -2.0  # uint16 gave 65534
    np.testing.assert_array_equal(clip_negative(difference), [[0, 800], [0, 0]])


def test_process_frames_is_average_subtract_clip():
    frames = np.array([[[10, 50]], [[20, 70]]], dtype=np.uint16)
    np.testing.assert_array_equal(process_frames(frames, np.array([[20.0, 10.0]])), [[0.0, 50.0]])


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeMismatchError, match=r"\(2, 2\) does not match background shape \(3, 3\)"):
        subtract_background(np.zeros((2, 2)), np.zeros((3, 3)))


def test_image_problem_flags_nan_and_all_zero_only():
    assert image_problem(np.array([[np.nan, 1.0], [np.nan, 2.0]])) == "image has 2 NaN pixel(s)"
    assert image_problem(np.zeros((4, 4), dtype=np.uint16)) == "image is all zero"
    assert image_problem(np.eye(3)) is None


@pytest.mark.parametrize("threads", [2, 3])
def test_the_fused_pass_on_bands_of_rows_gives_the_numpy_image(threads, monkeypatch):
    from streamcrystal.science import frames as frames_module
    from streamcrystal.science.fastlocate import using_threads
    from streamcrystal.science.frames import SATURATED, processed_image

    monkeypatch.setattr(frames_module, "MIN_PIXELS_PER_THREAD", 0)  # bands even on a small image
    rng = np.random.default_rng(threads)
    frames = rng.integers(0, 4096, size=(5, 61, 47), dtype=np.uint16)
    frames[2, 40, 3] = 65535  # saturated once
    background = rng.random((61, 47)) * 2048
    background[7, 7] = np.nan  # a masked background pixel
    mask = rng.random((61, 47)) < 0.05
    for kwargs in ({}, {"mask": mask}, {"mask": SATURATED}):
        with using_threads(threads):
            banded = processed_image(frames, background, **kwargs)
        expected = np.clip(frames.astype(float).mean(axis=0) - background, 0, None)  # numpy's steps
        masked = np.isnan(expected)
        if "mask" in kwargs:
            masked |= mask if kwargs["mask"] is not SATURATED else (frames == 65535).any(axis=0)
        expected[masked] = 0.0
        np.testing.assert_array_equal(banded.image, expected)
        assert banded.masked == masked.sum()
        assert banded.problem is None
