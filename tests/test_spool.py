"""The spool: nothing lost while insert fails; retried in order; flushed by a later process."""
import numpy as np
import pytest

from streamcrystal.jsonl import JsonlWriter, append_documents, read_documents
from streamcrystal.spool import SpoolingWriter, flush_spool, spooled_runs


def run_documents(uid, n_events=3):
    docs = [("start", {"uid": uid, "time": 0.0}), ("descriptor", {"uid": f"{uid}-d", "run_start": uid, "name": "maps"})]
    docs += [("event", {"descriptor": f"{uid}-d", "seq_num": i + 1, "data": {"map": np.full((2, 3), float(i))}})
             for i in range(n_events)]
    return docs + [("stop", {"uid": f"{uid}-s", "run_start": uid, "exit_status": "success"})]


class Catalog:
    """An insert that fails while ``up`` is False, or on its ``fail_at``-th call."""

    def __init__(self):
        self.up, self.fail_at, self.calls, self.docs = True, None, 0, []

    def insert(self, name, doc):
        self.calls += 1
        if not self.up or self.calls == self.fail_at:
            raise ConnectionError("catalog unreachable")
        self.docs.append((name, doc))


def test_documents_after_a_failure_are_spooled_in_order_and_retried_at_the_next_run(tmp_path, caplog_streamcrystal):
    catalog = Catalog()
    writer = SpoolingWriter(catalog.insert, tmp_path, retry_interval=3600)
    first, second = run_documents("r1"), run_documents("r2")
    catalog.fail_at = 3  # the first event: start and descriptor are in, the rest of r1 is spooled
    for name, doc in first:
        writer(name, doc)
    assert writer.where("r1") == tmp_path / "r1.jsonl"
    assert [name for name, _ in read_documents(tmp_path / "r1.jsonl")] == ["event"] * 3 + ["stop"]
    assert "r1 is spooled to" in caplog_streamcrystal.text
    for name, doc in second:  # its start retries r1, which goes in before r2
        writer(name, doc)
    assert writer.where("r1") is None and not (tmp_path / "r1.jsonl").exists()
    assert [doc.get("run_start", doc.get("uid")) for name, doc in catalog.docs if name in ("start", "stop")] == ["r1", "r1", "r2", "r2"]
    np.testing.assert_array_equal(catalog.docs[4][1]["data"]["map"], np.full((2, 3), 2.0))
    assert writer.close() == []


def test_a_retry_that_fails_halfway_keeps_only_what_is_left(tmp_path):
    catalog = Catalog()
    catalog.up = False
    writer = SpoolingWriter(catalog.insert, tmp_path, retry_interval=3600)
    for name, doc in run_documents("r1"):
        writer(name, doc)
    catalog.up, catalog.fail_at, catalog.calls = True, 3, 0
    assert writer.close() == [tmp_path / "r1.jsonl"]
    assert [name for name, _ in read_documents(tmp_path / "r1.jsonl")] == ["event"] * 3 + ["stop"]
    report = flush_spool(tmp_path, catalog.insert)  # a later process
    assert report and report.inserted == {"r1": 4} and spooled_runs(tmp_path) == []
    assert [name for name, _ in catalog.docs] == ["start", "descriptor", "event", "event", "event", "stop"]


def test_flush_reports_what_stays(tmp_path):
    append_documents(tmp_path / "r1.jsonl", run_documents("r1"))
    catalog = Catalog()
    catalog.up = False
    report = flush_spool(tmp_path, catalog.insert)
    assert not report and "ConnectionError: catalog unreachable" in report.remaining[str(tmp_path / "r1.jsonl")]
    assert len(read_documents(tmp_path / "r1.jsonl")) == 6


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
