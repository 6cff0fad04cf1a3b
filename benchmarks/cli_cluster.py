"""A Dask cluster started from the command line on loopback: ``dask scheduler`` and N ``dask worker``.

What a beamline does (a scheduler and workers started as services, the pipeline connecting to
``tcp://host:port``), on this machine, for the tests and the benchmarks: unlike a
``LocalCluster``, the scheduler runs in a process of its own, so the client's process holds
only the client. Each process is ended by its id in a ``finally`` (SIGTERM, then SIGKILL).

>>> with cli_cluster(2) as address:            # doctest: +SKIP
...     client = streamcrystal.make_client(address)
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

__all__ = ["cli_cluster"]

_ADDRESS = re.compile(r"Scheduler at:\s+(tcp://127\.0\.0\.1:\d+)")


def _dask_command() -> list[str]:
    """``dask`` of this Python (its ``bin`` first, else ``python -m distributed.cli.dask_...``)."""
    here = os.path.join(os.path.dirname(sys.executable), "dask")
    if os.path.exists(here):
        return [here]
    found = shutil.which("dask")
    if found is None:
        raise RuntimeError("the 'dask' command is not installed (pip install 'dask[distributed]')")
    return [found]


def _wait_for_address(log_path: str, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            match = _ADDRESS.search(log.read())
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    with open(log_path, encoding="utf-8", errors="replace") as log:
        text = log.read()
    raise RuntimeError(f"'dask scheduler' gave no address within {timeout:.0f} s (exit code {process.poll()}); "
                       f"its log:\n{text[-2000:]}")


def _end(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def cli_cluster(n_workers: int = 2, *, nthreads: int = 1, timeout: float = 60.0, env: dict | None = None):
    """Start ``dask scheduler --host 127.0.0.1 --port 0`` and ``n_workers`` ``dask worker`` processes.

    Parameters
    ----------
    n_workers : int
        ``dask worker`` commands to start (each a nanny and its worker process).
    nthreads : int
        Threads per worker (``--nthreads``).
    timeout : float
        Seconds to wait for the scheduler's address and for the workers to connect.
    env : dict, optional
        The processes' environment (default: this one's, so ``PYTHONPATH`` carries over).

    Yields
    ------
    str
        The scheduler's address, ``tcp://127.0.0.1:PORT`` (read from its log).

    Raises
    ------
    RuntimeError
        The scheduler printed no address, or the workers did not connect, within ``timeout``;
        the message holds the end of the scheduler's log.
    """
    from distributed import Client

    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="streamcrystal-cli-cluster-") as directory:
        log_path = os.path.join(directory, "scheduler.log")
        try:
            with open(log_path, "wb") as log:
                scheduler = subprocess.Popen(
                    [*_dask_command(), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory)
            processes.append(scheduler)
            address = _wait_for_address(log_path, scheduler, timeout)
            for k in range(n_workers):
                with open(os.path.join(directory, f"worker{k}.log"), "wb") as log:
                    processes.append(subprocess.Popen(
                        [*_dask_command(), "worker", address, "--nthreads", str(nthreads), "--host", "127.0.0.1",
                         "--no-dashboard", "--name", f"cli-worker-{k}", "--local-directory", directory],
                        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory))
            with Client(address, timeout=timeout) as probe:
                try:
                    probe.wait_for_workers(n_workers, timeout=timeout)
                except Exception as err:
                    raise RuntimeError(f"{n_workers} 'dask worker' processes did not connect to {address} within "
                                       f"{timeout:.0f} s: {err}") from err
            yield address
        finally:
            for process in reversed(processes):  # the workers first, then the scheduler
                _end(process)
