"""The ``streamcrystal`` command: parse, set up logging, run one subcommand (``--help`` on each)."""
from __future__ import annotations

import argparse
import logging
import sys

from . import analysis, serving

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand: demo, simulate, replay (:mod:`.analysis`); serve, proxy,
    publish, spool (:mod:`.serving`)."""
    parser = argparse.ArgumentParser(
        prog="streamcrystal",
        description="Crystal mapping from streaming X-ray diffraction data (peak tracking on event-model documents).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    analysis.add_commands(commands)
    serving.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``streamcrystal ARGV``; returns the exit status (errors a user can fix: 2, printed)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Dask's loggers log every worker's start and stop at INFO, through handlers of their own
        logging.getLogger("distributed").propagate = False
    try:
        return args.run(args)
    except (ValueError, ConnectionError, FileNotFoundError, NotADirectoryError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
