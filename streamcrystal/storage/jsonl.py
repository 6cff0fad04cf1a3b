"""Documents in JSON-lines files: one ``{"name": ..., "doc": ...}`` per line, numpy arrays kept.

The spool of :class:`~streamcrystal.spool.SpoolingWriter` and the ``--jsonl`` output of
``streamcrystal serve`` use it. Arrays are written as ``{"__ndarray__": {"dtype", "shape",
"data"}}`` with the bytes in base64, and come back with their dtype and shape; numpy scalars
become Python numbers. A last line cut short (the writer was killed mid-line) is reported and
skipped: every complete line before it is read.

Examples
--------
>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
>>> append_documents(path, [("start", {"uid": "a"}), ("event", {"data": {"map": np.eye(2)}, "seq_num": np.int64(1)})])
>>> [(name, doc.get("seq_num")) for name, doc in read_documents(path)]
[('start', None), ('event', 1)]
>>> read_documents(path)[1][1]["data"]["map"]
array([[1., 0.],
       [0., 1.]])
"""
from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["encode_line", "decode_line", "append_documents", "read_documents", "RunIndex", "JsonlWriter"]

logger = logging.getLogger("streamcrystal")

_ARRAY = "__ndarray__"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            return obj.tolist()
        data = np.ascontiguousarray(obj)
        return {_ARRAY: {"dtype": data.dtype.str, "shape": list(data.shape),
                         "data": base64.b64encode(data.tobytes()).decode("ascii")}}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} in a document")


def _hook(obj: dict) -> Any:
    if len(obj) == 1 and _ARRAY in obj:
        spec = obj[_ARRAY]
        return np.frombuffer(base64.b64decode(spec["data"]), dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]).copy()
    return obj


def encode_line(name: str, doc: Mapping) -> str:
    """One line (with its newline) holding the document ``doc`` called ``name``."""
    return json.dumps({"name": name, "doc": doc}, default=_default, separators=(",", ":")) + "\n"


def decode_line(line: str) -> tuple[str, dict]:
    """``(name, doc)`` of a line written by :func:`encode_line`."""
    item = json.loads(line, object_hook=_hook)
    return item["name"], item["doc"]


def append_documents(path: str | os.PathLike, documents: Iterable[tuple[str, Mapping]]) -> None:
    """Append the documents to ``path`` (created if missing), flushed to disk before returning."""
    text = "".join(encode_line(name, doc) for name, doc in documents)
    with open(path, "a", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def read_documents(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """Every complete ``(name, doc)`` of ``path``, in order."""
    documents = []
    with open(path, encoding="utf-8") as file:
        lines = file.readlines()
    for number, line in enumerate(lines, 1):
        try:
            documents.append(decode_line(line))
        except (ValueError, KeyError) as err:
            if number == len(lines) and not line.endswith("\n"):
                logger.warning("%s: the last line (%d) was cut short and is skipped (%s)", path, number, err)
                break
            raise ValueError(f"{path}: line {number} is not a document ({err})") from None
    return documents


class RunIndex:
    """Which run a document belongs to: its start uid, from the documents seen so far.

    Examples
    --------
    >>> index = RunIndex()
    >>> index("start", {"uid": "r"}), index("descriptor", {"uid": "d", "run_start": "r"})
    ('r', 'r')
    >>> index("event", {"descriptor": "d"}), index("event", {"descriptor": "?"})
    ('r', 'unknown')
    """

    UNKNOWN = "unknown"

    def __init__(self) -> None:
        self._of_descriptor: dict[str, str] = {}
        self._of_resource: dict[str, str] = {}

    def __call__(self, name: str, doc: Mapping) -> str:
        if name == "start":
            return str(doc.get("uid", self.UNKNOWN))
        if name in ("descriptor", "stop", "resource", "stream_resource"):
            run = str(doc.get("run_start", self.UNKNOWN))
            if name == "descriptor":
                self._of_descriptor[doc.get("uid")] = run
            elif name != "stop":
                self._of_resource[doc.get("uid")] = run
            return run
        if name in ("event", "event_page"):
            return self._of_descriptor.get(doc.get("descriptor"), self.UNKNOWN)
        if name in ("datum", "datum_page", "stream_datum"):
            return self._of_resource.get(doc.get("resource") or doc.get("stream_resource"), self.UNKNOWN)
        return self.UNKNOWN

    def forget(self, run: str) -> None:
        """Drop what is known of ``run`` (after its stop)."""
        for table in (self._of_descriptor, self._of_resource):
            for key in [key for key, value in table.items() if value == run]:
                del table[key]


class JsonlWriter:
    """Write each run's documents to ``directory/<run uid>.jsonl`` (an ``insert`` without a catalog).

    Lines are flushed as written (``fsync=True`` also forces them to disk); a run's file is
    closed at its stop.

    Parameters
    ----------
    directory : path
        Created if missing.
    fsync : bool
        Force every line to disk before returning.
    """

    def __init__(self, directory: str | os.PathLike, *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._index = RunIndex()
        self._files: dict[str, IO[str]] = {}

    def __call__(self, name: str, doc: Mapping) -> None:
        run = self._index(name, doc)
        file = self._files.get(run)
        if file is None:
            file = self._files[run] = open(self.directory / f"{run}.jsonl", "a", encoding="utf-8")
        file.write(encode_line(name, doc))
        file.flush()
        if self.fsync:
            os.fsync(file.fileno())
        if name == "stop":
            self._files.pop(run).close()
            self._index.forget(run)

    def path(self, run: str) -> Path:
        """The file of run ``run``."""
        return self.directory / f"{run}.jsonl"

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()

    def __repr__(self) -> str:
        return f"JsonlWriter({str(self.directory)!r})"
