"""The ``streamcrystal`` command: ``demo``, ``simulate``, ``replay``; ``serve``, ``proxy``, ``publish``,
``spool`` (0MQ, :mod:`.cli_serve`). ``--help`` on each."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that shows each default once: not where the help already names
    it, nor for options whose default is "not given" (None, an empty list) or a flag's False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        return super()._get_help_string(action)


def _shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 16x12, got {text!r}") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"a shape needs positive sizes, got {text!r}")
    return rows, cols


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamcrystal",
        description="Crystal mapping from streaming X-ray diffraction data (peak tracking on event-model documents).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="simulate a grid scan on a crystal rod and map its grains live",
        description=(
            "Run a simulated grid scan over a crystal rod with a real bluesky RunEngine, with the "
            "peak-tracking pipeline (pipelines/peak_tracking.py) subscribed live; print a summary and "
            "write the crystal maps (PNG), the pipeline graph and the tables to OUTPUT."
        ),
        formatter_class=HelpFormatter,
    )
    demo.add_argument("--output", type=Path, default=Path("streamcrystal-output"), help="directory for figures and tables")
    _scan_options(demo)
    demo.add_argument("--pipeline", default="peak_tracking", help="pipeline file, by name or path")
    demo.add_argument("--minmass", type=float, default=None, help="trackpy minmass (default: set from the simulated noise)")
    demo.add_argument("--maxsize", type=float, default=3.0,
                      help="trackpy maxsize: drop maxima broader than this (powder rings); 0 keeps all")
    demo.add_argument("--min-frames", type=int, default=3, help="map only particles seen on at least this many grid points")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _catalog_options(demo)
    demo.set_defaults(run=run_demo)

    simulate = commands.add_parser(
        "simulate",
        help="store a simulated grid scan (frames in HDF5 files) in the catalog; print its uid",
        description="Run a simulated grid scan over a crystal rod with a real RunEngine; the detector writes its "
                    "frames to HDF5 files in the catalog's data directory and the run is stored in the catalog.",
        formatter_class=HelpFormatter,
    )
    _scan_options(simulate)
    simulate.add_argument("--dark-frames", type=int, default=2, help="readings of a 'dark' stream, shutter closed")
    _catalog_options(simulate)
    simulate.set_defaults(run=run_simulate)

    replay = commands.add_parser(
        "replay",
        help="pipe a stored run through a pipeline and store its analysis run",
        description="Read the run UID back from the catalog (frames from their files), pipe it through the "
                    "pipeline, store the analysis run in the catalog (a new run each time) and print a summary.",
        formatter_class=HelpFormatter,
    )
    replay.add_argument("uid", help="the raw run: uid, unique uid prefix, or -1 for the newest run")
    replay.add_argument("--pipeline", default="peak_tracking", help="pipeline file, by name or path")
    replay.add_argument("--minmass", type=float, default=None, help="trackpy minmass (default: the pipeline file's)")
    replay.add_argument("--maxsize", type=float, default=None, help="trackpy maxsize (default: the pipeline file's)")
    replay.add_argument("--min-frames", type=int, default=None, help="map only particles seen on at least this many grid points")
    replay.add_argument("--subtrahend", type=Path, default=None,
                        help=".npy background image (default: the mean of the run's 'dark' stream)")
    replay.add_argument("--cluster", default=None, metavar="SPEC",
                        help="run the per-frame work on Dask: local:N (a LocalCluster of N worker processes) or "
                             "tcp://scheduler:8786 (a running cluster); the workers read the frames from the files")
    replay.add_argument("--no-write", action="store_true", help="do not store the analysis run")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    _catalog_options(replay)
    replay.set_defaults(run=run_replay)

    from .cli_serve import add_commands as add_serve_commands

    add_serve_commands(commands)
    return parser


def _scan_options(parser: argparse.ArgumentParser) -> None:
    """The simulated scan's options (demo and simulate)."""
    # string defaults: argparse converts them with ``type``, and --help shows them as typed
    parser.add_argument("--grid", type=_shape, default="16x12", help="scan grid ROWSxCOLS")
    parser.add_argument("--detector", type=_shape, default="1024x1024", help="detector ROWSxCOLS")
    parser.add_argument("--frames", type=int, default=5, help="frames per grid point")
    parser.add_argument("--grains", type=int, default=6, help="crystalline grains in the rod")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")


def _catalog_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("catalog")
    group.add_argument("--catalog", type=Path, default=None, metavar="PATH",
                       help="directory of the embedded catalog (default: $STREAMCRYSTAL_CATALOG or the per-user data directory)")
    group.add_argument("--uri", default=None, help="an existing Tiled server instead, e.g. http://localhost:8000")
    group.add_argument("--api-key", default=None, help="the Tiled server's API key (default: $TILED_API_KEY)")


def _open_catalog(args: argparse.Namespace):
    from .tiled_catalog import catalog, default_catalog_path

    db = catalog(args.catalog, uri=args.uri, api_key=args.api_key)
    where = args.uri or (args.catalog or default_catalog_path())
    return db, where


def _catalog_call(args: argparse.Namespace) -> str:
    if args.uri:
        return f"uri={args.uri!r}"
    return repr(str(args.catalog)) if args.catalog else ""


def _catalog_flags(args: argparse.Namespace) -> str:
    if args.uri:
        return f" --uri {args.uri}"
    return f" --catalog {args.catalog}" if args.catalog else ""


def run_simulate(args: argparse.Namespace) -> int:
    from .tiled_catalog import raw_data_dir
    from .sim import simulate_scan

    db, where = _open_catalog(args)
    write_dir = raw_data_dir(db)
    if write_dir is None:
        print("error: simulate writes HDF5 files the Tiled server must read: use the embedded catalog (--catalog)",
              file=sys.stderr)
        return 2
    uid, truth = simulate_scan(
        grid_shape=args.grid, detector_shape=args.detector, frames_per_point=args.frames, n_grains=args.grains,
        seed=args.seed, dark_frames=args.dark_frames, write_dir=write_dir, callbacks=[db.insert],
    )
    print(uid)
    print(f"stored in {where}: {args.grid[0]} x {args.grid[1]} grid points, {len(truth.grains)} grains; "
          f"analyse it with: streamcrystal replay {uid}{_catalog_flags(args)}", file=sys.stderr)
    return 0


def run_replay(args: argparse.Namespace) -> int:
    import numpy as np

    from .pipeline_files import load_pipeline
    from .replaying import replay

    overrides = {key: value for key, value in [("minmass", args.minmass), ("maxsize", args.maxsize),
                                               ("min_frames", args.min_frames)] if value is not None}
    if args.subtrahend is not None:
        overrides["subtrahend"] = np.load(args.subtrahend, allow_pickle=False)
    db, where = _open_catalog(args)
    uid = int(args.uid) if args.uid.lstrip("-").isdigit() and args.uid.startswith("-") else args.uid
    client = None
    if args.cluster:
        from .parallel import dashboard_link, make_client

        client = overrides["client"] = make_client(args.cluster)
        print(f"Dask cluster {args.cluster}: {len(client.nthreads())} workers, dashboard "
              f"{dashboard_link(client) or '(not served)'}", file=sys.stderr)
    try:
        pipe = load_pipeline(args.pipeline).make_pipeline(**overrides)
        report = replay(db, uid, pipe, write=not args.no_write, progress=not args.no_progress)
    except KeyError as err:
        print(f"error: no run {args.uid!r} in the catalog {where}: {err}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    print(report.summary())
    return 0 if report.results.failure is None else 1


def run_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    t0 = time.perf_counter()
    report = demo(
        args.output, grid_shape=args.grid, detector_shape=args.detector, frames_per_point=args.frames,
        n_grains=args.grains, seed=args.seed, pipeline=args.pipeline, minmass=args.minmass,
        maxsize=args.maxsize or None, min_frames=args.min_frames, progress=not args.no_progress,
        catalog_path=args.catalog, uri=args.uri, api_key=args.api_key,
    )
    print(report.summary())
    flags = _catalog_flags(args)
    print("next:\n"
          f"  streamcrystal replay {report.raw_uid}{flags}      # analyse the stored scan again (a new analysis run)\n"
          f"  streamcrystal publish {report.raw_uid}{flags}     # send it to a 'streamcrystal serve' over 0MQ\n"
          f"  python -c \"import streamcrystal as sc; print(sc.load_results(sc.catalog({_catalog_call(args)}), "
          f"'{report.raw_uid}').maps)\"   # the stored results as pandas/xarray")
    print(f"wrote {len(report.files)} files to {args.output}/ ({time.perf_counter() - t0:.0f} s in all):")
    for path in report.files:
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        import trackpy

        trackpy.quiet()  # trackpy.link logs a line per frame at INFO
        # Dask's loggers log every worker's start and stop at INFO, through handlers of their own
        logging.getLogger("distributed").propagate = False
    try:
        return args.run(args)
    except (ValueError, ConnectionError, FileNotFoundError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
