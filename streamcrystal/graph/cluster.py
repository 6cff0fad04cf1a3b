"""Dask clients for a pipeline: a cluster spec (``"local:N"`` or a scheduler address) to a client.

``streamcrystal replay/serve --cluster SPEC`` and notebooks use :func:`make_client`; the
pipeline takes any synchronous ``distributed.Client`` (:mod:`.dask`).
"""
from __future__ import annotations

import logging
import re

from distributed import Client

__all__ = ["make_client", "parse_cluster_spec", "dashboard_link"]

logger = logging.getLogger("streamcrystal")


_SPEC = re.compile(r"^(?:local:(?P<n>\d+)|(?P<address>(?:tcp|tls|inproc|ucx|ws|wss)://\S+))$")


def parse_cluster_spec(spec: str) -> dict:
    """Parse a cluster spec: ``"local:N"`` or a scheduler address ``"tcp://host:port"``.

    Examples
    --------
    >>> parse_cluster_spec("local:2")
    {'n_workers': 2}
    >>> parse_cluster_spec("tcp://10.0.0.5:8786")
    {'address': 'tcp://10.0.0.5:8786'}
    >>> parse_cluster_spec("local")
    Traceback (most recent call last):
    ...
    ValueError: cluster spec 'local' is not 'local:N' (N >= 1 worker processes on this machine) or 'tcp://host:port' (the address of a running Dask scheduler)
    """
    match = _SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if match is None or (match["n"] is not None and int(match["n"]) < 1):
        raise ValueError(f"cluster spec {spec!r} is not 'local:N' (N >= 1 worker processes on this machine) or "
                         "'tcp://host:port' (the address of a running Dask scheduler)")
    return {"n_workers": int(match["n"])} if match["n"] is not None else {"address": match["address"]}


def make_client(spec: str, **kwargs) -> Client:
    """A Dask client for a cluster spec, its dashboard link logged.

    ``"local:N"`` starts a ``LocalCluster`` of N worker processes with one thread each,
    listening on localhost, owned by the client (``client.close()`` stops it); its frames
    go straight to the workers (``direct_to_workers=True``), not through the scheduler,
    which lives in this process. ``"tcp://host:port"`` connects to a running scheduler (its
    workers need streamcrystal installed); pass ``direct_to_workers=True`` if this machine
    can reach the workers, which saves the scheduler a copy of every frame. ``kwargs`` go
    to ``LocalCluster``, or to ``Client`` for an address.

    The dashboard link is ``client.dashboard_link`` (``None`` if the scheduler serves no
    dashboard, e.g. without bokeh); it is logged (logger ``streamcrystal``, INFO).
    """
    where = parse_cluster_spec(spec)
    if "n_workers" in where:
        options = {"n_workers": where["n_workers"], "threads_per_worker": 1, "processes": True,
                   "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0", "direct_to_workers": True, **kwargs}
        client = Client(**options)
    else:
        client = Client(where["address"], **kwargs)
    link = dashboard_link(client)
    logger.info("Dask cluster %s: %d workers; dashboard %s", spec, len(client.nthreads()), link or "not served")
    return client


def dashboard_link(client: Client) -> str | None:
    """The client's dashboard link, or None if its scheduler serves no dashboard."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:
        return None
    return client.dashboard_link if "dashboard" in services else None
