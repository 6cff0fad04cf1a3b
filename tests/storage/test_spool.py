"""The spool: a journal per analysis run; nothing lost while insert fails, also when the insert
buffers (as bluesky's TiledWriter does) or the writer dies."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.serving import subprocess_env

from streamcrystal.storage.jsonl import JsonlWriter, append_documents, read_documents
from streamcrystal.storage.spool import SpoolingWriter, flush_spool, spooled_runs


def run_documents(uid, n_events=3):
    docs = [("start", {"uid": uid, "time": 0.0}), ("descriptor", {"uid": f"{uid}-d", "run_start": uid, "name": "maps"})]
    docs += [("event", {"uid": f"{uid}-e{i}", "descriptor": f"{uid}-d", "seq_num": i + 1,
                        "data": {"map": np.full((2, 3), float(i))}}) for i in range(n_events)]
    return docs + [("stop", {"uid": f"{uid}-s", "run_start": uid, "exit_status": "success"})]


class Catalog:
    """An insert that fails while ``up`` is False or on its ``fail_at``-th call; with ``buffered``,
    events are kept until the stop, as bluesky's TiledWriter does, and lost if the stop fails."""

    def __init__(self, *, buffered=False):
        self.up, self.fail_at, self.calls, self.docs, self.buffered, self._buffer = True, None, 0, [], buffered, []

    def insert(self, name, doc):
        self.calls += 1
        if self.buffered and name == "event":
            self._buffer.append((name, doc))
            return
        if not self.up or self.calls == self.fail_at:
            self._buffer.clear()
            raise ConnectionError("catalog unreachable")
        self.docs += self._buffer + [(name, doc)]
        self._buffer.clear()

    def runs(self):
        """Stored runs: start uid -> names of their documents."""
        runs, of = {}, {}
        for name, doc in self.docs:
            run = doc["uid"] if name == "start" else doc.get("run_start") or of.get(doc.get("descriptor"))
            if name == "descriptor":
                of[doc["uid"]] = run
            runs.setdefault(run, []).append(name)
        return runs


def test_a_run_inserted_whole_leaves_no_journal(tmp_path):
    catalog = Catalog()
    writer = SpoolingWriter(catalog.insert, tmp_path)
    for name, doc in run_documents("r1"):
        writer(name, doc)
    assert writer.where("r1") is None and spooled_runs(tmp_path) == [] and writer.close() == []
    assert catalog.runs() == {"r1": ["start", "descriptor", "event", "event", "event", "stop"]}


def test_a_failure_mid_run_spools_the_whole_run_and_a_copy_goes_in_at_the_next_run(tmp_path, caplog_streamcrystal):
    catalog = Catalog()
    writer = SpoolingWriter(catalog.insert, tmp_path, retry_interval=3600)
    catalog.fail_at = 3  # the first event: start and descriptor are in the catalog already
    for name, doc in run_documents("r1"):
        writer(name, doc)
    assert writer.where("r1") == tmp_path / "r1.jsonl"
    assert [name for name, _ in read_documents(tmp_path / "r1.jsonl")] == [name for name, _ in run_documents("r1")]
    assert "r1 is spooled to" in caplog_streamcrystal.text
    for name, doc in run_documents("r2"):  # its start retries r1, which goes in first
        writer(name, doc)
    assert writer.where("r1") is None and spooled_runs(tmp_path) == []
    runs = catalog.runs()
    (copy,) = [uid for uid in runs if uid not in ("r1", "r2")]
    assert list(runs) == ["r1", copy, "r2"] and runs["r1"] == ["start", "descriptor"]
    assert runs[copy] == runs["r2"] == ["start", "descriptor", "event", "event", "event", "stop"]
    start = next(doc for name, doc in catalog.docs if name == "start" and doc["uid"] == copy)
    assert start["spool"]["original_uid"] == "r1"
    maps = [doc["data"]["map"] for name, doc in catalog.docs if name == "event" and doc["descriptor"] != "r1-d"][:3]
    np.testing.assert_array_equal(maps[2], np.full((2, 3), 2.0))


def test_events_a_buffering_insert_lost_at_the_stop_are_recovered(tmp_path):
    catalog = Catalog(buffered=True)
    writer = SpoolingWriter(catalog.insert, tmp_path, retry_interval=3600)
    catalog.fail_at = 6  # the stop, whose flush of the buffered events fails
    for name, doc in run_documents("r1"):
        writer(name, doc)
    assert catalog.runs() == {"r1": ["start", "descriptor"]}
    assert writer.close() == []  # retried at close: a copy of the whole run went in
    (copy,) = [uid for uid in catalog.runs() if uid != "r1"]
    assert catalog.runs()[copy] == ["start", "descriptor", "event", "event", "event", "stop"]


def test_a_retry_that_fails_keeps_the_file_for_later(tmp_path):
    catalog = Catalog()
    catalog.up = False
    writer = SpoolingWriter(catalog.insert, tmp_path, retry_interval=3600)
    for name, doc in run_documents("r1"):
        writer(name, doc)
    assert writer.close() == [tmp_path / "r1.jsonl"]
    report = flush_spool(tmp_path, catalog.insert)
    assert not report and "ConnectionError: catalog unreachable" in report.remaining[str(tmp_path / "r1.jsonl")]
    catalog.up = True
    report = flush_spool(tmp_path, catalog.insert)  # a later process
    assert report and list(report.inserted) == ["r1"] and spooled_runs(tmp_path) == []
    assert catalog.runs()[report.inserted["r1"]] == ["start", "descriptor", "event", "event", "event", "stop"]


_KILLED_WRITER = """
import json, os, sys
from streamcrystal.storage.spool import SpoolingWriter
writer = SpoolingWriter(lambda name, doc: None, sys.argv[1])
for name, doc in json.loads(sys.argv[2]):
    writer(name, doc)
os.kill(os.getpid(), 9)
"""


def test_the_journal_of_a_killed_writer_is_closed_and_inserted_but_not_one_in_use(tmp_path):
    docs = [(name, {**doc, "data": {}} if name == "event" else doc) for name, doc in run_documents("r1")[:4]]
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), json.dumps(docs)],  # no stop
                            env=subprocess_env(), timeout=60, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    live = SpoolingWriter(Catalog().insert, tmp_path)
    live("start", {"uid": "r2", "time": 0.0})  # in progress: its journal is locked
    catalog = Catalog()
    report = flush_spool(tmp_path, catalog.insert)
    assert list(report.inserted) == ["r1"] and spooled_runs(tmp_path) == [tmp_path / "r2.jsonl"]
    stored = catalog.runs()[report.inserted["r1"]]
    assert stored == ["start", "descriptor", "event", "event", "stop"]
    assert catalog.docs[-1][1]["exit_status"] == "abort" and "recovered from the spool" in catalog.docs[-1][1]["reason"]


def test_a_line_cut_short_is_skipped_with_a_warning(tmp_path, caplog_streamcrystal):
    path = tmp_path / "r1.jsonl"
    append_documents(path, run_documents("r1", 1))
    with open(path, "a") as file:
        file.write('{"name": "event", "doc": {"seq')
    assert len(read_documents(path)) == 4
    assert "was cut short" in caplog_streamcrystal.text
    with open(path, "a") as file:
        file.write("\n" + '{"name": "stop"}\n')
    with pytest.raises(ValueError, match="line 5 is not a document"):
        read_documents(path)


def test_jsonl_writer_one_file_per_run(tmp_path):
    writer = JsonlWriter(tmp_path)
    for a, b in zip(run_documents("r1"), run_documents("r2")):
        writer(*a)
        writer(*b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1.jsonl", "r2.jsonl"]
    assert [name for name, _ in read_documents(writer.path("r2"))] == [name for name, _ in run_documents("r2")]
