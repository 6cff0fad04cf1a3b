"""DocumentThread: documents written in order on another thread, bounded, errors survived, drained on close."""
from __future__ import annotations

import logging
import threading

import pytest

from streamcrystal.documents.threads import DocumentThread


def test_documents_are_written_in_order_on_another_thread():
    written, threads = [], set()

    def write(name, doc):
        written.append((name, doc["i"]))
        threads.add(threading.get_ident())

    writer = DocumentThread(write)
    given = [("event", {"i": i}) for i in range(500)]
    for name, doc in given:
        writer(name, doc)
    assert writer.close(timeout=30)
    assert written == [(name, doc["i"]) for name, doc in given]
    assert threads and threading.get_ident() not in threads


def test_a_slow_writer_holds_back_the_caller_only_beyond_max_queued():
    release = threading.Event()
    writer = DocumentThread(lambda name, doc: release.wait(30), max_queued=3)
    gave = []

    def give():
        for i in range(10):
            writer("event", {"i": i})
            gave.append(i)

    producer = threading.Thread(target=give, daemon=True)
    producer.start()
    producer.join(1.0)
    # one document is being written (the writer waits), three wait in the queue, the fifth call waits
    assert producer.is_alive() and gave == [0, 1, 2, 3]
    release.set()
    producer.join(30)
    assert gave == list(range(10)) and writer.close(timeout=30) and writer.queued == 0


def test_a_failing_write_is_logged_with_its_run_and_the_next_documents_are_written(caplog):
    written = []

    def write(name, doc):
        if doc["uid"] == "bad":
            raise OSError("disk full")
        written.append(doc["uid"])

    writer = DocumentThread(write)
    with caplog.at_level(logging.ERROR, logger="streamcrystal"):
        for uid in ("a", "bad", "c"):
            writer("event", {"uid": uid, "run_start": "run-7", "seq_num": 3})
        assert writer.flush(timeout=30)
    assert written == ["a", "c"]
    assert "run run-7: writing the event document seq_num 3 failed" in caplog.text and "disk full" in caplog.text
    writer.close()


def test_closed_writer_refuses_documents_and_names_the_run():
    writer = DocumentThread(lambda name, doc: None)
    assert writer.close(timeout=30)
    with pytest.raises(RuntimeError, match="run r1: writing the stop document refused"):
        writer("stop", {"uid": "s", "run_start": "r1"})


def test_max_queued_must_be_positive():
    with pytest.raises(ValueError, match="max_queued"):
        DocumentThread(lambda name, doc: None, max_queued=0)
