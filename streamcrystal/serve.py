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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from bluesky.callbacks.zmq import Proxy, Publisher, RemoteDispatcher
from bluesky.run_engine import DocumentNames

from .spool import SpoolingWriter
from .wire import MessageError, dumps, loads
from .writer_thread import WriterThread

__all__ = [
    "DocumentDispatcher",
    "Server",
    "RunStatus",
    "ServeReport",
    "RunMonitor",
    "make_proxy",
    "publish_documents",
    "parse_address",
    "reuse_freed_memory",
]

logger = logging.getLogger("streamcrystal")

_DOCUMENT_NAMES = frozenset(item.name for item in DocumentNames)
_HEAD = 512  # prefix and document name are found in the first bytes of a message


def parse_address(address: str, *, default_host: str = "localhost") -> str:
    """``"host:port"``, ``"port"`` or a full ``tcp://``/``ipc://`` address, as a 0MQ address.

    Examples
    --------
    >>> parse_address("5568"), parse_address("beamline:5568"), parse_address("ipc:///tmp/raw")
    ('tcp://localhost:5568', 'tcp://beamline:5568', 'ipc:///tmp/raw')
    """
    text = str(address)
    if "://" in text:
        return text
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"address {address!r} is not HOST:PORT, PORT or a tcp:// / ipc:// address")
    return f"tcp://{host or default_host}:{port}"


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
class RunStatus:
    """What the server did with one raw run (one line of ``streamcrystal serve``'s output)."""

    raw_uid: str
    analysis_uid: str
    events: int = 0
    skipped: int = 0
    peaks: int = 0
    particles: int = 0
    exit_status: str = ""
    reason: str = ""
    saved: str = ""

    def line(self) -> str:
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        reason = f" reason: {self.reason}" if self.reason and self.exit_status != "success" else ""
        return (f"run {self.raw_uid}: {self.events} events{skipped}, {self.peaks} peaks, {self.particles} particles"
                f" -> analysis {self.analysis_uid} [{self.exit_status}]{reason} saved: {self.saved}")


class RunMonitor:
    """Tally the analysis documents of each run; calls ``on_run(RunStatus)`` at each stop."""

    def __init__(self, on_run: Callable[[RunStatus], Any], saved: Callable[[str], str]) -> None:
        self.on_run = on_run
        self.saved = saved
        self._runs: dict[str, RunStatus] = {}
        self._streams: dict[str, tuple[str, str]] = {}  # descriptor uid -> (analysis uid, stream)

    def __call__(self, name: str, doc: Mapping) -> None:
        if name == "start":
            self._runs[doc["uid"]] = RunStatus(str(doc.get("raw_uid")), doc["uid"])
        elif name == "descriptor":
            self._streams[doc["uid"]] = (doc["run_start"], doc.get("name"))
        elif name == "event":
            run, stream = self._streams.get(doc["descriptor"], (None, None))
            status = self._runs.get(run)
            if status is None:
                return
            if stream == "frames":
                status.events += 1
                status.skipped += bool(doc["data"].get("skipped"))
            elif stream == "features":
                status.peaks += 1
            elif stream == "maps":
                status.particles += 1
        elif name == "stop":
            status = self._runs.pop(doc["run_start"], None)
            for key in [key for key, (run, _) in self._streams.items() if run == doc["run_start"]]:
                del self._streams[key]
            if status is not None:
                status.exit_status, status.reason = doc.get("exit_status", ""), doc.get("reason", "")
                status.saved = self.saved(status.analysis_uid)
                self.on_run(status)


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
        :class:`~streamcrystal.writer_thread.WriterThread`), so that the pipeline goes on with
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
        self._writer_thread = WriterThread(self._store) if write_in_thread else None
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


class _Proxy(Proxy):
    """bluesky's Proxy with a high-water mark set on its sockets (0: none, nothing dropped)."""

    def __init__(self, in_address, out_address, *, high_water_mark: int = 0) -> None:
        self._high_water_mark = high_water_mark
        super().__init__(in_address, out_address)

    def configure_server_socket(self, ctx, sock_type, address, curve, bind=True):
        ctx.setsockopt(zmq.SNDHWM, self._high_water_mark)
        ctx.setsockopt(zmq.RCVHWM, self._high_water_mark)
        return Proxy.configure_server_socket(ctx, sock_type, address, curve, bind)


def make_proxy(in_address: int | str, out_address: int | str, *, bind_all: bool = False,
               high_water_mark: int = 0) -> Proxy:
    """bluesky's 0MQ proxy: publishers send to ``in_address``, servers subscribe to ``out_address``.

    A port number binds 127.0.0.1 only, unless ``bind_all`` (every interface: anyone on the
    network can then publish documents to your servers); a full address (``ipc:///tmp/raw``,
    ``tcp://10.0.0.5:5567``) is bound as given. ``high_water_mark`` messages may wait per
    subscriber before the proxy drops (0: no limit, so a slow server loses nothing; the backlog
    is in memory). Call ``.start()`` to run it (blocks).

    Examples
    --------
    >>> proxy = make_proxy(0, "ipc:///tmp/streamcrystal-doctest")
    >>> proxy.in_port.startswith("tcp://127.0.0.1:"), proxy.out_port
    (True, 'ipc:///tmp/streamcrystal-doctest')
    >>> proxy._frontend.close(); proxy._backend.close(); proxy._context.term()
    """
    host = "0.0.0.0" if bind_all else "127.0.0.1"

    def address(value):
        text = str(value)
        if "://" in text:
            return text
        return f"tcp://{host}" if int(text) == 0 else f"tcp://{host}:{int(text)}"

    return _Proxy(address(in_address), address(out_address), high_water_mark=high_water_mark)


def publish_documents(documents: Iterable[tuple[str, dict]], address: str = "localhost:5567", *,
                      prefix: bytes = b"raw", serializer: Callable[[Mapping], bytes] = dumps,
                      settle: float = 0.5) -> dict[str, int]:
    """Send documents to a proxy with bluesky's ``Publisher``; returns the count of each name.

    ``settle`` seconds pass between connecting and the first document: a 0MQ publisher drops
    what it sends before the proxy's subscription reaches it.
    """
    publisher = Publisher(parse_address(address), prefix=prefix, serializer=serializer)
    counts: dict[str, int] = {}
    try:
        time.sleep(settle)
        for name, doc in documents:
            publisher(name, doc)
            counts[name] = counts.get(name, 0) + 1
    finally:
        publisher.close()
    return counts


def reuse_freed_memory() -> None:
    """glibc: serve large blocks from the heap and keep them when freed.

    A detector event is tens of MB; glibc maps each such block afresh (``mmap``) and unmaps
    it when freed, so every message pays its page faults again (measured: 42 MB messages
    through the proxy at 10/s, 18/s with this). Kept in the heap, the next message reuses
    the memory. The process keeps its peak memory. No effect elsewhere than glibc.
    ``streamcrystal serve`` and ``proxy`` call it at start.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    except (OSError, AttributeError):
        logger.debug("mallopt is not available: memory is allocated the system's default way")
