"""The options that several commands share, each defined once, and how they become objects.

Argument parsing only: no work and no printing here.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..storage.catalog import DATABASE, catalog, default_catalog_path, holds_catalog

__all__ = ["HelpFormatter", "shape", "param", "add_catalog", "open_catalog", "catalog_flags", "catalog_call",
           "add_run", "run_key", "add_pipeline", "add_subtrahend", "subtrahend", "add_cluster", "add_progress",
           "add_scan"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that shows each default once: not where the help already names
    it, nor for options whose default is "not given" (None, an empty list) or a flag's False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        return super()._get_help_string(action)


def shape(text: str) -> tuple[int, int]:
    """``ROWSxCOLS`` as a pair of positive integers.

    Examples
    --------
    >>> shape("16x12")
    (16, 12)
    """
    try:
        rows, cols = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 16x12, got {text!r}") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"a shape needs positive sizes, got {text!r}")
    return rows, cols


def param(text: str) -> tuple[str, object]:
    """``KEY=VALUE``, the value read as JSON (else kept as a string: ``memory=grid``).

    Examples
    --------
    >>> param("minmass=600"), param("memory=grid")
    (('minmass', 600), ('memory', 'grid'))
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as minmass=600, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_catalog(parser: argparse.ArgumentParser, *, jsonl_help: str | None = None, jsonl_metavar: str = "DIR") -> None:
    """``--catalog PATH | --uri URI`` (or, with ``jsonl_help``, ``--jsonl DIR`` instead), ``--api-key``."""
    group = parser.add_argument_group("where runs are stored")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--catalog", type=Path, default=None, metavar="PATH",
                       help="directory of the embedded catalog (default: $STREAMCRYSTAL_CATALOG or the per-user "
                            "data directory)")
    where.add_argument("--uri", default=None, help="an existing Tiled server instead, e.g. http://localhost:8000")
    if jsonl_help is not None:
        where.add_argument("--jsonl", type=Path, default=None, metavar=jsonl_metavar, help=jsonl_help)
    group.add_argument("--api-key", default=None, help="the Tiled server's API key (default: $TILED_API_KEY)")


def open_catalog(args: argparse.Namespace, *, existing: bool = False):
    """``(db, where)``: the catalog of ``--catalog``/``--uri`` and how to name it.

    With ``existing``, for commands that read runs, an embedded catalog must be there already
    (FileNotFoundError) rather than made anew: a mistyped ``--catalog`` is not an empty catalog.
    """
    where = args.uri or (args.catalog or default_catalog_path())
    if existing and not args.uri and not holds_catalog(where):
        raise FileNotFoundError(f"no catalog in {where} ({DATABASE} not found): check --catalog, or store runs "
                                "there first (streamcrystal simulate, demo)")
    return catalog(args.catalog, uri=args.uri, api_key=args.api_key), where


def catalog_flags(args: argparse.Namespace) -> str:
    """The catalog options again, to print the next command."""
    if args.uri:
        return f" --uri {args.uri}"
    return f" --catalog {args.catalog}" if args.catalog else ""


def catalog_call(args: argparse.Namespace) -> str:
    """The arguments of ``streamcrystal.catalog(...)`` for the same catalog, to print Python."""
    if args.uri:
        return f"uri={args.uri!r}"
    return repr(str(args.catalog)) if args.catalog else ""


def add_run(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """The positional ``UID`` of a stored raw run."""
    parser.add_argument("uid", metavar="UID", nargs="?" if optional else None,
                        help="the raw run: its uid, a unique uid prefix, or -1 for the newest run")


def run_key(uid: str) -> str | int:
    """A uid as databroker takes it: ``-1`` as an index, anything else as a uid (prefix).

    Examples
    --------
    >>> run_key("-1"), run_key("3f2a")
    (-1, '3f2a')
    """
    return int(uid) if uid.startswith("-") and uid[1:].isdigit() else uid


def add_pipeline(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    """The pipeline file, by name or path."""
    if positional:
        parser.add_argument("pipeline", metavar="PIPELINE", help="pipeline file, by name (peak_tracking) or path")
    else:
        parser.add_argument("--pipeline", default="peak_tracking", help="pipeline file, by name or path")


def add_subtrahend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subtrahend", type=Path, default=None, metavar="FILE.npy",
                        help="background image (default: the mean of each run's 'dark' stream)")


def subtrahend(args: argparse.Namespace) -> dict:
    """``{"subtrahend": array}`` for ``make_pipeline`` if ``--subtrahend`` was given (never unpickled)."""
    import numpy as np

    return {} if args.subtrahend is None else {"subtrahend": np.load(args.subtrahend, allow_pickle=False)}


def add_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default=None, metavar="SPEC",
                        help="run the per-frame work on Dask: local:N (a LocalCluster of N worker processes) or "
                             "tcp://scheduler:8786 (a running cluster); the workers read the frames from the files")


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_scan(parser: argparse.ArgumentParser) -> None:
    """The simulated scan's options (demo and simulate)."""
    # string defaults: argparse converts them with ``type``, and --help shows them as typed
    parser.add_argument("--grid", type=shape, default="16x12", help="scan grid ROWSxCOLS")
    parser.add_argument("--detector", type=shape, default="1024x1024", help="detector ROWSxCOLS")
    parser.add_argument("--frames", type=int, default=5, help="frames per grid point")
    parser.add_argument("--grains", type=int, default=6, help="crystalline grains in the rod")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
