"""How many threads one :func:`~streamcrystal.science.fastlocate.locate` call uses: one by default.

For a live pipeline in one process, the latency of one image matters more than the
throughput of many: :func:`set_threads` (or the :func:`using_threads` context) lets each
call split its image into bands of rows, one per thread. The kernels release the GIL
(``nogil=True``) and every band computes exactly what the whole image would, so the
DataFrame is the same whatever the setting (see :mod:`.engine` for how each step splits).
Processes that already run one image per core (Dask workers, ``trackpy.batch``) should
keep the default.

The environment variable ``STREAMCRYSTAL_LOCATE_THREADS`` sets the starting value (for
``streamcrystal serve`` and other processes started from a shell).

The setting is process-wide: calls from several threads at once share one pool of
``n - 1`` worker threads (the calling thread works on the first band). Work started from
a worker thread runs on that thread (a pool waiting on itself would deadlock).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["set_threads", "get_threads", "using_threads", "serial", "map_bands", "bands", "in_background"]

def _from_environment() -> int:
    """``STREAMCRYSTAL_LOCATE_THREADS`` (default 1; not a positive integer: 1, logged)."""
    value = os.environ.get("STREAMCRYSTAL_LOCATE_THREADS", "1")
    if value.strip().isdigit() and int(value) >= 1:
        return int(value)
    logging.getLogger("streamcrystal").warning(
        "STREAMCRYSTAL_LOCATE_THREADS=%r is not a positive integer; locating on one thread", value)
    return 1


_threads = _from_environment()
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_worker = threading.local()  # ``is_worker``: a pool thread; ``serial``: in :func:`serial`


def set_threads(n: int) -> int:
    """Use ``n`` threads per :func:`locate` call from now on; returns the previous setting.

    Examples
    --------
    >>> previous = set_threads(2)
    >>> get_threads()
    2
    >>> set_threads(previous)
    2
    """
    global _threads, _pool
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    with _lock:
        previous, _threads = _threads, n
        if _pool is not None and _pool._max_workers != n - 1:  # resized on next use
            _pool.shutdown(wait=False)
            _pool = None
    return previous


def get_threads() -> int:
    """The threads each :func:`locate` call uses (1 inside :func:`serial` on this thread).

    Examples
    --------
    >>> get_threads()
    1
    """
    return 1 if getattr(_worker, "serial", False) else _threads


@contextlib.contextmanager
def serial():
    """One thread for the calls this thread makes in the ``with`` block, whatever the
    setting (other threads are not affected).

    Examples
    --------
    >>> with using_threads(2), serial():
    ...     get_threads()
    1
    """
    previous = getattr(_worker, "serial", False)
    _worker.serial = True
    try:
        yield
    finally:
        _worker.serial = previous


@contextlib.contextmanager
def using_threads(n: int):
    """:func:`set_threads` for a ``with`` block, then the previous setting again.

    Examples
    --------
    >>> with using_threads(2):
    ...     get_threads()
    2
    >>> get_threads()
    1
    """
    previous = set_threads(n)
    try:
        yield
    finally:
        set_threads(previous)


def bands(height: int, n: int, first_share: float = 0.5) -> list[tuple[int, int]]:
    """``n`` bands of rows ``(first, stop)`` covering ``range(height)``; with two, the first
    has ``first_share`` of the rows (a band that starts lower may have more to catch up).

    Examples
    --------
    >>> bands(10, 2), bands(10, 3), bands(1, 2)
    ([(0, 5), (5, 10)], [(0, 3), (3, 6), (6, 10)], [(0, 1)])
    """
    n = max(1, min(n, height))
    if n == 2:
        edges = [0, int(round(height * first_share)), height]
    else:
        edges = [height * k // n for k in range(n + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _mark_worker() -> None:
    _worker.is_worker = True
    _worker.serial = True  # work started on a worker stays on it


def _executor(workers: int) -> ThreadPoolExecutor | None:
    """The pool, or None on one of its own threads (work there stays on that thread)."""
    global _pool
    if getattr(_worker, "is_worker", False):
        return None
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastlocate", initializer=_mark_worker)
        return _pool


def map_bands(function, ranges: list[tuple[int, int]]) -> list:
    """``[function(first, stop) for first, stop in ranges]``, the ranges on threads.

    The calling thread runs the first range; worker threads the others.

    Examples
    --------
    >>> map_bands(lambda a, b: b - a, [(0, 3), (3, 10)])
    [3, 7]
    """
    pool = _executor(max(get_threads() - 1, len(ranges) - 1)) if len(ranges) > 1 else None
    if pool is None:
        return [function(*band) for band in ranges]
    futures = [pool.submit(function, *band) for band in ranges[1:]]
    first = function(*ranges[0])
    return [first] + [future.result() for future in futures]


class _Deferred:
    """A task left for :meth:`result` to run on the calling thread (one thread: nothing is
    computed that is not needed)."""

    def __init__(self, function, args):
        self._function, self._args = function, args

    def result(self):
        return self._function(*self._args)

    def settle(self) -> None:
        """Nothing runs: nothing to wait for."""


class _Started:
    """A task running on a worker thread."""

    def __init__(self, future):
        self._future = future

    def result(self):
        return self._future.result()

    def settle(self) -> None:
        """Wait for it (its result unused): it may be writing into scratch arrays."""
        self._future.result()


def _announced(started: threading.Event, function, args):
    started.set()
    return function(*args)


def in_background(function, *args):
    """``function(*args)`` started on a worker thread with :func:`set_threads` above 1, to
    overlap the calling thread's next steps; with one thread, run by ``result()`` if at all.

    Returns once the worker has begun (it needs the GIL to begin, and the calling thread
    may go on into code that holds it, such as trackpy's numba refinement): a function
    that spends its time in ``nogil`` kernels then runs beside the caller throughout. The
    returned task has ``result()`` and ``settle()`` (wait without needing the result).

    Examples
    --------
    >>> in_background(max, 2, 3).result()
    3
    """
    pool = _executor(get_threads() - 1) if get_threads() > 1 else None
    if pool is None:
        return _Deferred(function, args)
    started = threading.Event()
    task = _Started(pool.submit(_announced, started, function, args))
    started.wait()
    return task
