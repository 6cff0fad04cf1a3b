"""Frame arithmetic: average the frames of an event, subtract a background, clip.

Pure numpy, always in float64. The original project worked in the detector's uint16, where
the mean of two 65535 frames wrapped to 32767 and ``5 - 7`` wrapped to 65534; float64 holds
every uint16 sum and difference exactly.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .errors import FrameError, ShapeMismatchError

__all__ = ["average_frames", "subtract_background", "clip_negative", "process_frames", "image_problem"]


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


def process_frames(frames: ArrayLike, background: np.ndarray | None = None) -> np.ndarray:
    """Average, subtract ``background`` and clip: the image that peaks are located on.

    Examples
    --------
    >>> frames = np.array([[[10, 2]], [[12, 2]]], dtype=np.uint16)
    >>> process_frames(frames, background=np.array([[4.0, 3.0]]))
    array([[7., 0.]])
    """
    return clip_negative(subtract_background(average_frames(frames), background))


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
