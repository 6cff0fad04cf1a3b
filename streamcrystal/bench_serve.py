"""Benchmark: the pipeline served over 0MQ (publisher -> proxy -> server -> writer) against the
same pipeline in-process, on the same frames.

Run ``python -m streamcrystal.bench_serve`` (``--help``; ``--quick`` for a smoke run). The
proxy and the server are real ``streamcrystal proxy`` / ``streamcrystal serve`` processes;
this process publishes inline events (``streamcrystal.bench.synthetic_events``, 5 frames
each) with bluesky's ``Publisher`` and msgpack, and the server writes its analysis runs as
JSON lines (or, with ``--catalog``, into a catalog). The documents are serialized before the
clock starts (a RunEngine-side cost, printed on its own line: at a beamline the RunEngine does
not share the server's cores). Two figures per path, medians of repeats:

- **events/s**: a burst of events published at once; from the first event published (fed,
  in-process) to the last event's ``frames`` document written;
- **latency**: events published one at a time, slower than the server's throughput (1.5 x
  its measured period), so no backlog builds up; from an event published to its ``frames``
  document, which the pipeline emits after that event's ``features`` (both clocks are this
  machine's ``time.time()``; the ``frames`` event is stamped as it is composed and written
  at once).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .bench import raw_documents, synthetic_events
from .wire import dumps

PIPELINE = "peak_tracking"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
    return value


def _as_is(payload: bytes) -> bytes:
    return payload


def _frames_times(docs) -> dict[int, float]:
    """seq_num of the raw event -> time of its ``frames`` document, from analysis documents."""
    frames_descriptors = {doc["uid"] for name, doc in docs if name == "descriptor" and doc.get("name") == "frames"}
    return {int(doc["data"]["frame"]): doc["time"] for name, doc in docs
            if name == "event" and doc["descriptor"] in frames_descriptors}


class InProcess:
    """The pipeline fed in this process, built once and kept across runs (as the server does)."""

    def __init__(self, background: np.ndarray) -> None:
        from .pipeline_files import load_pipeline

        self.pipe = load_pipeline(PIPELINE).make_pipeline(subtrahend=background)
        self.out: list = []
        self.pipe.subscribe(lambda name, doc: self.out.append((name, doc)))

    def run(self, events, n_events: int) -> tuple[float, list[float]]:
        """events/s and per-event latencies (s) of one run fed at once."""
        self.out.clear()
        fed: dict[int, float] = {}
        for name, doc in raw_documents(events, n_events):
            if name == "event":
                fed[doc["seq_num"]] = time.time()
            self.pipe(name, doc)
        written = _frames_times(self.out)
        rate = n_events / (max(written.values()) - min(fed.values()))
        return rate, [written[seq] - fed[seq] for seq in fed]


class ServedChain:
    """``streamcrystal proxy`` and ``streamcrystal serve`` subprocesses, a Publisher into them."""

    def __init__(self, directory: Path, background: np.ndarray, *, catalog: Path | None = None) -> None:
        from bluesky.callbacks.zmq import Publisher

        self.directory = directory
        np.save(directory / "background.npy", background)
        self.results = directory / "results"
        self.catalog = catalog
        in_port, out_port = _free_port(), _free_port()
        self.processes = []
        self._start(["proxy", in_port, out_port], "proxy")
        destination = ["--catalog", catalog] if catalog is not None else ["--jsonl", self.results]
        self.server = self._start(["serve", PIPELINE, "--address", f"localhost:{out_port}", "--subtrahend",
                                   directory / "background.npy", "--spool-dir", directory / "spool", *destination], "serve")
        # documents are serialized ahead (``serialized``); the Publisher sends those bytes as they are
        self.publisher = Publisher(f"localhost:{in_port}", prefix=b"raw", serializer=_as_is)
        self.db = None
        self.serialize_seconds: list[float] = []
        if catalog is not None:
            from .tiled_catalog import catalog as open_catalog

            self.db = open_catalog(catalog)
        _wait(lambda: self._ping(), 180, "the server to hear the publisher")

    def _start(self, args, label):
        out = open(self.directory / f"{label}.out", "w")
        err = open(self.directory / f"{label}.err", "w")
        process = subprocess.Popen([sys.executable, "-m", "streamcrystal.cli", *map(str, args)], stdout=out, stderr=err)
        self.processes.append(process)
        return process

    def _ping(self) -> bool:
        if self.server.poll() is not None:
            raise RuntimeError(f"the server ended: {(self.directory / 'serve.err').read_text()[-2000:]}")
        self.publisher("ping", dumps({}))
        time.sleep(0.1)
        return "a message named 'ping'" in (self.directory / "serve.err").read_text()

    def run(self, events, n_events: int, *, period: float = 0.0) -> tuple[float, list[float]]:
        """Publish a run (events ``period`` s apart, 0: a burst); events/s and latencies."""
        published: dict[int, float] = {}
        documents = list(raw_documents(events, n_events))
        raw_uid = documents[0][1]["uid"]
        t0 = time.perf_counter()
        serialized = [(name, doc.get("seq_num") if name == "event" else None, dumps(doc)) for name, doc in documents]
        self.serialize_seconds.append((time.perf_counter() - t0) / n_events)
        for name, seq_num, payload in serialized:
            if seq_num is not None:
                if period and published:
                    time.sleep(max(0.0, published[max(published)] + period - time.time()))
                published[seq_num] = time.time()
            self.publisher(name, payload)
        _wait(lambda: f"run {raw_uid}:" in (self.directory / "serve.out").read_text(), 60 + 30 * n_events,
              f"the server's status line of run {raw_uid}")
        written = _frames_times(self._analysis(raw_uid))
        rate = n_events / (max(written.values()) - min(published.values()))
        return rate, [written[seq] - published[seq] for seq in published]

    def _analysis(self, raw_uid: str):
        if self.db is None:
            from .jsonl import read_documents

            for path in self.results.glob("*.jsonl"):
                docs = read_documents(path)
                if docs and docs[0][1].get("raw_uid") == raw_uid:
                    return docs
            raise KeyError(raw_uid)
        from .writeback import analysis_runs

        run = analysis_runs(self.db, raw_uid)[-1]
        return [(name, dict(doc)) for name, doc in self.db[run.start["uid"]].documents(fill=False)]

    def close(self) -> None:
        self.publisher.close()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def compare(shape, *, n_events: int, repeats: int, catalog: Path | None = None) -> dict:
    """Median events/s and latency of the in-process and the served pipeline."""
    events, background = synthetic_events(shape)
    with tempfile.TemporaryDirectory(prefix="bench_serve") as tmp:
        chain = ServedChain(Path(tmp), background, catalog=catalog)
        try:
            local = InProcess(background)
            local.run(events, 1)  # numba compiles trackpy's code here
            chain.run(events, 1)  # ... and in the server
            rates = {"in_process": [], "served": []}
            latencies = {"in_process": [], "served": []}
            for _ in range(repeats):
                rate, latency = local.run(events, n_events)
                rates["in_process"].append(rate)
                latencies["in_process"] += latency
                rate, _ = chain.run(events, n_events)
                rates["served"].append(rate)
                _, latency = chain.run(events, n_events, period=1.5 / rate)
                latencies["served"] += latency
            serialize_ms = 1000 * statistics.median(chain.serialize_seconds)
        finally:
            chain.close()
    result = {"shape": list(shape), "events": n_events, "repeats": repeats,
              "writer": "catalog" if catalog is not None else "jsonl"}
    for path in ("in_process", "served"):
        result[f"{path}_events_per_s"] = statistics.median(rates[path])
        result[f"{path}_latency_ms"] = 1000 * statistics.median(latencies[path])
    result["ratio"] = result["served_events_per_s"] / result["in_process_events_per_s"]
    result["serialize_ms"] = serialize_ms
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamcrystal.bench_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6, help="events per timed run (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    parser.add_argument("--shape", default="2048x2048", help="detector ROWSxCOLS (default 2048x2048)")
    parser.add_argument("--catalog", type=Path, default=None,
                        help="the server writes into this embedded catalog (default: JSON-lines files)")
    parser.add_argument("--quick", action="store_true", help="256 x 256, 4 events, 2 repeats (a smoke run)")
    args = parser.parse_args(argv)
    import trackpy

    trackpy.quiet()
    shape = tuple(int(n) for n in args.shape.lower().split("x"))
    n_events, repeats = args.events, args.repeats
    if args.quick:
        shape, n_events, repeats = (256, 256), 4, 2
    r = compare(shape, n_events=n_events, repeats=repeats, catalog=args.catalog)
    print(f"{shape[0]} x {shape[1]} detector, 5 frames/event, {n_events} events a run, medians of {repeats}; "
          f"server writes to {r['writer']}")
    print(f"{'':<34} {'events/s':>9} {'latency ms':>11}")
    print(f"{'in-process pipeline':<34} {r['in_process_events_per_s']:>9.2f} {r['in_process_latency_ms']:>11.1f}")
    print(f"{'served: publisher->proxy->server':<34} {r['served_events_per_s']:>9.2f} {r['served_latency_ms']:>11.1f}")
    print(f"served/in-process throughput: {r['ratio']:.0%}")
    print(f"publisher side (not timed above): msgpack serialization {r['serialize_ms']:.1f} ms an event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
