"""``streamcrystal serve | proxy | publish | spool``: the pipeline served over 0MQ, and its spool.

Argument parsing and printing only; the work is in :mod:`streamcrystal.serve` and
:mod:`streamcrystal.storage`, imported by the command that runs it (``proxy`` loads 0MQ and
bluesky's proxy, not the pipeline's science; ``--help`` loads nothing heavy).
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..storage.catalog import default_catalog_path
from . import options

__all__ = ["add_commands"]

_SECURITY = ("Documents are msgpack (numpy arrays included); --pickle accepts pickled documents, "
             "which run arbitrary code when unpickled: only on a trusted network.")
_SERVE_DEFAULTS = {"address": "localhost:5568", "prefix": "raw"}


def add_commands(commands) -> None:
    """Add ``serve``, ``proxy``, ``publish`` and ``spool`` to the subparsers ``commands``."""
    parser = commands.add_parser(
        "serve", help="process the documents a 0MQ proxy publishes, run after run",
        description=("Subscribe a pipeline to a 0MQ proxy (bluesky's RemoteDispatcher) and write its analysis runs; "
                     "prints one line per run. Keeps running across bad messages and failed runs; SIGINT/SIGTERM "
                     "stop it after closing the runs in progress. The catalog must be reachable at start; if it cannot be "
                     "reached later, results are spooled to --spool-dir and retried. " + _SECURITY),
        formatter_class=options.HelpFormatter)
    options.add_pipeline(parser, positional=True)
    parser.add_argument("--address", default=None,
                        help="the proxy's outbound address HOST:PORT (default: the pipeline file's SERVE, else localhost:5568)")
    parser.add_argument("--prefix", default=None,
                        help="process only documents published with this prefix (default: the pipeline file's SERVE, else raw)")
    options.add_catalog(parser, jsonl_help="write each analysis run to DIR/<uid>.jsonl instead of a catalog")
    options.add_subtrahend(parser)
    parser.add_argument("--param", type=options.param, action="append", default=[], metavar="KEY=VALUE",
                        help="override a pipeline parameter (JSON value), e.g. --param minmass=600; repeatable")
    parser.add_argument("--spool-dir", type=Path, default=None,
                        help="where results wait when the catalog is away (default $STREAMCRYSTAL_SPOOL or the user data dir)")
    parser.add_argument("--arrays-dir", type=Path, default=None,
                        help="where the maps' HDF5 files go (default: data/analysis of an embedded catalog; "
                             "with --uri, a directory the Tiled server can read)")
    parser.add_argument("--retry-interval", type=float, default=30.0, help="seconds between retries of spooled runs")
    options.add_cluster(parser)
    parser.add_argument("--write-inline", action="store_true",
                        help="write each result before the pipeline takes the next document (default: on a writer "
                             "thread, so that catalog round trips overlap the peak finding)")
    parser.add_argument("--pickle", action="store_true", help="accept pickled documents (unsafe: see above)")
    parser.set_defaults(run=run_serve)

    parser = commands.add_parser(
        "proxy", help="relay documents from publishers to servers (bluesky's 0MQ proxy)",
        description=("bluesky's 0MQ Proxy: RunEngines publish to IN, servers subscribe to OUT. Ports bind "
                     "localhost only unless --bind-all; ipc:///path addresses (same host) are faster for big events."),
        formatter_class=options.HelpFormatter)
    parser.add_argument("in_port", metavar="IN", help="port (or ipc:// / tcp:// address) publishers send to")
    parser.add_argument("out_port", metavar="OUT", help="port (or address) servers subscribe to")
    parser.add_argument("--bind-all", action="store_true",
                        help="bind every network interface (anyone who can reach this host can publish)")
    parser.add_argument("--high-water-mark", type=int, default=0,
                        help="messages queued per server before dropping; 0: no limit (a slow server loses nothing)")
    parser.set_defaults(run=run_proxy)

    parser = commands.add_parser(
        "publish", help="replay a stored run to a 0MQ proxy (bluesky's Publisher)",
        description="Publish the documents of a stored raw run as a RunEngine would; frames in external files stay "
                    "there (the server reads them). " + _SECURITY,
        formatter_class=options.HelpFormatter)
    options.add_run(parser, optional=True)
    parser.add_argument("--address", default="localhost:5567", help="the proxy's inbound address HOST:PORT")
    parser.add_argument("--prefix", default="raw", help="prefix of the published messages")
    options.add_catalog(parser, jsonl_help="publish the documents of a JSON-lines FILE instead of a catalog run",
                        jsonl_metavar="FILE")
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds between connecting and publishing (0MQ drops what is sent before the proxy subscribes)")
    parser.add_argument("--pickle", action="store_true", help="send pickled documents (for old servers; unsafe)")
    parser.set_defaults(run=run_publish)

    parser = commands.add_parser(
        "spool", help="list or insert the analysis runs spooled while the catalog was away",
        description="The spool: analysis runs a server could not insert into the catalog.",
        formatter_class=options.HelpFormatter)
    parser.add_argument("action", choices=["list", "flush"],
                        help="list: the spooled runs' journals; flush: insert them into the catalog (or --jsonl)")
    parser.add_argument("--spool-dir", type=Path, default=None, help="default $STREAMCRYSTAL_SPOOL or the user data dir")
    options.add_catalog(parser, jsonl_help="flush into DIR/<uid>.jsonl files instead of a catalog")
    parser.set_defaults(run=run_spool)


def _plural(n: int, noun: str) -> str:
    """``"1 run"``, ``"2 runs"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _where(args) -> str:
    if args.jsonl is not None:
        return f"{args.jsonl}/"
    return f"catalog {args.uri or args.catalog or default_catalog_path()}"


def run_serve(args: argparse.Namespace) -> int:
    from ..graph.cluster import dashboard_link, make_client
    from ..graph.files import load_pipeline
    from ..serve.server import Server
    from ..serve.transport import reuse_freed_memory
    from ..serve.wire import deserializer
    from ..storage.spool import default_spool_dir
    from ..storage.writeback import results_writer

    reuse_freed_memory()
    module = load_pipeline(args.pipeline)  # a wrong name fails before the catalog starts
    db = None if args.jsonl is not None else options.open_catalog(args)[0]
    spool_dir = args.spool_dir if args.spool_dir is not None else default_spool_dir()
    chain = results_writer(db, jsonl=args.jsonl, spool_dir=spool_dir, arrays_dir=args.arrays_dir,
                           retry_interval=args.retry_interval, description=_where(args))
    for spooled, uid in chain.earlier.inserted.items():
        print(f"inserted analysis run {spooled}, spooled by an earlier server in {spool_dir}, as {uid}", flush=True)
    for path, why in chain.earlier.remaining.items():
        print(f"still spooled: {path} ({why})", flush=True)
    overrides = {**dict(args.param), **options.subtrahend(args)}
    if args.cluster:
        overrides["client"] = make_client(args.cluster)
        print(f"Dask cluster {args.cluster}: dashboard {dashboard_link(overrides['client']) or '(not served)'}", flush=True)
    pipeline = module.make_pipeline(**overrides)
    where = {**_SERVE_DEFAULTS, **getattr(module, "SERVE", {})}
    address = args.address or where["address"]
    prefix = args.prefix if args.prefix is not None else where["prefix"]
    server = Server(pipeline, chain.write, spool=chain.spool, address=address, prefix=prefix.encode(),
                    deserializer=deserializer("pickle" if args.pickle else "msgpack"),
                    on_run=lambda status: print(status.line(), flush=True), destination=chain.destination,
                    write_in_thread=not args.write_inline)
    print(f"serving {args.pipeline} on {server.address} (prefix {prefix!r}, "
          f"{'pickle' if args.pickle else 'msgpack'}) -> {chain.destination}", flush=True)
    report = server.run()
    closed = f", {len(report.closed_early)} closed early" if report.closed_early else ""
    print(f"stopped ({report.stopped_by}): {_plural(len(report.runs), 'run')}{closed}, "
          f"{_plural(report.dropped, 'message')} dropped", flush=True)
    for path in report.spooled:
        print(f"results waiting in the spool: {path} (insert with `streamcrystal spool flush`)", flush=True)
    chain.close_destination()
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_proxy(args: argparse.Namespace) -> int:
    from ..serve.transport import make_proxy, reuse_freed_memory

    signal.signal(signal.SIGTERM, _interrupt)  # stop like SIGINT: sockets closed, exit status 0
    # a shell starts background jobs of a script with SIGINT ignored: Ctrl-C and kill -INT stop it all the same
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reuse_freed_memory()
    proxy = make_proxy(args.in_port, args.out_port, bind_all=args.bind_all, high_water_mark=args.high_water_mark)
    print(f"proxy: publishers -> {proxy.in_port}, servers <- {proxy.out_port}", flush=True)
    try:
        proxy.start()
    except KeyboardInterrupt as interrupt:
        print(f"proxy stopped ({interrupt or 'SIGINT'})", flush=True)
    return 0


def _stored_documents(args):
    from ..storage.jsonl import read_documents

    if args.jsonl is not None:
        return read_documents(args.jsonl)
    if args.uid is None:
        raise SystemExit("streamcrystal publish: give the UID of a run (or --jsonl FILE)")
    db, where = options.open_catalog(args, existing=True)
    try:
        header = db[options.run_key(args.uid)]
    except KeyError as err:
        raise ValueError(f"no run {args.uid!r} in the catalog {where}: {err}") from None
    if "analysis_stage" in header.start:
        raise ValueError(f"run {header.start['uid']} is an analysis run ({header.start['analysis_stage']}) of raw run "
                         f"{header.start.get('raw_uid')}: publish the raw run")
    # as stored: frames in external files stay there (StreamResource/Resource), the server reads them
    return ((name, dict(doc)) for name, doc in header.documents(fill=False))


def run_publish(args: argparse.Namespace) -> int:
    from ..serve.transport import publish_documents
    from ..serve.wire import serializer

    counts = publish_documents(_stored_documents(args), args.address, prefix=args.prefix.encode(),
                               serializer=serializer("pickle" if args.pickle else "msgpack"), settle=args.settle)
    summary = ", ".join(f"{n} {name}" for name, n in counts.items())
    print(f"published {summary} to {args.address} (prefix {args.prefix!r})", flush=True)
    return 0


def run_spool(args: argparse.Namespace) -> int:
    from ..storage.jsonl import JsonlWriter
    from ..storage.spool import default_spool_dir, flush_spool, spooled_runs
    from ..storage.writeback import analysis_inserter

    spool_dir = args.spool_dir if args.spool_dir is not None else default_spool_dir()
    if args.action == "list":
        paths = spooled_runs(spool_dir)
        for path in paths:
            print(path)
        print(f"{_plural(len(paths), 'analysis run')} spooled in {spool_dir}", file=sys.stderr)
        return 0
    if not spooled_runs(spool_dir):
        print(f"nothing to flush: no analysis runs spooled in {spool_dir}", file=sys.stderr)
        return 0
    insert = JsonlWriter(args.jsonl) if args.jsonl is not None else analysis_inserter(options.open_catalog(args)[0])
    report = flush_spool(spool_dir, insert)
    for spooled, uid in report.inserted.items():
        print(f"inserted analysis run {spooled} into {_where(args)} as {uid}")
    for path, why in report.remaining.items():
        print(f"still spooled: {path} ({why})")
    getattr(insert, "close", lambda: None)()
    return 0 if report else 1
