"""``streamcrystal demo | simulate | replay``: simulate a scan, map it, replay a stored run.

Argument parsing and printing only; the work is in :mod:`streamcrystal.demo`,
:mod:`streamcrystal.sim` and :mod:`streamcrystal.storage.replay`, imported by the command that
runs it: building the parser imports nothing heavy, so ``streamcrystal --help`` and the
commands that need neither trackpy, numba, Dask nor the RunEngine start without loading them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import options

__all__ = ["add_commands"]


def add_commands(commands) -> None:
    """Add ``demo``, ``simulate`` and ``replay`` to the subparsers ``commands``."""
    parser = commands.add_parser(
        "demo", help="simulate a grid scan on a crystal rod and map its grains live",
        description="Run a simulated grid scan over a crystal rod with a real bluesky RunEngine, with the peak-tracking "
                    "pipeline (pipelines/peak_tracking.py) subscribed live; print a summary and write the crystal maps "
                    "(PNG), the pipeline graph and the tables to OUTPUT.",
        formatter_class=options.HelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("streamcrystal-output"), help="directory for figures and tables")
    options.add_scan(parser)
    options.add_pipeline(parser)
    parser.add_argument("--minmass", type=float, default=None, help="trackpy minmass (default: set from the simulated noise)")
    parser.add_argument("--maxsize", type=float, default=3.0,
                        help="trackpy maxsize: drop maxima broader than this (powder rings); 0 keeps all")
    parser.add_argument("--min-frames", type=int, default=3, help="map only particles seen on at least this many grid points")
    options.add_progress(parser)
    options.add_catalog(parser)
    parser.set_defaults(run=run_demo)

    parser = commands.add_parser(
        "simulate", help="store a simulated grid scan (frames in HDF5 files) in the catalog; print its uid",
        description="Run a simulated grid scan over a crystal rod with a real RunEngine; the detector writes its frames to "
                    "HDF5 files in the catalog's data directory and the run is stored in the catalog.",
        formatter_class=options.HelpFormatter)
    options.add_scan(parser)
    parser.add_argument("--dark-frames", type=int, default=2, help="readings of a 'dark' stream, shutter closed")
    options.add_catalog(parser)
    parser.set_defaults(run=run_simulate)

    parser = commands.add_parser(
        "replay", help="pipe a stored run through a pipeline and store its analysis run",
        description="Read the run UID back from the catalog (frames from their files), pipe it through the pipeline, "
                    "store the analysis run in the catalog (a new run each time) and print a summary.",
        formatter_class=options.HelpFormatter)
    options.add_run(parser)
    options.add_pipeline(parser)
    parser.add_argument("--minmass", type=float, default=None, help="trackpy minmass (default: the pipeline file's)")
    parser.add_argument("--maxsize", type=float, default=None,
                        help="trackpy maxsize (default: the pipeline file's); 0 keeps all")
    parser.add_argument("--min-frames", type=int, default=None, help="map only particles seen on at least this many grid points")
    options.add_subtrahend(parser)
    options.add_cluster(parser)
    parser.add_argument("--no-write", action="store_true", help="do not store the analysis run")
    options.add_progress(parser)
    options.add_catalog(parser)
    parser.set_defaults(run=run_replay)


def run_simulate(args: argparse.Namespace) -> int:
    from ..demo import replay_flags, sample_parameters
    from ..graph.files import load_pipeline
    from ..sim import CrystalRod, simulate_scan
    from ..storage.catalog import raw_data_dir

    db, where = options.open_catalog(args)
    write_dir = raw_data_dir(db)
    if write_dir is None:
        print("error: simulate writes HDF5 files the Tiled server must read: use the embedded catalog (--catalog)",
              file=sys.stderr)
        return 2
    uid, truth = simulate_scan(
        grid_shape=args.grid, detector_shape=args.detector, frames_per_point=args.frames, n_grains=args.grains,
        seed=args.seed, dark_frames=args.dark_frames, write_dir=write_dir, callbacks=[db.insert],
    )
    # the demo's choices for this sample (the same rod: same shapes and seed), for the hint
    rod = CrystalRod(args.grid, args.detector, frames_per_point=args.frames, n_grains=args.grains, seed=args.seed)
    flags = replay_flags(sample_parameters(rod, load_pipeline("peak_tracking")))
    print(uid)
    print(f"stored in {where}: {args.grid[0]} x {args.grid[1]} grid points, {len(truth.grains)} grains; "
          f"analyse it with: streamcrystal replay {uid}{options.catalog_flags(args)} {flags}", file=sys.stderr)
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from ..graph.cluster import dashboard_link, make_client
    from ..graph.files import load_pipeline
    from ..storage.replay import replay
    from ..views.progress import LiveProgress

    overrides = {key: value for key, value in [("minmass", args.minmass), ("maxsize", args.maxsize),
                                               ("min_frames", args.min_frames)] if value is not None}
    if overrides.get("maxsize") == 0:
        overrides["maxsize"] = None  # 0 keeps all, as in demo
    overrides.update(options.subtrahend(args))
    pipeline_file = load_pipeline(args.pipeline)  # a wrong name fails before the catalog starts
    db, where = options.open_catalog(args, existing=True)
    client = None
    if args.cluster:
        client = overrides["client"] = make_client(args.cluster)
        print(f"Dask cluster {args.cluster}: {len(client.nthreads())} workers, dashboard "
              f"{dashboard_link(client) or '(not served)'}", file=sys.stderr)
    try:
        pipe = pipeline_file.make_pipeline(**overrides)
        progress = LiveProgress(disable=args.no_progress, desc=f"replay {args.uid[:8]}")
        report = replay(db, options.run_key(args.uid), pipe, write=not args.no_write, callbacks=[progress])
    except KeyError as err:
        print(f"error: no run {args.uid!r} in the catalog {where}: {err}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    print(report.summary())
    return 0 if report.results.failure is None else 1


def run_demo(args: argparse.Namespace) -> int:
    from ..demo import demo, replay_flags

    t0 = time.perf_counter()
    report = demo(
        args.output, grid_shape=args.grid, detector_shape=args.detector, frames_per_point=args.frames,
        n_grains=args.grains, seed=args.seed, pipeline=args.pipeline, minmass=args.minmass,
        maxsize=args.maxsize or None, min_frames=args.min_frames, progress=not args.no_progress,
        catalog_path=args.catalog, uri=args.uri, api_key=args.api_key,
    )
    print(report.summary())
    flags = options.catalog_flags(args)
    pipeline_flag = "" if args.pipeline == "peak_tracking" else f" --pipeline {args.pipeline}"
    print("next:\n"
          f"  streamcrystal replay {report.raw_uid}{flags}{pipeline_flag} {replay_flags(report.parameters)} "
          f"--subtrahend {args.output / 'background.npy'}"
          "      # analyse the stored scan again, the demo's parameters (a new analysis run)\n"
          f"  streamcrystal publish {report.raw_uid}{flags}     # send it to a 'streamcrystal serve' over 0MQ\n"
          f"  python -c \"import streamcrystal as sc; print(sc.load_results(sc.catalog({options.catalog_call(args)}), "
          f"'{report.raw_uid}').maps)\"   # the stored results as pandas/xarray")
    print(f"wrote {len(report.files)} files to {args.output}/ ({time.perf_counter() - t0:.0f} s in all):")
    for path in report.files:
        print(f"  {path}")
    return 0
