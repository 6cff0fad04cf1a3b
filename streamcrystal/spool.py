"""Results are not lost when the catalog is away: a writer that spools to disk and retries.

:class:`SpoolingWriter` wraps an ``insert(name, doc)`` (``db.insert`` of a catalog). When
``insert`` raises, the document, and every later document of the same analysis run, is
appended to a JSON-lines file ``<analysis uid>.jsonl`` in the spool directory
(:mod:`streamcrystal.jsonl`: arrays kept), and the writer says where. Spooled runs are
retried, in order, at most every ``retry_interval`` seconds as documents arrive, at every new
run, and at :meth:`SpoolingWriter.close`; :func:`flush_spool` empties a spool directory left by
an earlier process (``streamcrystal spool flush``; ``streamcrystal serve`` does it at start).

A spool file is removed only once every document in it has been inserted; a retry that fails
halfway keeps the documents not yet inserted.

Examples
--------
>>> import tempfile
>>> stored, up = [], False
>>> def insert(name, doc):
...     if not up:
...         raise ConnectionError("catalog down")
...     stored.append(name)
>>> writer = SpoolingWriter(insert, tempfile.mkdtemp(), retry_interval=0)
>>> writer("start", {"uid": "r1"}); writer("stop", {"uid": "s1", "run_start": "r1"})
>>> writer.where("r1").name, stored
('r1.jsonl', [])
>>> up = True
>>> writer.close(), stored
([], ['start', 'stop'])
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .jsonl import RunIndex, append_documents, encode_line, read_documents

__all__ = ["SpoolingWriter", "flush_spool", "spooled_runs", "default_spool_dir", "FlushReport"]

logger = logging.getLogger("streamcrystal")

Insert = Callable[[str, dict], object]


def default_spool_dir() -> Path:
    """``$STREAMCRYSTAL_SPOOL``, else ``spool`` in the per-user data directory."""
    if os.environ.get("STREAMCRYSTAL_SPOOL"):
        return Path(os.environ["STREAMCRYSTAL_SPOOL"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("streamcrystal")) / "spool"


def spooled_runs(spool_dir: str | os.PathLike) -> list[Path]:
    """The spool files in ``spool_dir`` (one per analysis run), oldest first."""
    directory = Path(spool_dir)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jsonl"), key=lambda path: path.stat().st_mtime)


@dataclass
class FlushReport:
    """What a flush did: the runs inserted, and the files left because ``insert`` failed."""

    inserted: dict[str, int] = field(default_factory=dict)  # analysis uid -> documents inserted
    remaining: dict[str, str] = field(default_factory=dict)  # spool file -> why it stays

    def __bool__(self) -> bool:
        return not self.remaining


def _flush_file(path: Path, insert: Insert) -> tuple[int, str | None]:
    """Insert the documents of one spool file; ``(inserted, None)`` and the file removed, or
    ``(inserted, why)`` with the file cut down to what is left."""
    documents = read_documents(path)
    for i, (name, doc) in enumerate(documents):
        try:
            insert(name, doc)
        except Exception as err:
            if i:
                _rewrite(path, documents[i:])
            return i, f"{type(err).__name__}: {err}"
    path.unlink()
    return len(documents), None


def _rewrite(path: Path, documents) -> None:
    temporary = path.with_suffix(".jsonl.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write("".join(encode_line(name, doc) for name, doc in documents))
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def flush_spool(spool_dir: str | os.PathLike, insert: Insert) -> FlushReport:
    """Insert every spooled analysis run of ``spool_dir``; remove the files that went in whole."""
    report = FlushReport()
    for path in spooled_runs(spool_dir):
        inserted, why = _flush_file(path, insert)
        if why is None:
            report.inserted[path.stem] = inserted
            logger.info("spool: analysis run %s (%d documents) inserted from %s", path.stem, inserted, path)
        else:
            report.remaining[str(path)] = why
            logger.warning("spool: analysis run %s still spooled in %s (%s)", path.stem, path, why)
    return report


class SpoolingWriter:
    """A document writer that never loses a document when its ``insert`` fails.

    Call it with ``(name, doc)`` like any bluesky callback. Documents of an analysis run go to
    ``insert`` until it raises; from then on (that document included) they are appended to
    ``spool_dir/<analysis uid>.jsonl``, in order, until a retry inserts the whole file.

    Parameters
    ----------
    insert : callable
        ``insert(name, doc)``, e.g. a catalog's ``db.insert``.
    spool_dir : path
        Where spool files go (created when first needed).
    retry_interval : float
        Seconds between two retries of the spooled runs while documents arrive.
    """

    def __init__(self, insert: Insert, spool_dir: str | os.PathLike, *, retry_interval: float = 30.0) -> None:
        self.insert = insert
        self.spool_dir = Path(spool_dir)
        self.retry_interval = retry_interval
        self._run_of = RunIndex()
        self._spooled: dict[str, Path] = {}  # analysis uid -> its spool file, while spooling
        self._last_retry = time.monotonic()

    def __call__(self, name: str, doc: Mapping) -> None:
        run = self._run_of(name, doc)
        if self._spooled and (name == "start" or time.monotonic() - self._last_retry >= self.retry_interval):
            self.retry()
        if run in self._spooled:
            self._spool(run, name, doc)
        else:
            try:
                self.insert(name, doc)
            except Exception as err:
                path = self._spool(run, name, doc)
                logger.warning("catalog insert failed (%s: %s): analysis run %s is spooled to %s and will be retried",
                               type(err).__name__, err, run, path)
        if name == "stop":
            self._run_of.forget(run)

    def where(self, run_uid: str) -> Path | None:
        """The spool file of analysis run ``run_uid``, or None if it went to ``insert``."""
        return self._spooled.get(run_uid)

    def retry(self) -> FlushReport:
        """Try to insert the spooled runs of this writer now."""
        self._last_retry = time.monotonic()
        report = FlushReport()
        for run, path in list(self._spooled.items()):
            inserted, why = _flush_file(path, self.insert)
            if why is None:
                del self._spooled[run]
                report.inserted[run] = inserted
                logger.info("spool: analysis run %s inserted from %s", run, path)
            else:
                report.remaining[str(path)] = why
        return report

    def close(self) -> list[Path]:
        """Retry once more; returns the spool files still holding results (logged)."""
        if self._spooled:
            self.retry()
        for run, path in self._spooled.items():
            logger.warning("analysis run %s is saved in the spool file %s; insert it with `streamcrystal spool flush`",
                           run, path)
        return list(self._spooled.values())

    def _spool(self, run: str, name: str, doc: Mapping) -> Path:
        path = self._spooled.get(run)
        if path is None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            path = self._spooled[run] = self.spool_dir / f"{run}.jsonl"
        append_documents(path, [(name, doc)])
        return path
