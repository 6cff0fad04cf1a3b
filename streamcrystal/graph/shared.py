"""An event's frames to the Dask workers of this host through shared memory: written once, mapped.

Why shared memory: a 3072 x 3888 x 5 uint16 event is 120 MB. Sent by Dask (serialised, pushed
through a loopback socket, received into a new buffer) it cost the client about 50 ms of CPU
and the worker about 150 ms, as much as finding its peaks, so that on two cores two workers
were slower than the serial pipeline (issue 16). A POSIX shared memory segment, made with
:mod:`multiprocessing.shared_memory` (the standard library's, maintained with CPython, no new
dependency), is written once by the client and mapped by the worker: no byte of the frames
crosses a socket; the task carries only a :class:`SharedFrames` (segment name, shape, dtype,
offset), a few hundred bytes.

Ownership, so that nothing leaks:

- the client (:class:`SharedSegments`) creates every segment, named ``sc_`` + 12 hex digits
  (:data:`PREFIX`: ``ls /dev/shm/sc_*`` lists ours), and is the only one that unlinks it: after
  the event's result is gathered, after the event failed or was resubmitted, when the
  pipeline is closed, when its client is closed (a watchdog thread notices), when the
  :class:`SharedSegments` is garbage-collected and at interpreter exit; if the client's
  process is killed, its resource tracker unlinks them;
- a worker maps a segment for the ``process`` step only (:func:`mapped`) and closes its mapping
  right after; it never unlinks. A worker that dies leaves nothing: the segment is the
  client's, and the event is resubmitted from it;
- at most one segment per item in flight, so ``max_in_flight`` bounds them.

Segments are written again, not made anew, within a run (``keep``): a new segment's pages are
allocated and zeroed by the kernel as the client first writes them, which cost more than the
copy itself (170 ms against 25 ms for a 120 MB event, measured on this project's VM), and
the worker pays its first touch again. A segment whose event's result has come back goes to
a free list (at most ``keep`` of them) and takes the next event's frames (or, too small for
them, is unlinked as a larger one is made); the free ones are
unlinked at each stop that passes ``gather`` (:meth:`SharedSegments.drain`), so that nothing
is left after a run.

Python's resource tracker: before 3.13, ``SharedMemory(name)`` registers a segment it merely
attaches, so the worker's tracker would unlink it (or warn about a "leak") when the worker
exits. Unregistering after attaching (the usual advice) is wrong here: the workers of a
``LocalCluster`` share the client's tracker process (multiprocessing hands it down), whose
registry is a set, so the worker's unregister would drop the client's registration and the
client's own unlink would then print a ``KeyError`` traceback. :func:`mapped` therefore attaches
without registering: ``track=False`` on Python 3.13+, and before it the tracker's ``register``
is skipped for the attach, under a lock.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from ..errors import SharedFramesError

__all__ = ["PREFIX", "SharedFrames", "SharedSegments", "mapped", "can_share", "this_hosts_addresses",
           "shared_memory_hosts"]

logger = logging.getLogger("streamcrystal")

#: The first characters of the name of every segment streamcrystal makes (``/dev/shm/sc_*`` on Linux).
PREFIX = "sc_"

_SHM_DIRECTORY = "/dev/shm"


@dataclass(frozen=True)
class SharedFrames:
    """Where the frames of one event are: a shared memory segment of this host, as a task carries it.

    Attributes
    ----------
    name : str
        The segment's name (``sc_`` + 12 hex digits).
    shape : tuple of int
        The frames' shape, ``(n_frames, rows, cols)`` or ``(rows, cols)``.
    dtype : str
        The frames' dtype (``numpy.dtype.str``, byte order included, e.g. ``'<u2'``).
    offset : int
        Where the frames start in the segment, in bytes.

    Examples
    --------
    >>> SharedFrames("sc_0123456789ab", (5, 3072, 3888), "<u2").nbytes
    119439360
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def can_share(frames) -> bool:
    """Whether ``frames`` can travel through shared memory: a non-empty numeric numpy array."""
    return isinstance(frames, np.ndarray) and frames.dtype.kind in "biuf" and frames.size > 0


def _free_bytes(directory: str = _SHM_DIRECTORY) -> int | None:
    """Free bytes of the shared memory file system (None where there is no ``/dev/shm`` to ask)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


class SharedSegments:
    """The client's shared memory segments: made, written and unlinked here, and only here.

    Thread-safe: segments are made and released on the client's event loop, and released by
    :meth:`release_all` from any thread (``Pipeline.close``, the watchdog, garbage collection,
    interpreter exit).

    Parameters
    ----------
    client : distributed.Client, optional
        When given, a watchdog thread (started with the first segment, one wake-up every
        ``watch_interval`` s) releases every segment once the client is closing or closed: its
        event loop, where they would be released one by one, has stopped.
    watch_interval : float
        Seconds between two looks at the client's status.
    keep : int
        How many released segments are kept, free, to be written again (default 0: a released
        segment is unlinked at once). :class:`~streamcrystal.graph.dask.DaskFrames` keeps
        ``max_in_flight``.

    Examples
    --------
    >>> segments = SharedSegments()
    >>> ref = segments.share(np.arange(6, dtype=np.uint16).reshape(2, 3))
    >>> ref.name.startswith(PREFIX), ref.shape, ref.dtype, len(segments)
    (True, (2, 3), '<u2', 1)
    >>> with mapped(ref) as frames:
    ...     frames.sum()
    np.uint64(15)
    >>> segments.release(ref.name), len(segments)
    (True, 0)
    >>> pool = SharedSegments(keep=2)
    >>> first = pool.share(np.ones((2, 3), np.uint16))
    >>> pool.release(first.name), pool.names(), len(pool)  # free: kept, no frames in flight
    (True, [], 1)
    >>> again = pool.share(np.full((2, 3), 7, np.uint16))
    >>> again.name == first.name, pool.made, pool.recycled
    (True, 1, 1)
    >>> with mapped(again) as frames:
    ...     frames.tolist()
    [[7, 7, 7], [7, 7, 7]]
    >>> pool.release(again.name), pool.drain(), len(pool)
    (True, 1, 0)
    """

    def __init__(self, client=None, *, watch_interval: float = 0.5, keep: int = 0) -> None:
        self._segments: dict[str, shared_memory.SharedMemory] = {}  # alive: in flight, or free
        self._free: list[str] = []  # alive segments holding no frames in flight, to be written again
        self.keep = int(keep)
        self._lock = threading.Lock()
        self._client = None if client is None else weakref.ref(client)
        self._watch_interval = watch_interval
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.made = 0  # segments made so far
        self.recycled = 0  # frames written into a free segment rather than a new one
        self.peak = 0  # the most alive at once
        # the segments go when this object does, and at interpreter exit at the latest
        # (a finalizer also runs at interpreter exit)
        self._finalizer = weakref.finalize(self, _release, self._segments, self._lock, self._stop)

    def share(self, frames: np.ndarray) -> SharedFrames:
        """Write ``frames`` into a free segment (large enough) or a new one; returns what a task
        carries to find them.

        Raises
        ------
        OSError
            The segment cannot be made: ``/dev/shm`` lacks room for it (a container's is often
            64 MB), or the system refuses. The caller sends the frames by Dask's transfer instead.
        ValueError
            :meth:`close` was called (before, or from another thread meanwhile): no segment is left.
        """
        [shared] = self.share_many([frames])
        return shared

    def share_many(self, arrays: list[np.ndarray]) -> list[SharedFrames]:
        """Write ``arrays`` back to back into one segment (each at a multiple of 64 bytes), as
        :meth:`share` writes one: the frames of several events that travel as one task.

        >>> pool = SharedSegments()
        >>> a, b = pool.share_many([np.ones((2, 3), np.uint16), np.zeros(5, np.uint8)])
        >>> a.name == b.name, a.offset, b.offset, len(pool)
        (True, 0, 64, 1)
        >>> with mapped(b) as frames:
        ...     frames.tolist()
        [0, 0, 0, 0, 0]
        >>> pool.close()
        """
        if self.closed:
            raise ValueError("these shared memory segments are closed")
        arrays = [np.asarray(frames) for frames in arrays]
        offsets = np.cumsum([0] + [-(-frames.nbytes // 64) * 64 for frames in arrays])
        nbytes = max(1, int(offsets[-1]))
        reused = self._take_free(nbytes)
        if reused is not None:
            name, segment = reused
            return _write(name, segment, arrays, offsets)
        self._drop_a_free_one()  # too small for these frames: a new one takes its place
        free = _free_bytes()
        if free is not None and free < nbytes + (1 << 20):
            raise OSError(f"{_SHM_DIRECTORY} has {free / 2**20:.0f} MB free, the event needs {nbytes / 2**20:.0f} MB "
                          "(a container's default is 64 MB: docker run --shm-size=4g)")
        name = f"{PREFIX}{uuid.uuid4().hex[:12]}"
        segment = shared_memory.SharedMemory(name=name, create=True, size=nbytes)
        try:
            shared = _write(name, segment, arrays, offsets)
        except BaseException:
            segment.close()
            segment.unlink()
            raise
        with self._lock:
            closed = self.closed  # close() sets it before it releases every segment, under this lock
            if not closed:
                self._segments[name] = segment
                self.made += 1
                self.peak = max(self.peak, len(self._segments))
        if closed:  # closed from another thread meanwhile: nothing may outlive close()
            _unlink(segment)
            raise ValueError("these shared memory segments are closed")
        if self._client is not None and self._watchdog is None:
            self._watchdog = threading.Thread(target=_watch, args=(weakref.ref(self), self._client, self._stop,
                                                                    self._watch_interval),
                                              name="streamcrystal-shm-watchdog", daemon=True)
            self._watchdog.start()
        return shared

    def _take_free(self, nbytes: int) -> tuple[str, shared_memory.SharedMemory] | None:
        """The smallest free segment of at least ``nbytes``, taken off the free list (None if none)."""
        with self._lock:
            fitting = [name for name in self._free if self._segments[name].size >= nbytes]
            if not fitting:
                return None
            name = min(fitting, key=lambda n: self._segments[n].size)
            self._free.remove(name)
            self.recycled += 1
            return name, self._segments[name]

    def _drop_a_free_one(self) -> None:
        """Unlink the largest free segment (all are smaller than what is needed now): a new
        segment is then made only in place of a free one or when none is free, so the segments
        alive stay at most one per item in flight whatever the frames' sizes (groups of
        different lengths)."""
        with self._lock:
            if not self._free:
                return
            name = max(self._free, key=lambda n: self._segments[n].size)
            self._free.remove(name)
            segment = self._segments.pop(name)
        _unlink(segment)

    def release(self, name: str) -> bool:
        """The frames in segment ``name`` are no longer needed: keep it free for the next frames
        (up to ``keep`` free segments), else unlink it (the workers' mappings stay valid until
        they close them).

        Returns False if it was released already (or is not this object's).
        """
        with self._lock:
            if name not in self._segments or name in self._free:
                return False
            if len(self._free) < self.keep:
                self._free.append(name)
                return True
            segment = self._segments.pop(name)
        _unlink(segment)
        return True

    def drain(self) -> int:
        """Unlink the free segments (those holding no frames in flight); returns how many."""
        with self._lock:
            gone = [self._segments.pop(name) for name in self._free]
            self._free.clear()
        for segment in gone:
            _unlink(segment)
        return len(gone)

    def release_all(self) -> int:
        """Unlink every segment still alive (in flight or free); returns how many there were."""
        with self._lock:
            self._free.clear()
        return _release(self._segments, self._lock, None)

    def close(self) -> None:
        """Release every segment and stop the watchdog."""
        self._stop.set()
        self.release_all()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: no segment is made any more (``share`` raises ValueError)."""
        return self._stop.is_set()

    def __len__(self) -> int:
        return len(self._segments)

    def names(self) -> list[str]:
        """The names of the segments holding frames in flight now (not the free ones)."""
        with self._lock:
            return [name for name in self._segments if name not in self._free]


def _write(name: str, segment: shared_memory.SharedMemory, arrays: list[np.ndarray], offsets) -> list[SharedFrames]:
    """Copy each array into ``segment`` at its offset; returns what tasks carry to find them."""
    shared = []
    for frames, offset in zip(arrays, offsets):
        view = np.ndarray(frames.shape, frames.dtype, buffer=segment.buf, offset=int(offset))
        np.copyto(view, frames, casting="no")
        del view  # the segment's buffer is not exported any more: it can be closed
        shared.append(SharedFrames(name, tuple(int(n) for n in frames.shape), frames.dtype.str, int(offset)))
    return shared


def _unlink(segment: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(BufferError):  # a view of ours still alive: the mapping goes with it
        segment.close()
    with contextlib.suppress(FileNotFoundError):
        segment.unlink()


def _release(segments: dict, lock: threading.Lock, stop: threading.Event | None) -> int:
    if stop is not None:
        stop.set()
    with lock:
        gone = list(segments.values())
        segments.clear()
    for segment in gone:
        _unlink(segment)
    return len(gone)


def _watch(owner: weakref.ref, client: weakref.ref, stop: threading.Event, interval: float) -> None:
    """The watchdog: release every segment once the client is closing or closed, or gone."""
    while not stop.wait(interval):
        segments, dask_client = owner(), client()
        if segments is None:
            return
        if dask_client is None or dask_client.status in ("closing", "closed"):
            count = segments.release_all()
            if count:
                logger.info("the Dask client was closed: %d shared memory segment(s) of frames in flight released",
                            count)
            return
        del segments, dask_client


# -- in a worker ------------------------------------------------------------------------------

_ATTACHING = threading.Lock()
_LINGERING: list[shared_memory.SharedMemory] = []  # mappings a view still held when they were closed


def _attach(name: str) -> shared_memory.SharedMemory:
    """Map segment ``name`` without registering it with this process's resource tracker."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    with _ATTACHING:  # see the module's docstring: attach, but let the tracker not know
        register = resource_tracker.register
        resource_tracker.register = _skip_register
        try:
            return shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register


def _skip_register(name, rtype) -> None:
    return None


def _close(segment: shared_memory.SharedMemory) -> None:
    try:
        segment.close()
    except BufferError:  # a view is still alive somewhere: close it with a later one
        _LINGERING.append(segment)


@contextlib.contextmanager
def mapped(ref: SharedFrames) -> Iterator[np.ndarray]:
    """The frames of ``ref``, mapped from its segment, for the time of the ``with``.

    Nothing may keep the array (or a view of it) after the ``with``: the mapping is closed then.
    The array is writeable like any inline frames (a read-only one would make numba compile its
    kernels again for read-only arrays), but nothing writes into it: the client may send the
    same segment again if the worker dies.

    Raises
    ------
    SharedFramesError
        The segment cannot be mapped here: this process is on another host or in another
        container than the client (another ``/dev/shm``), or the client released it.
    """
    for segment in list(_LINGERING):  # close what an earlier task could not
        _LINGERING.remove(segment)
        _close(segment)
    try:
        segment = _attach(ref.name)
    except (FileNotFoundError, PermissionError, OSError) as err:
        raise SharedFramesError(ref.name, socket.gethostname(), f"{type(err).__name__}: {err}") from None
    try:
        yield np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=segment.buf, offset=ref.offset)
    finally:
        _close(segment)


# -- which workers share this host ------------------------------------------------------------

def this_hosts_addresses() -> set[str]:
    """The names and IP addresses by which this machine may appear as a Dask worker's host."""
    names = {"127.0.0.1", "::1", "localhost", "0.0.0.0"}
    with contextlib.suppress(OSError):
        hostname = socket.gethostname()
        names |= {hostname, socket.getfqdn()}
        names |= {info[4][0] for info in socket.getaddrinfo(hostname, None)}
    with contextlib.suppress(Exception):
        import psutil  # a dependency of distributed

        names |= {address.address.split("%")[0] for addresses in psutil.net_if_addrs().values()
                  for address in addresses if address.family in (socket.AF_INET, socket.AF_INET6)}
    return names


def shared_memory_hosts(workers: Mapping[str, Mapping], addresses: Iterable[str] | None = None) -> set[str]:
    """The hosts of ``workers`` (``scheduler_info()["workers"]``) that are this machine.

    Examples
    --------
    >>> workers = {"tcp://127.0.0.1:4001": {"host": "127.0.0.1"}, "tcp://10.2.0.7:4001": {"host": "10.2.0.7"}}
    >>> shared_memory_hosts(workers, addresses={"127.0.0.1", "10.2.0.5"})
    {'127.0.0.1'}
    """
    mine = this_hosts_addresses() if addresses is None else set(addresses)
    return {info.get("host") for info in workers.values() if info.get("host") in mine}
