"""Results are not lost when the catalog is away: a journaling writer that spools and retries.

:class:`SpoolingWriter` wraps an ``insert(name, doc)`` (``db.insert`` of a catalog). Every
document of an analysis run is first appended to a journal, ``<analysis uid>.jsonl`` in the
spool directory (:mod:`streamcrystal.jsonl`: arrays kept), then inserted. When the run's stop
has been inserted the journal is deleted. If any insert of the run fails, the writer stops
inserting that run, keeps journaling it, and says where it is: the journal then holds the
*whole* run, also the documents ``insert`` had accepted before failing. That matters because
catalogs buffer: bluesky's ``TiledWriter`` keeps events until the stop and may fail only
there, when those events are already past the point of no return.

A spooled run is retried once its stop is journaled, at most every ``retry_interval`` seconds
as documents arrive, at every new run and at :meth:`SpoolingWriter.close`. It is inserted as
a copy with new uids (:func:`rekey`; the start records ``spool.original_uid``), since part of
it may be in the catalog already. A journal left by a process that died (``kill -9``) has
no stop: :func:`flush_spool` (``streamcrystal spool flush``; ``streamcrystal serve`` at start)
closes it with an ``abort`` stop and inserts it. A journal in use (locked by a running writer)
is left alone.

Examples
--------
>>> import tempfile
>>> stored, up = [], False
>>> def insert(name, doc):
...     if not up:
...         raise ConnectionError("catalog down")
...     stored.append((name, doc["uid"]))
>>> writer = SpoolingWriter(insert, tempfile.mkdtemp(), retry_interval=3600)
>>> writer("start", {"uid": "r1", "time": 0.0}); writer("stop", {"uid": "s1", "run_start": "r1"})
>>> writer.where("r1").name, stored
('r1.jsonl', [])
>>> up = True
>>> writer.close(), [name for name, uid in stored], stored[0][1] != "r1"
([], ['start', 'stop'], True)
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .jsonl import RunIndex, encode_line, read_documents

try:
    import fcntl
except ImportError:  # not on Windows: journals are not locked there
    fcntl = None

__all__ = ["SpoolingWriter", "flush_spool", "spooled_runs", "default_spool_dir", "FlushReport", "rekey"]

logger = logging.getLogger("streamcrystal")

Insert = Callable[[str, dict], object]


def default_spool_dir() -> Path:
    """``$STREAMCRYSTAL_SPOOL``, else ``spool`` in the per-user data directory."""
    if os.environ.get("STREAMCRYSTAL_SPOOL"):
        return Path(os.environ["STREAMCRYSTAL_SPOOL"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("streamcrystal")) / "spool"


def spooled_runs(spool_dir: str | os.PathLike) -> list[Path]:
    """The journals in ``spool_dir`` (one per analysis run), oldest first; some may be in use."""
    directory = Path(spool_dir)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jsonl"), key=lambda path: path.stat().st_mtime)


def rekey(documents: list[tuple[str, dict]], *, note: Mapping | None = None) -> list[tuple[str, dict]]:
    """A copy of one run's documents under new uids, references kept consistent.

    The start gets ``spool: {"original_uid", "original_time", **note}`` and the current time.

    Examples
    --------
    >>> docs = [("start", {"uid": "a", "time": 1.0}), ("descriptor", {"uid": "d", "run_start": "a"}),
    ...         ("event", {"uid": "e", "descriptor": "d"}), ("event_page", {"uid": ["f", "g"], "descriptor": "d"}),
    ...         ("stop", {"uid": "s", "run_start": "a"})]
    >>> copy = rekey(docs)
    >>> copy[1][1]["run_start"] == copy[0][1]["uid"] != "a", copy[2][1]["descriptor"] == copy[1][1]["uid"] != "d"
    (True, True)
    >>> len(set(copy[3][1]["uid"]) - {"f", "g"}), copy[3][1]["descriptor"] == copy[1][1]["uid"]
    (2, True)
    >>> copy[0][1]["spool"]["original_uid"]
    'a'
    """
    new: dict[str, str] = {}

    def renamed(uid):
        if uid not in new:
            new[uid] = str(uuid.uuid4())
        return new[uid]

    out = []
    for name, doc in documents:
        doc = dict(doc)
        if "uid" in doc and name not in ("stream_datum", "datum"):  # an event page has a list of them
            doc["uid"] = [renamed(u) for u in doc["uid"]] if isinstance(doc["uid"], list) else renamed(doc["uid"])
        for key in ("run_start", "descriptor", "resource", "stream_resource"):
            if isinstance(doc.get(key), str):
                doc[key] = renamed(doc[key])
        if name in ("stream_datum", "datum"):  # "<resource uid>/<index>"
            key = "uid" if name == "stream_datum" else "datum_id"
            resource, _, index = str(doc.get(key, "")).rpartition("/")
            doc[key] = f"{renamed(resource)}/{index}" if resource else str(uuid.uuid4())
        if name == "start":
            doc["spool"] = {"original_uid": documents[0][1]["uid"], "original_time": doc.get("time"), **(note or {})}
            doc["time"] = time.time()
        out.append((name, doc))
    return out


class _Journal:
    """An append-only JSON-lines file, locked (flock) while open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")
        if fcntl is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def append(self, name: str, doc: Mapping) -> None:
        self._file.write(encode_line(name, doc))
        self._file.flush()  # in the OS: survives the death of this process

    def close(self, *, sync: bool = False) -> None:
        if self._file is not None:
            if sync:
                os.fsync(self._file.fileno())
            self._file.close()  # releases the lock
            self._file = None


def _in_use(path: Path) -> bool:
    """Is ``path`` locked by a running writer?"""
    if fcntl is None:
        return False
    with open(path, "a", encoding="utf-8") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)
    return False


@dataclass
class FlushReport:
    """What a flush did: runs inserted (spooled uid -> uid in the catalog) and files left (why)."""

    inserted: dict[str, str] = field(default_factory=dict)
    remaining: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return not self.remaining


def _closing_stop(documents) -> tuple[str, dict]:
    start = documents[0][1]
    return ("stop", {"uid": str(uuid.uuid4()), "run_start": start["uid"], "time": time.time(), "exit_status": "abort",
                     "reason": "recovered from the spool: its writer stopped before the run's stop document",
                     "num_events": {}})


def _flush_file(path: Path, insert: Insert) -> tuple[str | None, str | None]:
    """Insert a copy of one journal under new uids: ``(new uid, None)`` and the file removed,
    or ``(None, why)`` and the file kept."""
    documents = read_documents(path)
    if not documents or documents[0][0] != "start":
        return None, "no start document: not a run's journal"
    if documents[-1][0] != "stop":
        documents.append(_closing_stop(documents))
    copy = rekey(documents)
    for name, doc in copy:
        try:
            insert(name, doc)
        except Exception as err:
            return None, f"{type(err).__name__}: {err}"
    path.unlink()
    return copy[0][1]["uid"], None


def flush_spool(spool_dir: str | os.PathLike, insert: Insert) -> FlushReport:
    """Insert every journal of ``spool_dir`` not in use; remove those that went in whole."""
    report = FlushReport()
    for path in spooled_runs(spool_dir):
        if _in_use(path):
            continue
        new_uid, why = _flush_file(path, insert)
        if why is None:
            report.inserted[path.stem] = new_uid
            logger.info("spool: analysis run %s inserted (as %s) from %s", path.stem, new_uid, path)
        else:
            report.remaining[str(path)] = why
            logger.warning("spool: analysis run %s still spooled in %s (%s)", path.stem, path, why)
    return report


class SpoolingWriter:
    """A document writer that journals each analysis run until ``insert`` has taken all of it.

    Call it with ``(name, doc)`` like any bluesky callback.

    Parameters
    ----------
    insert : callable
        ``insert(name, doc)``, e.g. a catalog's ``db.insert``.
    spool_dir : path
        Where journals go (created when first needed).
    retry_interval : float
        Seconds between two retries of the spooled runs while documents arrive.
    """

    def __init__(self, insert: Insert, spool_dir: str | os.PathLike, *, retry_interval: float = 30.0) -> None:
        self.insert = insert
        self.spool_dir = Path(spool_dir)
        self.retry_interval = retry_interval
        self._run_of = RunIndex()
        self._journals: dict[str, _Journal] = {}  # runs in progress
        self._failed: set[str] = set()  # runs whose insert failed (in progress or pending)
        self._pending: dict[str, Path] = {}  # complete runs waiting in the spool
        self._last_retry = time.monotonic()

    def __call__(self, name: str, doc: Mapping) -> None:
        run = self._run_of(name, doc)
        if self._pending and (name == "start" or time.monotonic() - self._last_retry >= self.retry_interval):
            self.retry()
        journal = self._journals.get(run)
        if journal is None:
            journal = self._journals[run] = _Journal(self.spool_dir / f"{run}.jsonl")
        journal.append(name, doc)
        if run not in self._failed:
            try:
                self.insert(name, doc)
            except Exception as err:
                self._failed.add(run)
                logger.warning("catalog insert failed (%s: %s): analysis run %s is spooled to %s and will be retried",
                               type(err).__name__, err, run, journal.path)
        if name == "stop":
            self._journals.pop(run).close(sync=run in self._failed)
            self._run_of.forget(run)
            if run in self._failed:
                self._pending[run] = journal.path
            else:
                journal.path.unlink()

    def where(self, run_uid: str) -> Path | None:
        """The spool file of analysis run ``run_uid`` if it waits there, else None."""
        if run_uid in self._failed:
            return self._pending.get(run_uid) or self._journals[run_uid].path
        return None

    def retry(self) -> FlushReport:
        """Try to insert the complete spooled runs of this writer now."""
        self._last_retry = time.monotonic()
        report = FlushReport()
        for run, path in list(self._pending.items()):
            new_uid, why = _flush_file(path, self.insert)
            if why is None:
                del self._pending[run]
                self._failed.discard(run)
                report.inserted[run] = new_uid
                logger.info("spool: analysis run %s inserted as %s from %s", run, new_uid, path)
            else:
                report.remaining[str(path)] = why
        return report

    def close(self) -> list[Path]:
        """Retry once more; returns the spool files still holding results (logged).

        Runs without a stop keep their journals, for :func:`flush_spool`.
        """
        open_runs = []
        for run, journal in self._journals.items():
            journal.close(sync=True)
            if run in self._failed:
                self._pending[run] = journal.path  # retried below, closed with an abort stop
            else:
                open_runs.append(journal.path)
                logger.warning("analysis run %s has no stop document; its journal %s is left for "
                               "`streamcrystal spool flush`", run, journal.path)
        self._journals.clear()
        if self._pending:
            self.retry()
        for run, path in self._pending.items():
            logger.warning("analysis run %s is saved in the spool file %s; insert it with `streamcrystal spool flush`",
                           run, path)
        return [*self._pending.values(), *open_runs]
