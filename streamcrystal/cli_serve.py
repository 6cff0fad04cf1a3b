"""The 0MQ subcommands of ``streamcrystal``: ``serve``, ``proxy``, ``publish``, ``spool``.

Argument parsing and printing only; the work is in :mod:`streamcrystal.serve` and
:mod:`streamcrystal.spool`.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

__all__ = ["add_commands"]

logger = logging.getLogger("streamcrystal")

_SECURITY = ("Documents are msgpack (numpy arrays included); --pickle accepts pickled documents, "
             "which run arbitrary code when unpickled: only on a trusted network.")


_SERVE_DEFAULTS = {"address": "localhost:5568", "prefix": "raw"}


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as minmass=600, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string: memory=grid


def _add_destination(parser: argparse.ArgumentParser, *, jsonl_help: str) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--catalog", type=Path, metavar="PATH", help="directory of the embedded catalog")
    where.add_argument("--uri", help="a Tiled server holding the catalog, e.g. http://localhost:8000")
    where.add_argument("--jsonl", type=Path, metavar="DIR", help=jsonl_help)
    parser.add_argument("--api-key", default=None, help="the Tiled server's API key (default: $TILED_API_KEY)")


def _catalog(args):
    from .tiled_catalog import catalog

    return catalog(args.catalog, uri=args.uri, api_key=args.api_key)


def _destination(args):
    """``(insert, db, description)``: the ``insert(name, doc)`` of the chosen destination (the
    catalog's :func:`~streamcrystal.writeback.analysis_inserter`, or a JSON-lines writer), the
    catalog (None for --jsonl)."""
    if args.jsonl is not None:
        from .jsonl import JsonlWriter

        return JsonlWriter(args.jsonl), None, f"{args.jsonl}/"
    from .writeback import analysis_inserter

    db = _catalog(args)
    return analysis_inserter(db), db, f"catalog {args.uri or args.catalog or 'at the default path'}"


def add_commands(commands) -> None:
    """Add ``serve``, ``proxy``, ``publish`` and ``spool`` to the subparsers ``commands``."""
    from .cli import HelpFormatter as formatter

    serve = commands.add_parser(
        "serve", help="process the documents a 0MQ proxy publishes, run after run",
        description=("Subscribe a pipeline to a 0MQ proxy (bluesky's RemoteDispatcher) and write its analysis runs; "
                     "prints one line per run. Keeps running across bad messages and failed runs; SIGINT/SIGTERM "
                     "stop it after closing the runs in progress. If the catalog cannot be reached, results are "
                     "spooled to --spool-dir and retried. " + _SECURITY),
        formatter_class=formatter)
    serve.add_argument("pipeline", metavar="PIPELINE", help="pipeline file, by name (peak_tracking) or path")
    serve.add_argument("--address", default=None,
                       help="the proxy's outbound address HOST:PORT (default: the pipeline file's SERVE, else localhost:5568)")
    serve.add_argument("--prefix", default=None,
                       help="process only documents published with this prefix (default: the pipeline file's SERVE, else raw)")
    _add_destination(serve, jsonl_help="write each analysis run to DIR/<uid>.jsonl instead of a catalog")
    serve.add_argument("--subtrahend", type=Path, metavar="FILE.npy",
                       help="background image (default: the mean of each run's dark stream)")
    serve.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                       help="override a pipeline parameter (JSON value), e.g. --param minmass=600; repeatable")
    serve.add_argument("--spool-dir", type=Path, default=None,
                       help="where results wait when the catalog is away (default $STREAMCRYSTAL_SPOOL or the user data dir)")
    serve.add_argument("--arrays-dir", type=Path, default=None,
                       help="where the maps' HDF5 files go (default: data/analysis of an embedded catalog; "
                            "with --uri, a directory the Tiled server can read)")
    serve.add_argument("--retry-interval", type=float, default=30.0, help="seconds between retries of spooled runs")
    serve.add_argument("--cluster", default=None, metavar="SPEC",
                       help="per-frame work on Dask: local:N or tcp://scheduler:8786")
    serve.add_argument("--write-inline", action="store_true",
                       help="write each result before the pipeline takes the next document (default: on a writer "
                            "thread, so that catalog round trips overlap the peak finding)")
    serve.add_argument("--pickle", action="store_true", help="accept pickled documents (unsafe: see above)")
    serve.set_defaults(run=run_serve)

    proxy = commands.add_parser(
        "proxy", help="relay documents from publishers to servers (bluesky's 0MQ proxy)",
        description=("bluesky's 0MQ Proxy: RunEngines publish to IN, servers subscribe to OUT. Ports bind "
                     "localhost only unless --bind-all; ipc:///path addresses (same host) are faster for big events."),
        formatter_class=formatter)
    proxy.add_argument("in_port", metavar="IN", help="port (or ipc:// / tcp:// address) publishers send to")
    proxy.add_argument("out_port", metavar="OUT", help="port (or address) servers subscribe to")
    proxy.add_argument("--bind-all", action="store_true",
                       help="bind every network interface (anyone who can reach this host can publish)")
    proxy.add_argument("--high-water-mark", type=int, default=0,
                       help="messages queued per server before dropping; 0: no limit (a slow server loses nothing)")
    proxy.set_defaults(run=run_proxy)

    publish = commands.add_parser(
        "publish", help="replay a stored run to a 0MQ proxy (bluesky's Publisher)",
        description="Publish the documents of a stored run (external data filled) as a RunEngine would. " + _SECURITY,
        formatter_class=formatter)
    publish.add_argument("uid", nargs="?", metavar="UID", help="the run's uid (or scan id / -1) in the catalog")
    publish.add_argument("--address", default="localhost:5567", help="the proxy's inbound address HOST:PORT")
    publish.add_argument("--prefix", default="raw", help="prefix of the published messages")
    _add_destination(publish, jsonl_help="publish the documents of a JSON-lines FILE instead of a catalog run")
    publish.add_argument("--settle", type=float, default=0.5,
                         help="seconds between connecting and publishing (0MQ drops what is sent before the proxy subscribes)")
    publish.add_argument("--pickle", action="store_true", help="send pickled documents (for old servers; unsafe)")
    publish.set_defaults(run=run_publish)

    spool = commands.add_parser(
        "spool", help="list or insert the analysis runs spooled while the catalog was away",
        description="The spool: analysis runs a server could not insert into the catalog.",
        formatter_class=formatter)
    spool.add_argument("action", choices=["list", "flush"])
    spool.add_argument("--spool-dir", type=Path, default=None, help="default $STREAMCRYSTAL_SPOOL or the user data dir")
    _add_destination(spool, jsonl_help="flush into DIR/<uid>.jsonl files instead of a catalog")
    spool.set_defaults(run=run_spool)


def _spool_dir(args) -> Path:
    from .spool import default_spool_dir

    return args.spool_dir if args.spool_dir is not None else default_spool_dir()


def run_serve(args: argparse.Namespace) -> int:
    import numpy as np

    from .pipeline_files import load_pipeline
    from .serve import Server
    from .spool import SpoolingWriter, flush_spool
    from .wire import deserializer

    from .serve import reuse_freed_memory

    reuse_freed_memory()
    insert, db, destination = _destination(args)
    overrides = dict(args.param)
    if args.subtrahend is not None:
        overrides["subtrahend"] = np.load(args.subtrahend, allow_pickle=False)
    if args.cluster:
        from .parallel import dashboard_link, make_client

        overrides["client"] = make_client(args.cluster)
        print(f"Dask cluster {args.cluster}: dashboard {dashboard_link(overrides['client']) or '(not served)'}", flush=True)
    module = load_pipeline(args.pipeline)
    pipeline = module.make_pipeline(**overrides)
    where = {**_SERVE_DEFAULTS, **getattr(module, "SERVE", {})}
    address = args.address or where["address"]
    prefix = args.prefix if args.prefix is not None else where["prefix"]
    spool_dir = _spool_dir(args)
    earlier = flush_spool(spool_dir, insert)
    for spooled, uid in earlier.inserted.items():
        print(f"inserted analysis run {spooled}, spooled by an earlier server in {spool_dir}, as {uid}", flush=True)
    for path, why in earlier.remaining.items():
        print(f"still spooled: {path} ({why})", flush=True)
    spool = SpoolingWriter(insert, spool_dir, retry_interval=args.retry_interval)
    writer = spool
    if db is not None:  # maps (2-D arrays) go to HDF5 files, the catalog's tables take the rest
        from .writeback import ArraysToHDF5, catalog_writer

        directory = args.arrays_dir if args.arrays_dir is not None else catalog_writer(db).directory
        writer = ArraysToHDF5(directory, spool)
    server = Server(pipeline, writer, spool=spool, address=address, prefix=prefix.encode(),
                    deserializer=deserializer("pickle" if args.pickle else "msgpack"),
                    on_run=lambda status: print(status.line(), flush=True), destination=destination,
                    write_in_thread=not args.write_inline)
    print(f"serving {args.pipeline} on {server.address} (prefix {prefix!r}, "
          f"{'pickle' if args.pickle else 'msgpack'}) -> {destination}", flush=True)
    report = server.run()
    closed = f", {len(report.closed_early)} closed early" if report.closed_early else ""
    print(f"stopped ({report.stopped_by}): {len(report.runs)} runs{closed}, {report.dropped} messages dropped", flush=True)
    for path in report.spooled:
        print(f"results waiting in the spool: {path} (insert with `streamcrystal spool flush`)", flush=True)
    close = getattr(insert, "close", None)
    if close is not None:
        close()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_proxy(args: argparse.Namespace) -> int:
    from .serve import make_proxy, reuse_freed_memory

    signal.signal(signal.SIGTERM, _interrupt)  # stop like SIGINT: sockets closed, exit status 0
    reuse_freed_memory()

    proxy = make_proxy(args.in_port, args.out_port, bind_all=args.bind_all, high_water_mark=args.high_water_mark)
    print(f"proxy: publishers -> {proxy.in_port}, servers <- {proxy.out_port}", flush=True)
    try:
        proxy.start()
    except KeyboardInterrupt:
        pass
    return 0


def _stored_documents(args):
    if args.jsonl is not None:
        from .jsonl import read_documents

        return read_documents(args.jsonl)
    if args.uid is None:
        raise SystemExit("streamcrystal publish: give the UID of a run (or --jsonl FILE)")
    db = _catalog(args)
    key = int(args.uid) if args.uid.startswith("-") and args.uid[1:].isdigit() else args.uid
    # as stored: frames in external files stay there (StreamResource/Resource), the server reads them
    return ((name, dict(doc)) for name, doc in db[key].documents(fill=False))


def run_publish(args: argparse.Namespace) -> int:
    from .serve import publish_documents
    from .wire import serializer

    counts = publish_documents(_stored_documents(args), args.address, prefix=args.prefix.encode(),
                               serializer=serializer("pickle" if args.pickle else "msgpack"), settle=args.settle)
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    print(f"published {summary} to {args.address} (prefix {args.prefix!r})", flush=True)
    return 0


def run_spool(args: argparse.Namespace) -> int:
    from .spool import flush_spool, spooled_runs

    spool_dir = _spool_dir(args)
    if args.action == "list":
        paths = spooled_runs(spool_dir)
        for path in paths:
            print(path)
        print(f"{len(paths)} analysis runs spooled in {spool_dir}", file=sys.stderr)
        return 0
    insert, _, destination = _destination(args)
    report = flush_spool(spool_dir, insert)
    for spooled, uid in report.inserted.items():
        print(f"inserted analysis run {spooled} into {destination} as {uid}")
    for path, why in report.remaining.items():
        print(f"still spooled: {path} ({why})")
    return 0 if report else 1
