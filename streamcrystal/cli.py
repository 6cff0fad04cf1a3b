"""The ``streamcrystal`` command: ``demo``; ``serve``, ``proxy``, ``publish``, ``spool`` (0MQ, :mod:`.cli_serve`)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--output", type=Path, default=Path("streamcrystal-output"), help="directory for figures and tables")
    demo.add_argument("--grid", type=_shape, default=(16, 12), help="scan grid ROWSxCOLS")
    demo.add_argument("--detector", type=_shape, default=(1024, 1024), help="detector ROWSxCOLS")
    demo.add_argument("--frames", type=int, default=5, help="frames per grid point")
    demo.add_argument("--grains", type=int, default=6, help="crystalline grains in the rod")
    demo.add_argument("--seed", type=int, default=0, help="simulation seed")
    demo.add_argument("--pipeline", default="peak_tracking", help="pipeline file, by name or path")
    demo.add_argument("--minmass", type=float, default=None, help="trackpy minmass (default: set from the simulated noise)")
    demo.add_argument("--maxsize", type=float, default=3.0,
                      help="trackpy maxsize: drop maxima broader than this (powder rings); 0 keeps all")
    demo.add_argument("--min-frames", type=int, default=3, help="map only particles seen on at least this many grid points")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=run_demo)

    from .cli_serve import add_commands as add_serve_commands

    add_serve_commands(commands)
    return parser


def run_demo(args: argparse.Namespace) -> int:
    from .demo import demo

    t0 = time.perf_counter()
    report = demo(
        args.output, grid_shape=args.grid, detector_shape=args.detector, frames_per_point=args.frames,
        n_grains=args.grains, seed=args.seed, pipeline=args.pipeline, minmass=args.minmass,
        maxsize=args.maxsize or None, min_frames=args.min_frames, progress=not args.no_progress,
    )
    print(report.summary())
    print(f"wrote {len(report.files)} files to {args.output}/ ({time.perf_counter() - t0:.0f} s in all):")
    for path in report.files:
        print(f"  {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
