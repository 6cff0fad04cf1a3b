"""A fast peak finder that returns exactly what ``trackpy.locate`` returns.

:func:`locate` takes ``trackpy.locate``'s arguments and returns its DataFrame: the same
rows in the same order, the same columns and values. It replaces trackpy's slow steps
(the scipy filters of ``bandpass``, the grey dilation, the percentile, and above all the
whole-image binary dilation behind the ``ep`` column) with numba kernels that do the same
arithmetic (see :mod:`.engine`), and keeps trackpy's own refinement. A call it does not
support (3-D images, ``preprocess=False``, ``invert``, ``characterize=False``, other
dtypes, anything trackpy rejects, ...) goes to ``trackpy.locate``; the reason is logged
once (logger ``streamcrystal``). So a user never gets a different answer, only a faster one.

Numba compiles the kernels on first use (``cache=True``: later processes load them from
disk); :func:`warmup` does it ahead of time. One call uses one thread unless
:func:`set_threads` (or the :func:`using_threads` context) says more: a live pipeline in
one process can then spread each image over the cores (same DataFrame, lower latency; see
:mod:`.parallel`). Pure numerics: no streams, no documents.
"""
from __future__ import annotations

import logging
import threading
import warnings

import numpy as np
import pandas as pd

# trackpy's own function, bound now, where trackpy defines it: a user who speeds up existing
# code with ``trackpy.locate = fastlocate.locate`` makes the fallback call trackpy, not itself
from trackpy.feature import locate as _trackpy_locate

from .engine import NonFiniteImage, run
from .options import Plan, plan
from .parallel import get_threads, set_threads, using_threads
from .selfcheck import selfcheck_problem
from .workspace import release

__all__ = ["locate", "warmup", "release", "fallback_reason", "set_threads", "get_threads", "using_threads"]

logger = logging.getLogger("streamcrystal")

_logged: set[str] = set()
_lock = threading.Lock()


def _log_once(reason: str) -> None:
    with _lock:
        if reason in _logged:
            return
        _logged.add(reason)
    logger.warning("fast locate engine: %s not supported; using trackpy.locate (same answer, slower)", reason)


def _resolve(raw_image, diameter, **kwargs) -> Plan | str:
    """The call's :class:`.options.Plan`, or why it goes to trackpy."""
    resolved = plan(raw_image, diameter, **kwargs)
    if isinstance(resolved, str):
        return resolved
    return selfcheck_problem(resolved.image.dtype.name) or resolved


def fallback_reason(raw_image, diameter, **kwargs) -> str | None:
    """Why :func:`locate` would hand this call to ``trackpy.locate``; ``None`` if it takes it.

    Examples
    --------
    >>> fallback_reason(np.zeros((32, 32)), 7) is None
    True
    >>> fallback_reason(np.zeros((32, 32)), 7, invert=True)
    'invert=True'
    """
    resolved = _resolve(raw_image, diameter, **kwargs)
    return resolved if isinstance(resolved, str) else None


def locate(raw_image: np.ndarray, diameter: int | tuple[int, int], minmass: float | None = None,
           maxsize: float | None = None, separation: float | tuple | None = None, noise_size: float | tuple = 1,
           smoothing_size: int | tuple | None = None, threshold: float | None = None, invert: bool = False,
           percentile: float = 64, topn: int | None = None, preprocess: bool = True, max_iterations: int = 10,
           filter_before=None, filter_after=None, characterize: bool = True, engine: str = "auto") -> pd.DataFrame:
    """``trackpy.locate(raw_image, diameter, ...)``: same signature, same DataFrame, faster.

    See ``trackpy.locate`` for the parameters. ``engine`` is trackpy's refinement engine
    (``"auto"``/``"numba"``; ``"python"`` goes to trackpy). Calls the fast engine does not
    support are passed to ``trackpy.locate`` (see :func:`fallback_reason`).

    Examples
    --------
    >>> import trackpy
    >>> image = trackpy.artificial.draw_spots((64, 64), [(20, 30), (44, 40)], 5, noise_level=10)
    >>> fast = locate(image, 9, separation=20)
    >>> fast.equals(trackpy.locate(image, 9, separation=20))
    True
    """
    options = dict(minmass=minmass, maxsize=maxsize, separation=separation, noise_size=noise_size,
                   smoothing_size=smoothing_size, threshold=threshold, invert=invert, percentile=percentile,
                   topn=topn, preprocess=preprocess, max_iterations=max_iterations,
                   filter_before=filter_before, filter_after=filter_after, characterize=characterize,
                   engine=engine)
    resolved = _resolve(raw_image, diameter, **options)
    if not isinstance(resolved, str):
        try:
            return run(resolved)
        except NonFiniteImage:
            resolved = "images with NaN or infinite pixels"
    _log_once(resolved)
    return _trackpy_locate(raw_image, diameter, **options)


_warmed: set[str] = set()


def warmup(dtypes=("float64",)) -> None:
    """Compile (or load from numba's disk cache) the kernels, and trackpy's refinement.

    Call it before the first image of a run, so that image does not wait for the
    compilation (seconds on a cold cache, about one second for trackpy's own uncached
    refinement). Each dtype is warmed once per process; later calls cost nothing.

    Parameters
    ----------
    dtypes : sequence of str
        Image dtypes to locate peaks on (the pipeline's processed images are float64).

    Examples
    --------
    >>> warmup()
    """
    rng = np.random.default_rng(0)
    for name in dtypes:
        if f"image {name}" in _warmed:
            continue
        import trackpy

        spots = trackpy.artificial.draw_spots((48, 48), [(16, 16), (30, 33)], 5, noise_level=20, bitdepth=16)
        image = np.clip(spots, 0, np.iinfo(name).max) if np.dtype(name).kind == "u" else spots
        dense = (rng.random((48, 48)) < 0.5) * (np.iinfo(name).max if np.dtype(name).kind == "u" else 1.0)
        with warnings.catch_warnings():  # trackpy's remarks on these test images
            warnings.simplefilter("ignore")
            locate(image.astype(name), 7, separation=12)
            locate(dense.astype(name), 7, separation=12, percentile=0)  # the kernels' other strategies
        _warmed.add(f"image {name}")
