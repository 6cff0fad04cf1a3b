"""The 0MQ transport around a server: bluesky's ``Proxy`` (localhost by default) and ``Publisher``.

A RunEngine's :class:`~bluesky.callbacks.zmq.Publisher` (or :func:`publish_documents`, for
a stored run) sends documents to a proxy (:func:`make_proxy`), which relays them to every
server subscribed to it (:mod:`.server`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import zmq
from bluesky.callbacks.zmq import Proxy, Publisher

from .wire import dumps

__all__ = ["make_proxy", "publish_documents", "parse_address", "reuse_freed_memory"]

logger = logging.getLogger("streamcrystal")


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
