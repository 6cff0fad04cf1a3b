"""Hand documents to a thread of their own, so that the one who gives them never waits for the work.

Two places use it: a pipeline built with ``thread=True`` takes a RunEngine's documents and
processes them on its own thread (the RunEngine's callback returns at once), and a server
writes its results on a thread (a catalog insert is a round trip to a Tiled server: done on
the pipeline's thread, every feature would wait for it). :class:`DocumentThread` takes
``(name, doc)``, queues it, and ``write(name, doc)`` runs on its own thread, in the order
given. The queue is bounded: when the thread falls behind by ``max_queued`` documents, the
giver waits (memory stays bounded; nothing is dropped), after ``on_full`` is told.
:meth:`DocumentThread.close` does what is queued and ends the thread.

The standard library's ``queue.Queue`` and ``threading.Thread`` do the work; what is added is
the end-of-stream marker, the error policy (``write`` must not raise: an exception is logged
and the thread goes on) and :meth:`DocumentThread.flush`.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["DocumentThread"]

logger = logging.getLogger("streamcrystal")

_END = object()


class DocumentThread:
    """Call ``write(name, doc)`` for every document given, in order, on a thread of its own.

    Parameters
    ----------
    write : callable
        ``write(name, doc)``; it should handle its own errors (one that escapes is logged
        with the run uid and the thread goes on with the next document).
    max_queued : int
        The most documents waiting; beyond it, the caller waits (back-pressure).
    name : str
        The thread's name (in logs and stack dumps).
    task : str
        What ``write`` does, for the messages (``"writing"``, ``"processing"``).
    on_full : callable, optional
        ``on_full(name, doc, queued)`` before the giver waits on a full queue.

    Examples
    --------
    >>> written = []
    >>> writer = DocumentThread(lambda name, doc: written.append((name, doc["uid"])))
    >>> writer("start", {"uid": "a"}); writer("stop", {"uid": "b", "run_start": "a"})
    >>> writer.close()  # writes what is queued, then ends the thread
    True
    >>> written
    [('start', 'a'), ('stop', 'b')]
    """

    def __init__(self, write: Callable[[str, Mapping], Any], *, max_queued: int = 10_000,
                 name: str = "streamcrystal-writer", task: str = "writing", on_full: Callable[[str, Mapping, int], Any] | None = None) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1, got {max_queued!r}")
        self.write = write
        self.task = task
        self.on_full = on_full
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __call__(self, name: str, doc: Mapping) -> None:
        """Queue one document (waits while ``max_queued`` documents are waiting)."""
        if self._closed:
            raise RuntimeError(f"this DocumentThread is closed: run {_run_of(doc)}: {self.task} the {name} document "
                               f"{_where(doc)}refused")
        if self.on_full is not None and self._queue.full():
            self.on_full(name, doc, self._queue.unfinished_tasks)
        self._queue.put((name, doc))

    @property
    def queued(self) -> int:
        """Documents given and not done yet (the one being done included)."""
        return self._queue.unfinished_tasks

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every document given so far is written; False on timeout."""
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write what is queued, then end the thread; False if it did not end within ``timeout``."""
        if not self._closed:
            self._closed = True
            self._queue.put((_END, None))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            name, doc = self._queue.get()
            try:
                if name is _END:
                    return
                self.write(name, doc)
            except Exception:
                logger.exception("run %s: %s the %s document %sfailed; the thread goes on", _run_of(doc), self.task,
                                 name, _where(doc))
            finally:
                self._queue.task_done()


def _run_of(doc) -> str | None:
    return (doc.get("run_start") or doc.get("uid")) if isinstance(doc, Mapping) else None


def _where(doc) -> str:
    """``"seq_num N "`` for an event, else nothing."""
    seq_num = doc.get("seq_num") if isinstance(doc, Mapping) else None
    return f"seq_num {seq_num} " if seq_num is not None else ""
