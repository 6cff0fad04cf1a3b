"""Serve a pipeline at the beamline over 0MQ, like the seed's ``server.py``, and keep it serving.

The pieces are bluesky's (:mod:`bluesky.callbacks.zmq`): the RunEngine's
:class:`~bluesky.callbacks.zmq.Publisher` sends documents to a
:class:`~bluesky.callbacks.zmq.Proxy`, and a
:class:`~bluesky.callbacks.zmq.RemoteDispatcher` receives them and calls the pipeline; the
pipeline's output documents go to a writer (a catalog's ``insert`` behind a
:class:`~streamcrystal.spool.SpoolingWriter`). What this module adds, as policy:

- **msgpack, not pickle** (:mod:`streamcrystal.wire`) on both ends, unless asked;
  **localhost** unless asked (:func:`make_proxy`);
- **the server outlives bad input**: a message that is not a document (undecodable bytes,
  an unknown document name, a payload that is not a mapping) is logged and dropped by
  :class:`DocumentDispatcher`; a document the pipeline cannot use ends up, with its run uid,
  in the analysis run's stop (``exit_status: "fail"`` and the reason);
- **stopping loses nothing it has**: on SIGINT/SIGTERM :meth:`Server.run` finishes the
  document in hand, closes every raw run still open with an ``abort`` stop (so its analysis
  run is linked, mapped and closed with what arrived) and closes the writer, which retries
  or leaves spool files it names;
- **the proxy never drops a document for a slow server**: no high-water mark by default
  (the backlog is held in the proxy's memory).

Nothing here parses arguments or prints: :mod:`streamcrystal.cli` does. Progress is logged
(logger ``streamcrystal``) and each completed run is reported as a :class:`RunStatus`.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky.callbacks.zmq import RemoteDispatcher
from bluesky.run_engine import DocumentNames

from ..documents.tally import RunTally, Tally
from ..errors import MessageError
from ..storage.spool import SpoolingWriter
from ..documents.threads import DocumentThread
from .transport import parse_address
from .wire import loads

__all__ = ["DocumentDispatcher", "Server", "ServeReport", "RunMonitor", "RunStatus"]

logger = logging.getLogger("streamcrystal")

_DOCUMENT_NAMES = frozenset(item.name for item in DocumentNames)
_HEAD = 512  # prefix and document name are found in the first bytes of a message


class DocumentDispatcher(RemoteDispatcher):
    """bluesky's ``RemoteDispatcher`` whose receive loop survives any message.

    Each message is ``prefix name payload``; one with another prefix is ignored (another
    publisher's); one that cannot be split, whose name is not a document name, or whose
    payload the ``deserializer`` rejects (it should raise
    :class:`~streamcrystal.wire.MessageError`) is logged and counted in :attr:`dropped`, and
    the loop goes on. A callback that raises is logged with the run uid; the loop goes on.

    Parameters
    ----------
    address : str or tuple
        The proxy's outbound address.
    prefix : bytes
        Only messages with this prefix are dispatched (``b""``: all).
    deserializer : callable
        bytes-like (a memoryview of the 0MQ frame) -> dict; default
        :func:`streamcrystal.wire.loads` (msgpack, never pickle).

    Examples
    --------
    >>> dispatcher = DocumentDispatcher("localhost:5568", prefix=b"raw")
    >>> from streamcrystal.serve.wire import dumps
    >>> dispatcher.decode(b"raw start " + dumps({"uid": "abc"}))
    ('start', {'uid': 'abc'})
    >>> dispatcher.decode(b"beamline2 start " + dumps({"uid": "abc"})) is None  # another publisher's
    True
    >>> try:
    ...     dispatcher.decode(b"raw start " + bytes([0x80, 4]) + b" a pickle")
    ... except MessageError as err:
    ...     print(err.name, "|", err.problem)
    start | undecodable msgpack (ExtraData: unpack(b) received extra data.)
    >>> dispatcher.loop.close()
    """

    def __init__(self, address, *, prefix: bytes = b"", deserializer: Callable[[bytes], dict] = loads,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(address, prefix=prefix, deserializer=deserializer, loop=loop, strict=False)
        self.dropped = 0
        self.received = 0
        self._stop_requested = False

    def decode(self, message: bytes | memoryview) -> tuple[str, dict] | None:
        """``(name, doc)`` of a message, None if it is for another prefix; raises MessageError.

        ``message`` may be a memoryview of the 0MQ frame: the payload is not copied.
        """
        head = bytes(message[:_HEAD])
        first = head.find(b" ")
        second = head.find(b" ", first + 1) if first >= 0 else -1
        if second < 0:
            raise MessageError(f"not 'prefix name payload' ({len(message)} bytes: {head[:40]!r})")
        prefix, raw_name, payload = head[:first], head[first + 1:second], message[second + 1:]
        if self._prefix and prefix != self._prefix:
            return None
        name = raw_name.decode("utf-8", errors="replace")
        if name not in _DOCUMENT_NAMES:
            raise MessageError(f"unknown document name; valid names: {sorted(_DOCUMENT_NAMES)}", name=name)
        try:
            doc = self._deserializer(payload)
        except MessageError as err:
            raise MessageError(err.problem, name=name) from None
        except Exception as err:  # a deserializer not from streamcrystal.wire
            raise MessageError(f"undecodable payload ({type(err).__name__}: {err})", name=name) from None
        if not isinstance(doc, Mapping):
            raise MessageError(f"payload is a {type(doc).__name__}, not a document", name=name)
        return name, doc

    def receive(self, message: bytes | memoryview) -> None:
        """Decode one message and dispatch its document; never raises."""
        try:
            decoded = self.decode(message)
        except MessageError as err:
            self.dropped += 1
            logger.warning("dropped a message from %s: %s", self.address, err)
            return
        if decoded is None:
            return
        name, doc = decoded
        self.received += 1
        try:
            self.process(DocumentNames[name], doc)
        except Exception:
            run = doc.get("run_start") or doc.get("uid")
            logger.exception("run %s: a callback failed on a %s document; the server goes on", run, name)

    async def _poll(self) -> None:
        while not self._stop_requested:
            frame = await self._socket.recv(copy=False)
            self.receive(frame.buffer)

    def request_stop(self) -> None:
        """Stop receiving at the next message boundary (safe from a signal handler)."""
        self._stop_requested = True
        if self._task is not None:
            self._task.cancel()


@dataclass
class RunStatus(RunTally):
    """What the server did with one raw run: its tally and where the analysis run was saved."""

    saved: str = ""

    def line(self) -> str:
        """One line of ``streamcrystal serve``'s output."""
        return f"{super().line()} saved: {self.saved}"


class RunMonitor(Tally):
    """Follow the analysis runs the server writes; ``on_run(status)`` at each stop, with
    ``saved`` (where the run went) filled in."""

    run_class = RunStatus

    def __init__(self, on_run: Callable[[RunStatus], Any], saved: Callable[[str], str]) -> None:
        super().__init__()
        self.on_run = on_run
        self.saved = saved

    def finished(self, run: RunStatus) -> None:
        run.saved = self.saved(run.analysis_uid)
        self.on_run(run)


@dataclass
class ServeReport:
    """How a :meth:`Server.run` ended."""

    stopped_by: str
    runs: list[RunStatus] = field(default_factory=list)
    dropped: int = 0
    closed_early: list[str] = field(default_factory=list)  # raw uids closed with an abort stop
    spooled: list[Path] = field(default_factory=list)


class Server:
    """A pipeline behind a :class:`DocumentDispatcher`, its output documents to ``writer``.

    Parameters
    ----------
    pipeline : streamcrystal.Pipeline
        Built once; it keeps per-run state, so several runs may interleave.
    writer : callable
        ``writer(name, doc)`` for every output document: a
        :class:`~streamcrystal.spool.SpoolingWriter` around a catalog's ``insert``, or a
        document filter in front of one (``catalog_writer``'s arrays-to-HDF5).
    spool : SpoolingWriter, optional
        The spool behind ``writer`` (default: ``writer`` itself if it is one): status lines
        say when a run was spooled, and it is closed (retried) when the server stops.
    address : str
        The proxy's outbound address (``"localhost:5568"``).
    prefix : bytes
        Only documents published with this prefix are processed.
    deserializer : callable
        Default :func:`streamcrystal.wire.loads` (msgpack). Pickle only if you pass it.
    on_run : callable, optional
        Called with a :class:`RunStatus` as each analysis run closes.
    destination : str
        Where ``writer`` puts results, for the status lines.
    write_in_thread : bool
        Call ``writer`` (and ``on_run``) on a thread of its own (a
        :class:`~streamcrystal.documents.threads.DocumentThread`), so that the pipeline goes on with
        the next frame while a catalog insert waits for its server. Default True; False
        writes each document before the pipeline goes on.
    """

    def __init__(self, pipeline, writer: Callable[[str, dict], Any], *, spool: SpoolingWriter | None = None,
                 address: str = "localhost:5568", prefix: bytes = b"raw", deserializer: Callable[[bytes], dict] = loads,
                 on_run: Callable[[RunStatus], Any] | None = None, destination: str = "",
                 write_in_thread: bool = True) -> None:
        self.pipeline = pipeline
        self.writer = writer
        self.spool = spool if spool is not None else (writer if isinstance(writer, SpoolingWriter) else None)
        self.destination = destination or repr(writer)
        self.address = parse_address(address)
        self.dispatcher = DocumentDispatcher(self.address, prefix=prefix, deserializer=deserializer)
        self.runs: list[RunStatus] = []
        self._on_run = on_run
        self._open_runs: dict[str, None] = {}  # raw runs started and not stopped, in order
        self._lost: set[str] = set()
        self._stopped_by = ""
        self.monitor = RunMonitor(self._finished, self._saved)
        self._writer_thread = DocumentThread(self._store) if write_in_thread else None
        self.dispatcher.subscribe(self._raw)
        pipeline.subscribe(self._writer_thread or self._store)

    def run(self, *, handle_signals: bool = True) -> ServeReport:
        """Receive and process documents until :meth:`request_stop` (or SIGINT/SIGTERM)."""
        loop = self.dispatcher.loop
        signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        logger.info("serving on %s (prefix %r), results to %s", self.address, self.dispatcher._prefix, self.destination)
        try:
            self.dispatcher.start()
        except asyncio.CancelledError:
            if not self._stopped_by:
                raise
        return self._finish()

    def request_stop(self, why: str = "request") -> None:
        """Stop after the document in hand; then :meth:`run` flushes and returns.

        Safe from any thread and from a signal handler.
        """
        logger.info("stopping (%s)", why)
        self._stopped_by = self._stopped_by or why
        try:
            self.dispatcher.loop.call_soon_threadsafe(self.dispatcher.request_stop)
        except RuntimeError:  # the loop is closed: it has stopped already
            pass

    def _raw(self, name: str, doc: Mapping) -> None:
        if name == "start":
            self._open_runs[doc.get("uid")] = None
        elif name == "stop":
            self._open_runs.pop(doc.get("run_start"), None)
        self.pipeline(name, doc)

    def _store(self, name: str, doc: Mapping) -> None:
        try:
            self.writer(name, doc)
        except Exception:
            run = doc.get("run_start") or doc.get("uid")
            self._lost.add(str(run))
            logger.exception("a %s document of analysis run %s could not be saved", name, run)
        self.monitor(name, doc)

    def _saved(self, analysis_uid: str) -> str:
        if analysis_uid in self._lost:
            return "NOT SAVED (see the log)"
        spooled = self.spool.where(analysis_uid) if self.spool is not None else None
        return f"spooled to {spooled}" if spooled is not None else self.destination

    def _finished(self, status: RunStatus) -> None:
        self.runs.append(status)
        if status.exit_status != "success":
            logger.warning("run %s: analysis run %s closed with exit_status %r: %s",
                           status.raw_uid, status.analysis_uid, status.exit_status, status.reason)
        if self._on_run is not None:
            self._on_run(status)

    def _finish(self) -> ServeReport:
        closed = list(self._open_runs)
        for raw_uid in closed:
            logger.warning("run %s: no stop document before the server stopped; closing its analysis run", raw_uid)
            self.pipeline("stop", {
                "uid": str(uuid.uuid4()), "run_start": raw_uid, "time": time.time(), "exit_status": "abort",
                "reason": f"streamcrystal serve stopped ({self._stopped_by}) before the run's stop document",
                "num_events": {},
            })
        self._open_runs.clear()
        if self._writer_thread is not None:
            self._writer_thread.close()  # every output document written, every status line given
        spooled = self.spool.close() if self.spool is not None else []
        return ServeReport(self._stopped_by, list(self.runs), self.dispatcher.dropped, closed, spooled)
