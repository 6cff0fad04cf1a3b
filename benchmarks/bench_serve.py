"""Benchmark: the pipeline served over 0MQ (publisher -> proxy -> server -> writer) against the
same pipeline in-process, on the same frames.

Run ``python -m benchmarks.bench_serve`` (``--help``; ``--quick`` for a smoke run). The
proxy and the server are real ``streamcrystal proxy`` / ``streamcrystal serve`` processes;
this process publishes with bluesky's ``Publisher`` and msgpack, and the server writes its
analysis runs as JSON lines (``--catalog``: into a catalog). The frames
(``benchmarks.bench_pipeline.synthetic_events``, 5 per event) travel two ways:

- ``inline``: in the event documents, through 0MQ (40 MB an event at 2048 x 2048);
- ``external``: in an HDF5 file, as an area detector writes them; the documents carry
  StreamResource/StreamDatum references and the pipeline, served or not, reads the file.

Documents are serialized before the clock starts (a RunEngine-side cost, printed apart: at a
beamline the RunEngine does not share the server's cores). Two figures per path, medians of
repeats interleaved with the in-process ones:

- **events/s**: a burst of events published at once; from the first event published (fed,
  in-process) to the whole analysis run stored: the server's status line of the run, which
  it prints once the analysis run's stop is written, so every feature, track and map before
  it is too (in-process: to the stop emitted; nothing is written). With ``--runs-in-a-row K``,
  K runs published one after another, to the last one stored: whether a run's writes make
  the next run wait;
- **latency**: events published one at a time, slower than the server's throughput (1.5 x
  its measured period), so no backlog builds up; from an event published to its ``frames``
  document, which the pipeline emits after that event's ``features`` (both clocks are this
  machine's ``time.time()``; the ``frames`` event is stamped as it is composed, then queued
  for the writer). bluesky's TiledWriter keeps the rows of a run's tables in memory until
  its stop (or 10,000 rows), so a feature is *in the catalog's tables* at the run's stop
  whatever the latency; the spool journal has it as the writer takes it.

Every process, this one included, keeps freed large blocks for reuse
(:func:`streamcrystal.serve.transport.reuse_freed_memory`).
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

from benchmarks.bench_pipeline import DATA_KEY, raw_documents, synthetic_events
from streamcrystal.serve.wire import dumps

PIPELINE = "peak_tracking"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, *, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


def external_documents(events, n_events: int, directory: Path):
    """The same run with its frames in an HDF5 file, as an area detector writes them: the
    documents carry StreamResource/StreamDatum references and the server reads the file."""
    import event_model
    import h5py

    run = event_model.compose_run(metadata={"shape": [1, n_events], "extents": [[0, 0], [0, 1]],
                                            "snaking": [False, False]})
    path = directory / f"{run.start_doc['uid']}.h5"
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("/entry/data/data", shape=(n_events, *events[0].shape), dtype=events[0].dtype)
        for i in range(n_events):
            dataset[i] = events[i % len(events)]
    shape = list(events[0].shape)
    descriptor = run.compose_descriptor(name="primary", data_keys={
        DATA_KEY: {"dtype": "array", "shape": shape, "source": "bench", "external": "STREAM:"},
        "total": {"dtype": "number", "shape": [], "source": "bench"}})
    resource = run.compose_stream_resource(mimetype="application/x-hdf5", uri=f"file://localhost{path}",
                                           data_key=DATA_KEY, parameters={"dataset": "/entry/data/data", "chunk_shape": shape})
    yield "start", run.start_doc
    yield "descriptor", descriptor.descriptor_doc
    yield "stream_resource", resource.stream_resource_doc
    for i in range(n_events):
        yield "stream_datum", resource.compose_stream_datum(indices={"start": i, "stop": i + 1},
                                                            seq_nums={"start": i + 1, "stop": i + 2},
                                                            descriptor=descriptor.descriptor_doc)
        yield "event", descriptor.compose_event(data={"total": float(i)}, timestamps={"total": time.time()}, validate=False)
    yield "stop", run.compose_stop()


def _event_of(name: str, doc) -> int | None:
    """The seq_num a document brings frames for: an inline event, or a StreamDatum."""
    if name == "event" and DATA_KEY in doc.get("data", {}):
        return doc["seq_num"]
    if name == "stream_datum":
        return doc["seq_nums"]["start"]
    return None


def _engine(engine: str | None) -> dict:
    return {} if engine is None else {"engine": engine}


def _as_is(payload: bytes) -> bytes:
    return payload


def _frames_times(docs) -> dict[int, float]:
    """seq_num of the raw event -> time of its ``frames`` document, from analysis documents."""
    frames_descriptors = {doc["uid"] for name, doc in docs if name == "descriptor" and doc.get("name") == "frames"}
    return {int(doc["data"]["frame"]): doc["time"] for name, doc in docs
            if name == "event" and doc["descriptor"] in frames_descriptors}


class InProcess:
    """The pipeline fed in this process, built once and kept across runs (as the server does)."""

    def __init__(self, background: np.ndarray, *, engine: str | None = None) -> None:
        from streamcrystal.graph.files import load_pipeline

        self.pipe = load_pipeline(PIPELINE).make_pipeline(subtrahend=background, **_engine(engine))
        self.out: list = []
        self.pipe.subscribe(lambda name, doc: self.out.append((name, doc)))

    def run(self, documents) -> tuple[float, list[float]]:
        """events/s (first event fed -> the analysis run's stop emitted) and per-event
        latencies (s) of one run fed at once."""
        self.out.clear()
        fed: dict[int, float] = {}
        for name, doc in documents:
            if (seq_num := _event_of(name, doc)) is not None:
                fed[seq_num] = time.time()
            self.pipe(name, doc)
        done = time.time()  # the stop returns once the run is linked, mapped and its stop emitted
        written = _frames_times(self.out)
        rate = len(fed) / (done - min(fed.values()))
        return rate, [written[seq] - fed[seq] for seq in fed]

    def run_in_a_row(self, runs) -> float:
        """events/s of several runs fed one after another: first event fed -> last stop emitted."""
        first, n_events = None, 0
        for documents in runs:
            for name, doc in documents:
                if _event_of(name, doc) is not None:
                    first = first or time.time()
                    n_events += 1
                self.pipe(name, doc)
        return n_events / (time.time() - first)


class ServedChain:
    """``streamcrystal proxy`` and ``streamcrystal serve`` subprocesses, a Publisher into them."""

    def __init__(self, directory: Path, background: np.ndarray, *, catalog: Path | None = None,
                 transport: str = "tcp", engine: str | None = None, write_inline: bool = False) -> None:
        from bluesky.callbacks.zmq import Publisher

        self.directory = directory
        np.save(directory / "background.npy", background)
        self.results = directory / "results"
        self.catalog = catalog
        if transport == "ipc":
            inbound, outbound = f"ipc://{directory}/in", f"ipc://{directory}/out"
        else:
            inbound, outbound = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
        self.processes = []
        self._start(["proxy", inbound, outbound], "proxy")
        destination = ["--catalog", catalog] if catalog is not None else ["--jsonl", self.results]
        self.server = self._start(["serve", PIPELINE, "--address", outbound, "--subtrahend",
                                   directory / "background.npy", "--spool-dir", directory / "spool", *destination,
                                   *(["--param", f"engine={engine}"] if engine else []),
                                   *(["--write-inline"] if write_inline else [])], "serve")
        # documents are serialized ahead (``serialized``); the Publisher sends those bytes as they are
        self.publisher = Publisher(inbound, prefix=b"raw", serializer=_as_is)
        self.db = None
        self.serialize_seconds: list[float] = []
        try:
            if catalog is not None:
                from streamcrystal.storage.catalog import catalog as open_catalog

                self.db = open_catalog(catalog)
            _wait(lambda: self._ping(), 180, "the server to hear the publisher")
        except BaseException:
            self.close()  # no orphaned proxy or server
            raise

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

    def run(self, documents, *, period: float = 0.0) -> tuple[float, list[float]]:
        """Publish a run (events ``period`` s apart, 0: a burst); events/s and latencies."""
        published: dict[int, float] = {}
        raw_uid = documents[0][1]["uid"]
        t0 = time.perf_counter()
        serialized = [(name, _event_of(name, doc), dumps(doc)) for name, doc in documents]
        n_events = sum(seq_num is not None for _, seq_num, _ in serialized)
        self.serialize_seconds.append((time.perf_counter() - t0) / n_events)
        for name, seq_num, payload in serialized:
            if seq_num is not None:
                if period and published:
                    time.sleep(max(0.0, published[max(published)] + period - time.time()))
                published[seq_num] = time.time()
            self.publisher(name, payload)
        # the status line comes once the analysis run's stop is written: every document before it is
        _wait(lambda: f"run {raw_uid}:" in (self.directory / "serve.out").read_text(), 60 + 30 * n_events,
              f"the server's status line of run {raw_uid}", interval=0.005)
        stored = time.time()
        written = _frames_times(self._analysis(raw_uid))
        rate = len(published) / (stored - min(published.values()))
        return rate, [written[seq] - published[seq] for seq in published]

    def run_in_a_row(self, runs) -> float:
        """Publish several runs one after another at once; events/s from the first event
        published to the last run stored (its status line): a run's catalog writes overlap the
        next run's processing, or make it wait."""
        serialized = [[(name, _event_of(name, doc), dumps(doc)) for name, doc in documents] for documents in runs]
        n_events = sum(seq_num is not None for run in serialized for _, seq_num, _ in run)
        first = None
        for run in serialized:
            for name, seq_num, payload in run:
                if seq_num is not None and first is None:
                    first = time.time()
                self.publisher(name, payload)
        for documents in runs:
            raw_uid = documents[0][1]["uid"]
            _wait(lambda uid=raw_uid: f"run {uid}:" in (self.directory / "serve.out").read_text(), 60 + 30 * n_events,
                  f"the server's status line of run {raw_uid}", interval=0.005)
        return n_events / (time.time() - first)

    def _analysis(self, raw_uid: str):
        if self.db is None:
            from streamcrystal.storage.jsonl import read_documents

            for path in self.results.glob("*.jsonl"):
                docs = read_documents(path)
                if docs and docs[0][1].get("raw_uid") == raw_uid:
                    return docs
            raise KeyError(raw_uid)
        from streamcrystal.storage.writeback import analysis_runs

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


def compare(shape, *, n_events: int, repeats: int, frames=("inline", "external"), catalog: Path | None = None,
            transport: str = "tcp", engine: str | None = None, write_inline: bool = False,
            in_a_row: int = 1) -> list[dict]:
    """Median events/s and latency of the in-process and the served pipeline, per way of
    carrying the frames: ``"inline"`` (the images in the event documents, through 0MQ) or
    ``"external"`` (the images in an HDF5 file that the documents reference). With
    ``in_a_row`` > 1, events/s are of that many runs published (fed) one after another."""
    events, background = synthetic_events(shape)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_serve") as tmp:
        directory = Path(tmp)

        def documents(mode, n):
            if mode == "inline":
                return list(raw_documents(events, n))
            return list(external_documents(events, n, directory))

        chain = ServedChain(directory, background, catalog=catalog, transport=transport, engine=engine,
                            write_inline=write_inline)
        try:
            local = InProcess(background, engine=engine)
            for mode in frames:
                local.run(documents(mode, 1))  # warm up, here ...
                chain.run(documents(mode, 1))  # ... and in the server
                chain.serialize_seconds.clear()
                rates = {"in_process": [], "served": []}
                latencies = {"in_process": [], "served": []}
                for _ in range(repeats):
                    rate, latency = local.run(documents(mode, n_events))
                    latencies["in_process"] += latency
                    if in_a_row > 1:
                        rate = local.run_in_a_row([documents(mode, n_events) for _ in range(in_a_row)])
                    rates["in_process"].append(rate)
                    rate, _ = chain.run(documents(mode, n_events))
                    if in_a_row > 1:
                        rate = chain.run_in_a_row([documents(mode, n_events) for _ in range(in_a_row)])
                    rates["served"].append(rate)
                    _, latency = chain.run(documents(mode, n_events), period=1.5 / rate)
                    latencies["served"] += latency
                result = {"shape": list(shape), "events": n_events, "in_a_row": in_a_row, "repeats": repeats,
                          "frames": mode, "transport": transport,
                          "writer": "catalog" if catalog is not None else "jsonl", "write_inline": write_inline,
                          "serialize_ms": 1000 * statistics.median(chain.serialize_seconds)}
                for path in ("in_process", "served"):
                    result[f"{path}_events_per_s"] = statistics.median(rates[path])
                    result[f"{path}_latency_ms"] = 1000 * statistics.median(latencies[path])
                result["ratio"] = result["served_events_per_s"] / result["in_process_events_per_s"]
                results.append(result)
        finally:
            chain.close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60,
                        help="events per timed run (default 60; each run also pays its fixed costs: the catalog's "
                             "nodes at the start, linking, mapping and the tables written at the stop)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    parser.add_argument("--shape", default="2048x2048", help="detector ROWSxCOLS (default 2048x2048)")
    parser.add_argument("--catalog", type=Path, default=None,
                        help="the server writes into this embedded catalog (default: JSON-lines files)")
    parser.add_argument("--frames", choices=["inline", "external", "both"], default="both",
                        help="images in the documents (through 0MQ), in HDF5 files (the documents reference them), or both")
    parser.add_argument("--transport", choices=["tcp", "ipc"], default="tcp",
                        help="0MQ over TCP on localhost, or Unix sockets (ipc://, same host only)")
    parser.add_argument("--engine", default=None,
                        help="the peak finder (peak_tracking's engine: fastlocate by default, or trackpy)")
    parser.add_argument("--write-inline", action="store_true",
                        help="the server writes each result before its next document (serve --write-inline)")
    parser.add_argument("--runs-in-a-row", type=int, default=1, metavar="K",
                        help="events/s of K runs published one after another (does a run's writing delay the "
                             "next?); default 1: each run alone, stored before the next is published")
    parser.add_argument("--quick", action="store_true", help="256 x 256, 4 events, 2 repeats (a smoke run)")
    args = parser.parse_args(argv)
    import trackpy

    from streamcrystal.serve.transport import reuse_freed_memory

    trackpy.quiet()
    reuse_freed_memory()  # as the server and the proxy do: the in-process pipeline gets it too
    shape = tuple(int(n) for n in args.shape.lower().split("x"))
    n_events, repeats = args.events, args.repeats
    if args.quick:
        shape, n_events, repeats = (256, 256), 4, 2
    in_a_row = f", {args.runs_in_a_row} runs in a row" if args.runs_in_a_row > 1 else ""
    print(f"{shape[0]} x {shape[1]} detector, 5 frames/event, {n_events} events a run{in_a_row}, medians of {repeats}; "
          f"0MQ over {args.transport}; server writes to {'catalog' if args.catalog else 'jsonl'}"
          + (f"; engine {args.engine}" if args.engine else "")
          + ("; results written inline" if args.write_inline else "; results written on a writer thread"))
    print(f"{'':<44} {'events/s':>9} {'latency ms':>11}")
    modes = ("inline", "external") if args.frames == "both" else (args.frames,)
    for r in compare(shape, n_events=n_events, repeats=repeats, frames=modes, catalog=args.catalog,
                     transport=args.transport, engine=args.engine, write_inline=args.write_inline,
                     in_a_row=args.runs_in_a_row):
        where = "frames in the documents" if r["frames"] == "inline" else "frames in HDF5 files"
        print(f"{r['frames']}: {where}; publisher side (not timed): msgpack {r['serialize_ms']:.1f} ms an event")
        print(f"{'  in-process pipeline':<44} {r['in_process_events_per_s']:>9.2f} {r['in_process_latency_ms']:>11.1f}")
        print(f"{'  served: publisher->proxy->server->writer':<44} {r['served_events_per_s']:>9.2f} "
              f"{r['served_latency_ms']:>11.1f}")
        print(f"  served/in-process throughput: {r['ratio']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
