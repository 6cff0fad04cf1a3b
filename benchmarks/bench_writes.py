"""Benchmark: what storing one analysis run in the embedded catalog costs, and where it goes.

Run ``python -m benchmarks.bench_writes`` (``--help``; ``--quick`` for a smoke run). The
pipeline of ``pipelines/peak_tracking.py`` analyses a run in this process (``bench_serve``'s
frames in an HDF5 file, 60 events of 2048 x 2048 by default); its analysis documents are then
written, again and again, through the chain ``streamcrystal serve`` uses for a catalog
(:func:`streamcrystal.storage.writeback.catalog_writer`: maps to HDF5, then bluesky's
``TiledWriter``) into an embedded catalog (:func:`streamcrystal.catalog`), whose Tiled server
runs on a thread of this process, as in ``serve``. Per written run:

- the CPU time of this process (``time.process_time``: the writer, ``TiledWriter`` and the
  Tiled server), the wall time, and the time of each kind of document;
- the HTTP requests to Tiled by kind, with the time each kind took.

``--without-stream-closes`` is an experiment, not a setting of streamcrystal: between the
normal writes, interleaved, the same run is written with the Tiled client's ``close_stream``
made to do nothing, in this process only. ``TiledWriter`` ends each run by closing every
node it wrote (its stream), one request each; on a server without a streaming cache or
webhooks (an embedded catalog) those requests change nothing, and this measures what they
cost (what batching them upstream would save).

``--without-settings-override``, another experiment: Tiled's app overrides one dependency
(``get_settings``, with the server's configuration); with any override set, FastAPI builds
every dependency of every request anew (``inspect.signature`` of each: fastapi/fastapi#5562,
PR #14441 still open). Interleaved writes are made with the override taken out, the same
settings served from Tiled's cached ``get_settings`` instead, and put back after.

Every written run is read back (``streamcrystal.load_results``) and must hold the features,
tracks and maps the pipeline emitted, or the benchmark raises.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.bench_pipeline import synthetic_events
from benchmarks.bench_serve import InProcess, external_documents


def fresh_uids(documents: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The same analysis run under new uids (its start, descriptors, events, stop), so that it
    can be stored again beside the first copy."""
    new: dict[str, str] = collections.defaultdict(lambda: str(uuid.uuid4()))
    out = []
    for name, doc in documents:
        doc = dict(doc)
        for key in ("uid", "run_start", "descriptor"):
            if isinstance(doc.get(key), str):
                doc[key] = new[doc[key]]
        if name == "event_page":
            doc["uid"] = [new[uid] for uid in doc["uid"]]
        out.append((name, doc))
    return out


class RequestLog:
    """The Tiled client's HTTP requests, by method and endpoint, each with its duration."""

    def __init__(self, http_client) -> None:
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        send = http_client.send

        def timed_send(request, **kwargs):
            start = time.perf_counter()
            try:
                return send(request, **kwargs)
            finally:
                parts = request.url.path.split("/")  # /api/v1/<endpoint>/...
                endpoint = parts[3] if len(parts) > 3 else request.url.path
                self.times[f"{request.method} {endpoint}"].append(time.perf_counter() - start)

        http_client.send = timed_send  # this benchmark's own client object only

    def take(self) -> dict[str, list[float]]:
        times, self.times = dict(self.times), collections.defaultdict(list)
        return times


@contextlib.contextmanager
def stream_closes_skipped():
    """The experiment: the Tiled client's ``close_stream`` does nothing, for this block."""
    from tiled.client.base import BaseClient

    close_stream = BaseClient.close_stream
    BaseClient.close_stream = lambda self: None
    try:
        yield
    finally:
        BaseClient.close_stream = close_stream


@contextlib.contextmanager
def settings_override_removed(app):
    """The experiment: Tiled's ``get_settings`` override out of ``app``, for this block."""
    import tiled.server.settings as tiled_settings

    override = app.dependency_overrides.pop(tiled_settings.get_settings)
    settings, settings_class = override(), tiled_settings.Settings
    tiled_settings.get_settings.cache_clear()
    tiled_settings.Settings = lambda: settings  # the next get_settings() caches the app's settings
    try:
        tiled_settings.get_settings()
    finally:
        tiled_settings.Settings = settings_class
    try:
        yield
    finally:
        app.dependency_overrides[tiled_settings.get_settings] = override
        tiled_settings.get_settings.cache_clear()


def write_once(db, documents, requests: RequestLog) -> dict:
    """Store one analysis run through ``catalog_writer``; its costs."""
    from streamcrystal.storage.writeback import catalog_writer

    write = catalog_writer(db)
    per_document: dict[str, float] = collections.defaultdict(float)
    cpu, wall = time.process_time(), time.perf_counter()
    for name, doc in documents:
        start = time.perf_counter()
        write(name, doc)
        per_document[name] += time.perf_counter() - start
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
            "documents": dict(per_document), "requests": requests.take()}


def check_stored(db, documents) -> None:
    """The run read back holds as many rows as the pipeline emitted, stream by stream, and the
    maps as one array of one map per particle."""
    streams = {doc["uid"]: doc["name"] for name, doc in documents if name == "descriptor"}
    emitted: collections.Counter = collections.Counter()
    for name, doc in documents:
        if name == "event":
            emitted[streams[doc["descriptor"]]] += 1
        elif name == "event_page":
            emitted[streams[doc["descriptor"]]] += len(doc["seq_num"])
    run = db.v3[documents[0][1]["uid"]]
    stored = {}
    for stream in emitted:
        key = next(key for key in run[stream] if key not in ("time", "seq_num") and not key.startswith("ts_"))
        stored[stream] = run[stream][key].shape[0]
    if stored != dict(emitted):
        raise AssertionError(f"stored rows {stored}, the pipeline emitted {dict(emitted)}")
    if emitted["maps"] and run["maps"]["map"].shape[0] != emitted["maps"]:
        raise AssertionError(f"{run['maps']['map'].shape[0]} maps stored for {emitted['maps']} particles")


def measure(shape, *, n_events: int, repeats: int, skip_closes: bool = False, no_override: bool = False) -> dict:
    import streamcrystal as sc
    from streamcrystal.storage.catalog import embedded_server

    events, background = synthetic_events(shape)
    with tempfile.TemporaryDirectory(prefix="bench_writes") as tmp:
        directory = Path(tmp)
        local = InProcess(background)
        local.run(list(external_documents(events, n_events, directory)))
        analysis = list(local.out)
        db = sc.catalog(directory / "catalog")
        requests = RequestLog(db.v2.context.http_client)
        write_once(db, fresh_uids(analysis), requests)  # warm up: the catalog's first writes, imports
        app = embedded_server(directory / "catalog")._server.config.app
        experiments = {"normal": []}
        if skip_closes:
            experiments["no stream closes"] = [stream_closes_skipped]
        if no_override:
            experiments["no settings override"] = [lambda: settings_override_removed(app)]
        if skip_closes and no_override:
            experiments["neither"] = [stream_closes_skipped, lambda: settings_override_removed(app)]
        results = {mode: [] for mode in experiments}
        for _ in range(repeats):
            for mode, contexts in experiments.items():  # interleaved
                documents = fresh_uids(analysis)
                with contextlib.ExitStack() as stack:
                    for context in contexts:
                        stack.enter_context(context())
                    results[mode].append(write_once(db, documents, requests))
                check_stored(db, documents)
                requests.take()  # the check's reads are not the writes'
    counts = collections.Counter(name for name, _ in analysis)
    return {"events": n_events, "documents": dict(counts), "results": results}


def summary(runs: list[dict]) -> dict:
    """Medians over repeats: CPU, wall, per document kind, and per request kind (count, seconds)."""
    kinds = sorted({kind for run in runs for kind in run["requests"]})
    return {
        "cpu": statistics.median(run["cpu"] for run in runs),
        "wall": statistics.median(run["wall"] for run in runs),
        "documents": {name: statistics.median(run["documents"].get(name, 0.0) for run in runs)
                      for name in runs[0]["documents"]},
        "requests": {kind: (statistics.median(len(run["requests"].get(kind, [])) for run in runs),
                            statistics.median(sum(run["requests"].get(kind, [])) for run in runs)) for kind in kinds},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_writes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60, help="events of the analysed run")
    parser.add_argument("--shape", default="2048x2048", help="detector ROWSxCOLS")
    parser.add_argument("--repeats", type=int, default=5, help="runs written per mode; medians are reported")
    parser.add_argument("--without-stream-closes", action="store_true",
                        help="experiment: also write with TiledWriter's per-node stream closes skipped, interleaved")
    parser.add_argument("--without-settings-override", action="store_true",
                        help="experiment: also write with Tiled's get_settings dependency override taken out, "
                             "interleaved (with --without-stream-closes: both, too)")
    parser.add_argument("--quick", action="store_true", help="256 x 256, 4 events, 2 repeats (a smoke run)")
    args = parser.parse_args(argv)
    import trackpy

    trackpy.quiet()
    shape = tuple(int(n) for n in args.shape.lower().split("x"))
    n_events, repeats = args.events, args.repeats
    if args.quick:
        shape, n_events, repeats = (256, 256), 4, 2
    out = measure(shape, n_events=n_events, repeats=repeats, skip_closes=args.without_stream_closes,
                  no_override=args.without_settings_override)
    documents = ", ".join(f"{n} {name}" for name, n in out["documents"].items())
    print(f"one analysis run of {n_events} events at {shape[0]} x {shape[1]} ({documents}), stored "
          f"{repeats} times per mode into an embedded catalog; medians")
    for mode, runs in out["results"].items():
        s = summary(runs)
        print(f"{mode}: CPU {s['cpu']:.2f} s (this process: writer, TiledWriter, Tiled server), wall {s['wall']:.2f} s")
        print("  per document kind (s): " + ", ".join(f"{name} {t:.3f}" for name, t in s["documents"].items()))
        n_requests = sum(n for n, _ in s["requests"].values())
        print(f"  {n_requests:.0f} requests:")
        for kind, (n, seconds) in s["requests"].items():
            print(f"    {kind:<22} {n:>4.0f} {seconds:>7.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
