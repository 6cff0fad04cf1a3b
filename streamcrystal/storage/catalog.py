"""The catalog: databroker 2 on Tiled, embedded on disk by default or a Tiled server by URI.

:func:`catalog` returns a ``databroker.Broker`` (the v1 API of the seed: ``db[uid]``,
``db[-1]``, ``db.insert(name, doc)``, ``header.table()``, ``header.documents()``), with the
v2/v3 Tiled client at ``db.v2``. Without a ``uri`` it starts an embedded Tiled server in this
process, on a free localhost port, over a directory:

``catalog.db``
    the SQLite catalog of runs (metadata, structure);
``tables.sqlite``
    the SQLite tables of event data (SQLite, not Tiled's default DuckDB: several processes
    — a server, a publisher, a notebook — open the same directory at once, and SQLite
    lets each write in turn, where DuckDB allows one writing process);
``data/``
    array data Tiled writes, and ``data/raw/`` where the simulated detector writes its HDF5
    files (inside Tiled's storage, so the server may read them).

Runs persist: close the catalog, open it again, and the same runs are there.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path

__all__ = ["catalog", "default_catalog_path", "holds_catalog", "EmbeddedTiled", "RUNS_NODE"]

logger = logging.getLogger("streamcrystal")

#: The SQLite catalog of runs inside an embedded catalog's directory.
DATABASE = "catalog.db"
#: The container of bluesky runs inside the Tiled tree.
RUNS_NODE = "runs"
#: Spec that makes the Tiled client a catalog of bluesky runs (SQL-backed: ``is_sql``).
_RUNS_SPEC = ("CatalogOfBlueskyRuns", "3.1")
_STARTUP_SECONDS = 60.0


def default_catalog_path() -> Path:
    """``$STREAMCRYSTAL_CATALOG``, else a per-user data directory (e.g.
    ``~/.local/share/streamcrystal/catalog`` on Linux)."""
    if os.environ.get("STREAMCRYSTAL_CATALOG"):
        return Path(os.environ["STREAMCRYSTAL_CATALOG"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("streamcrystal")) / "catalog"


def holds_catalog(path: str | os.PathLike) -> bool:
    """Whether the directory ``path`` holds an embedded catalog (its :data:`DATABASE`), without
    starting a server or making one.

    Examples
    --------
    >>> import tempfile
    >>> holds_catalog(tempfile.mkdtemp())
    False
    """
    return (Path(path).expanduser() / DATABASE).is_file()


class EmbeddedTiled:
    """A Tiled server on a background thread of this process, serving ``directory``.

    Listens on 127.0.0.1 only, with a random single-user API key. Stopped by :meth:`close`
    (also at interpreter exit).

    Parameters
    ----------
    directory : path
        Created if missing; an existing catalog there is reused.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        import uvicorn
        from tiled.catalog import from_uri as catalog_from_uri
        from tiled.config import Authentication
        from tiled.server.app import build_app

        # tiled's app logger prints its version at INFO through a handler of its own
        logging.getLogger("tiled.server.app").setLevel(logging.WARNING)
        self.directory = Path(directory).expanduser().resolve()
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"the catalog {self.directory} is a file: a catalog is a directory "
                                     "(a new one is made where none exists)")
        (self.directory / "data" / "raw").mkdir(parents=True, exist_ok=True)
        self.api_key = secrets.token_hex(16)
        _init_once(self.directory / DATABASE)
        adapter = catalog_from_uri(
            self.directory / DATABASE,
            writable_storage=[self.directory / "data", f"sqlite:///{self.directory / 'tables.sqlite'}"],
        )
        app = build_app(adapter, authentication=Authentication(single_user_api_key=self.api_key),
                        serialization_registry=_serialization_registry())
        config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="asyncio", log_level="warning",
                                lifespan="on")
        self._server = _threaded_uvicorn(config)
        self._thread = threading.Thread(target=self._server.run, name="streamcrystal-tiled", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError(f"the embedded Tiled server for {self.directory} did not start "
                                   f"within {_STARTUP_SECONDS:.0f} s")
            time.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.uri = f"http://{host}:{port}/api/v1"
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the server (idempotent)."""
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __repr__(self) -> str:
        return f"<EmbeddedTiled {self.directory} at {self.uri}>"


def _serialization_registry():
    """Tiled's serializers plus bluesky's document stream of a run (``application/json-seq``):
    ``run.documents()``, with which runs are replayed and published, asks for it."""
    import copy

    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)
    return registry


def _init_once(database: Path) -> None:
    """Create the SQLite catalog if it is not there, once even if processes race for it.

    An existing catalog needs nothing; an exclusive lock on a file beside it makes the first
    of several processes started together the only one to create it.
    """
    import fcntl

    if database.exists() and database.stat().st_size > 0:
        return
    with open(database.with_suffix(".init-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (database.exists() and database.stat().st_size > 0):
            try:
                _create_catalog(database)
            except ImportError as err:  # another Tiled than the one these internals are from: its own way
                logger.debug("creating the catalog with Tiled's init command (%s)", err)
                from tiled.catalog import from_uri as catalog_from_uri

                catalog_from_uri(database, init_if_not_exists=True)
            logger.info("created the catalog %s", database)


def _create_catalog(database: Path) -> None:
    """What ``tiled catalog init --if-not-exists`` does, in this process.

    Tiled's ``from_uri(..., init_if_not_exists=True)`` runs that command in a Python
    subprocess, which imports Tiled's catalog (dask, xarray, sqlalchemy: ~6 s) all over again;
    this process imports the same modules anyway to serve the catalog. These are Tiled's own
    functions (as of Tiled 0.2); if one is missing in another version (``ImportError``), the
    caller falls back to Tiled's command. The work runs on a
    thread of its own: ``asyncio.run`` (here and in Tiled's alembic ``env.py``) needs a thread
    with no running event loop, and the caller's may have one (a notebook's).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database
    from tiled.utils import ensure_specified_sql_driver

    uri = ensure_specified_sql_driver(str(database))

    async def create_tables() -> None:
        engine = create_async_engine(uri)
        try:
            await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
        except UninitializedDatabase:
            await initialize_database(engine)
        finally:
            await engine.dispose()

    def create() -> None:
        asyncio.run(create_tables())
        stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)

    with ThreadPoolExecutor(1, thread_name_prefix="streamcrystal-catalog-init") as pool:
        pool.submit(create).result()


def _threaded_uvicorn(config):
    """uvicorn's Server without signal handlers: it runs off the main thread, whose handlers
    (a server's SIGTERM, a notebook's interrupt) stay the application's."""
    import uvicorn

    class ThreadedServer(uvicorn.Server):
        def install_signal_handlers(self) -> None:
            pass

    return ThreadedServer(config)


_EMBEDDED: dict[Path, EmbeddedTiled] = {}
_EMBEDDED_LOCK = threading.Lock()


def embedded_server(path: str | os.PathLike | None = None) -> EmbeddedTiled:
    """The embedded server of ``path`` in this process (started once, then reused)."""
    directory = Path(path if path is not None else default_catalog_path()).expanduser().resolve()
    with _EMBEDDED_LOCK:
        server = _EMBEDDED.get(directory)
        if server is None or not server._thread.is_alive():
            server = _EMBEDDED[directory] = EmbeddedTiled(directory)
        return server


def catalog(path: str | os.PathLike | None = None, *, uri: str | None = None, api_key: str | None = None):
    """A databroker ``Broker`` over a catalog of bluesky runs stored by Tiled.

    Parameters
    ----------
    path : path, optional
        Directory of the embedded catalog (default :func:`default_catalog_path`); started in
        this process, nothing to run by hand. Ignored when ``uri`` is given.
    uri : str, optional
        An existing Tiled server, e.g. ``http://localhost:8000`` started with
        ``tiled serve catalog --init catalog.db -w data/ -w sqlite:///tables.sqlite --api-key ...``
        (a PostgreSQL catalog at a beamline). Runs live in its ``runs`` container, created if
        missing.
    api_key : str, optional
        The server's API key (default ``$TILED_API_KEY``).

    Returns
    -------
    databroker.Broker
        ``db.insert(name, doc)`` writes through bluesky's ``TiledWriter``; ``db[uid]`` and
        ``db[-1]`` are headers; ``db.v2`` is the Tiled client of the runs.

    Raises
    ------
    NotADirectoryError
        If ``path`` is a file.
    ConnectionError
        If the server at ``uri`` cannot be reached.

    Examples
    --------
    >>> import tempfile
    >>> db = catalog(tempfile.mkdtemp())
    >>> len(db.v2)
    0
    """
    from databroker.v1 import Broker
    from tiled.client import from_uri

    if uri is None:
        server = embedded_server(path)
        uri, api_key = server.uri, server.api_key
    api_key = api_key or os.environ.get("TILED_API_KEY")
    try:
        root = from_uri(uri, api_key=api_key)
    except Exception as err:
        raise ConnectionError(f"cannot reach the Tiled server at {uri}: {type(err).__name__}: {err}") from err
    return Broker(_runs_node(root))


def _runs_node(root):
    """The ``runs`` container of bluesky runs (created if missing, also when two processes race)."""
    from tiled.structures.core import Spec

    if RUNS_NODE not in root:
        with contextlib.suppress(Exception):  # another process may have created it meanwhile
            root.create_container(RUNS_NODE, specs=[Spec(*_RUNS_SPEC)],
                                  metadata={"description": "bluesky runs, raw and analysed (streamcrystal)"})
    node = root[RUNS_NODE]
    if not getattr(node, "is_sql", False):
        raise TypeError(f"the Tiled node {RUNS_NODE!r} at {root.uri} is not a SQL catalog of bluesky runs "
                        f"(spec {_RUNS_SPEC[0]} version 3.x); databroker's Broker.insert needs one")
    return node


def raw_data_dir(db) -> Path | None:
    """Where a detector writing into this catalog should put its files: ``data/raw`` of an
    embedded catalog (Tiled may read there); None for a remote server."""
    for server in _EMBEDDED.values():
        if db.v2.uri.startswith(server.uri):
            return server.directory / "data" / "raw"
    return None
