"""Frame arithmetic: average the frames of an event, subtract a background, clip.

Always in float64. The original project worked in the detector's uint16, where the mean of
two 65535 frames wrapped to 32767 and ``5 - 7`` wrapped to 65534; float64 holds every uint16
sum and difference exactly.

:func:`process_frames` is the one entry point: integer frames (the detector's case) go
through one fused pass (:func:`_average_subtract_clip`, a numba kernel), which gives bit for
bit what the three numpy steps give, because for integer frames every step is one IEEE
operation per pixel: the frames' sum is an exact integer (numpy's float64 sum of integers
below 2**53 is exact in any order), the mean is ``sum / n_frames`` (``np.mean``'s
``true_divide``), then ``mean - background`` and ``0.0 if d < 0 else d`` (``np.maximum(d,
0.0)``). Float frames, whose float sum depends on numpy's summation order, take the numpy
steps (:func:`average_frames`, :func:`subtract_background`, :func:`clip_negative`).

The fused pass splits a large image into bands of rows on :mod:`.fastlocate`'s threads when
``fastlocate.set_threads(n)`` asks for more than one (a live pipeline in one process: the
event's latency); each pixel is computed on its own, so the image does not depend on it.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import ArrayLike

from ..errors import FrameError, ShapeMismatchError
from .fastlocate.engine import MIN_PIXELS_PER_THREAD
from .fastlocate.parallel import bands, get_threads, map_bands

__all__ = ["average_frames", "subtract_background", "clip_negative", "process_frames", "processed_image",
           "ProcessedImage", "SATURATED", "image_problem", "supports_fused", "warmup"]


def average_frames(frames: ArrayLike) -> np.ndarray:
    """Average any number of leading dimensions down to one 2-D float64 image.

    Parameters
    ----------
    frames : array_like, shape (..., rows, cols)
        The frames of one event; a 2-D image is returned as float64 unchanged.

    Returns
    -------
    numpy.ndarray, shape (rows, cols), float64

    Examples
    --------
    >>> average_frames(np.full((2, 1, 2), 65535, dtype=np.uint16))
    array([[65535., 65535.]])
    """
    array = np.asarray(frames)
    if array.ndim < 2:
        raise FrameError(f"an image needs at least 2 dimensions (rows, cols), got shape {array.shape}")
    if array.ndim == 2:
        return array.astype(np.float64, copy=True)
    # Summing in float64 avoids the uint16 overflow of the original code.
    return array.reshape(-1, *array.shape[-2:]).mean(axis=0, dtype=np.float64)


def subtract_background(image: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """Return ``image - background`` in float64 (``image`` itself, as float64, if no background).

    Examples
    --------
    >>> subtract_background(np.array([[5, 9]], dtype=np.uint16), np.array([[7, 2]], dtype=np.uint16))
    array([[-2.,  7.]])
    """
    minuend = np.asarray(image, dtype=np.float64)
    if background is None:
        return minuend
    subtrahend = np.asarray(background, dtype=np.float64)
    if subtrahend.shape != minuend.shape:
        raise ShapeMismatchError(minuend.shape, subtrahend.shape)
    return minuend - subtrahend


def clip_negative(image: np.ndarray) -> np.ndarray:
    """Set negative pixels to zero (a diffraction intensity is never negative).

    Examples
    --------
    >>> clip_negative(np.array([[-2.0, 7.0]]))
    array([[0., 7.]])
    """
    return np.maximum(image, 0.0)


class ProcessedImage(NamedTuple):
    """An event's processed image, why it must not go to the peak finder (or ``None``), and
    how many of its pixels are masked (set to zero)."""

    image: np.ndarray
    problem: str | None
    masked: int = 0


#: ``mask=`` value that masks the saturation value of the frames' integer type (the
#: ``2**16 - 1`` of uint16), as Eiger- and Pilatus-style detectors mark gaps and dead pixels.
SATURATED = "saturated"


def processed_image(frames: ArrayLike, background: np.ndarray | None = None, *, mask=None) -> ProcessedImage:
    """Average, subtract ``background``, clip, and set masked pixels to zero.

    A pixel is masked (no signal, not a broken frame) when it is NaN in any frame or in the
    background, when ``mask`` is a boolean image that is True there, or when ``mask`` is
    :data:`SATURATED` and the pixel holds the saturation value of the integer type in any
    frame. Masked pixels are zero in the image, so a peak finder sees a finite image; an event
    is refused only when nothing of it is usable.

    Parameters
    ----------
    frames : array_like, shape (..., rows, cols)
        The frames of one event (any integer or float dtype).
    background : numpy.ndarray, shape (rows, cols), optional
        Subtracted from the mean of the frames.
    mask : numpy.ndarray of bool, shape (rows, cols), or "saturated", optional
        The detector's masked pixels.

    Returns
    -------
    ProcessedImage
        ``image``: float64, shape (rows, cols); ``problem``: ``"image is all zero"`` when the
        mean of the frames is zero at every pixel that is not masked, ``"nothing usable: ..."``
        when every pixel is masked, else None; ``masked``: the number of masked pixels.

    Raises
    ------
    FrameError
        Frames of fewer than 2 dimensions, or a mask of another shape.
    ShapeMismatchError
        A background whose shape is not the frames'.

    Examples
    --------
    >>> processed_image(np.array([[[10, 2]], [[12, 2]]], dtype=np.uint16), np.array([[4.0, 3.0]]))
    ProcessedImage(image=array([[7., 0.]]), problem=None, masked=0)
    >>> processed_image(np.zeros((2, 1, 2), np.uint16)).problem
    'image is all zero'
    >>> processed_image(np.array([[[5.0, np.nan]]])).image, processed_image(np.array([[[5.0, np.nan]]])).masked
    (array([[5., 0.]]), 1)
    >>> processed_image(np.array([[[65535, 7]]], np.uint16), mask="saturated")
    ProcessedImage(image=array([[0., 7.]]), problem=None, masked=1)
    """
    shape = np.shape(frames)[-2:]
    mask_image = None if mask is None or isinstance(mask, str) else np.asarray(mask, dtype=bool)
    if isinstance(mask, str) and mask != SATURATED:
        raise ValueError(f"mask {mask!r} is not a boolean image nor {SATURATED!r}")
    saturated = isinstance(mask, str)
    if mask_image is not None and mask_image.shape != shape:
        raise FrameError(f"mask of shape {mask_image.shape} does not match images of shape {shape}; give a boolean "
                         "image of the detector's shape (True: masked)")
    if supports_fused(frames, background):
        stack = np.ascontiguousarray(frames).reshape(-1, *frames.shape[-2:])
        image = np.empty(frames.shape[-2:], dtype=np.float64)
        sentinel = np.iinfo(stack.dtype).max if saturated else 0
        subtrahend = image if background is None else np.ascontiguousarray(background)
        masking = image if mask_image is None else mask_image  # ``image`` stands in for arrays not used

        def band(first: int, stop: int) -> tuple[bool, int]:
            scratch = np.empty((2, image.shape[1]), dtype=np.int64)
            return _average_subtract_clip(stack, subtrahend, background is not None, sentinel, saturated, masking,
                                          mask_image is not None, scratch, image, first, stop)

        # bands of rows on fastlocate's threads (one by default: see fastlocate.set_threads);
        # each pixel is computed on its own, so the image is the same whatever the bands
        n = get_threads() if image.size >= MIN_PIXELS_PER_THREAD * get_threads() else 1
        found = map_bands(band, bands(image.shape[0], n))
        nonzero, masked = any(f[0] for f in found), sum(f[1] for f in found)
    else:
        mean = average_frames(frames)
        image = clip_negative(subtract_background(mean, background))
        masked_pixels = np.isnan(image)
        if mask_image is not None:
            masked_pixels |= mask_image
        if saturated:
            array = np.asarray(frames)
            if array.dtype.kind not in "iu":
                raise FrameError(f"mask='saturated' masks the saturation value of integer frames; these are "
                                 f"{array.dtype}: mark their masked pixels NaN, or give a boolean mask")
            masked_pixels |= (array == np.iinfo(array.dtype).max).reshape(-1, *shape).any(axis=0)
        masked = int(np.count_nonzero(masked_pixels))
        if masked:
            image[masked_pixels] = 0.0
            mean = np.where(masked_pixels, 0.0, mean)
        nonzero = bool(np.any(mean))
    if masked == image.size:
        return ProcessedImage(image, f"nothing usable: all {masked} pixels are masked (NaN pixels, or the mask)",
                              masked)
    return ProcessedImage(image, None if nonzero else "image is all zero", masked)


def process_frames(frames: ArrayLike, background: np.ndarray | None = None) -> np.ndarray:
    """Average, subtract ``background`` and clip: the image that peaks are located on.

    See :func:`processed_image` (which also says whether the image is usable).

    Examples
    --------
    >>> frames = np.array([[[10, 2]], [[12, 2]]], dtype=np.uint16)
    >>> process_frames(frames, background=np.array([[4.0, 3.0]]))
    array([[7., 0.]])
    """
    return processed_image(frames, background).image


def supports_fused(frames, background) -> bool:
    """Whether the fused kernel takes these frames and background.

    Integer frames (at most 32 bits, native byte order), 2-D or more; a background that is
    ``None`` or a float64 image of the frames' shape.

    Examples
    --------
    >>> supports_fused(np.zeros((5, 4, 4), np.uint16), None)
    True
    >>> supports_fused(np.zeros((5, 4, 4)), None), supports_fused(np.zeros((5, 4, 4), np.uint16), np.zeros((3, 3)))
    (False, False)
    """
    if not isinstance(frames, np.ndarray) or frames.ndim < 2 or frames.size == 0:
        return False
    if frames.dtype.kind not in "iu" or frames.dtype.itemsize > 4 or not frames.dtype.isnative:
        return False
    if background is None:
        return True
    return (isinstance(background, np.ndarray) and background.dtype == np.float64 and background.dtype.isnative
            and background.shape == frames.shape[-2:])


@numba.njit(cache=True, nogil=True)
def _average_subtract_clip(frames, background, subtract, sentinel, check_sentinel, mask, use_mask, scratch, out,
                           first, stop):
    """One pass over the rows ``first:stop`` of integer frames; returns (whether the mean is
    nonzero at an unmasked pixel, the number of masked pixels), both of these rows.

    ``scratch`` is two int64 rows: the frames' sum (exact) and the sentinel hits. A pixel is
    masked if the mask says so, if a frame holds ``sentinel`` there (``check_sentinel``), or if
    the difference is NaN (a NaN background pixel).
    """
    n_frames, height, width = frames.shape
    total, hits = scratch[0], scratch[1]
    nonzero = False
    n_masked = 0
    divisor = np.float64(n_frames)
    for y in range(first, stop):
        total[:] = 0
        hits[:] = 0
        for f in range(n_frames):
            source = frames[f, y]
            for x in range(width):
                total[x] += source[x]
                if check_sentinel:
                    hits[x] |= source[x] == sentinel
        target = out[y]
        for x in range(width):
            value = np.float64(total[x]) / divisor
            if subtract:
                value = value - background[y, x]
            if (use_mask and mask[y, x]) or hits[x] or value != value:
                target[x] = 0.0
                n_masked += 1
                continue
            nonzero |= total[x] != 0
            target[x] = 0.0 if value < 0.0 else value
    return nonzero, n_masked


def warmup(dtypes=("uint16",)) -> None:
    """Compile (or load from numba's disk cache) the fused kernel for these frame dtypes.

    Examples
    --------
    >>> warmup()
    """
    for name in dtypes:
        frames = np.arange(8, dtype=name).reshape(2, 2, 2)
        processed_image(frames)
        processed_image(frames, np.zeros((2, 2)), mask=SATURATED)
        processed_image(frames, mask=np.zeros((2, 2), dtype=bool))


def image_problem(image: np.ndarray) -> str | None:
    """Say why an image must not go to the peak finder, or return ``None`` if it is fine.

    NaN pixels would propagate through trackpy's filters; an all-zero image (a detector that
    returned nothing, or a frame equal to its background) has no peaks and makes trackpy's
    percentile threshold meaningless.

    Examples
    --------
    >>> image_problem(np.zeros((3, 3))) 
    'image is all zero'
    >>> image_problem(np.array([[1.0, np.nan]]))
    'image has 1 NaN pixel(s)'
    >>> image_problem(np.ones((3, 3))) is None
    True
    """
    n_nan = int(np.count_nonzero(np.isnan(image))) if np.issubdtype(image.dtype, np.floating) else 0
    if n_nan:
        return f"image has {n_nan} NaN pixel(s)"
    if not np.any(image):
        return "image is all zero"
    return None
