"""Helpers for tests with real processes and sockets: free ports, polling, subprocesses.

Subprocesses run the checkout under test: their PYTHONPATH is the directory above the
imported ``streamcrystal`` package.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import event_model
import pandas as pd

import streamcrystal

REPO = Path(streamcrystal.__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, *, interval: float = 0.05, on_timeout=lambda: ""):
    """Poll ``predicate`` until it is true (returns its value); fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{on_timeout()}")
        time.sleep(interval)


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MPLBACKEND", "Agg")
    return env


class Process:
    """``python -m streamcrystal.cli ARGS`` with stdout and stderr in files under ``directory``."""

    def __init__(self, args, directory: Path, label: str) -> None:
        self.args = [str(a) for a in args]
        self.out = directory / f"{label}.out"
        self.err = directory / f"{label}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.popen = subprocess.Popen([sys.executable, "-m", "streamcrystal.cli", *self.args],
                                          stdout=out, stderr=err, env=subprocess_env(), cwd=directory)

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def output(self) -> str:
        return f"--- {' '.join(self.args)} (rc {self.popen.poll()})\nstdout:\n{self.stdout()}\nstderr:\n{self.stderr()[-3000:]}"

    def wait_output(self, text: str, timeout: float = 60, *, stream: str = "stdout") -> str:
        read = self.stdout if stream == "stdout" else self.stderr

        def seen():
            if self.popen.poll() is not None and text not in read():
                raise AssertionError(f"the process ended before printing {text!r}\n{self.output()}")
            return text in read()

        wait_for(seen, timeout, f"{text!r} from {self.args[0]}", on_timeout=self.output)
        return read()

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def terminate_all(processes) -> None:
    for process in processes:
        if process.popen.poll() is None:
            process.signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def connect(publish_ping, server: Process, timeout: float = 60) -> None:
    """Ping through ``publish_ping()`` until the server reports dropping the ping (the whole
    chain publisher -> proxy -> server is then subscribed)."""
    def heard():
        if server.popen.poll() is not None:
            raise AssertionError(f"the server ended\n{server.output()}")
        publish_ping()
        return "a message named 'ping'" in server.stderr()

    wait_for(heard, timeout, "the server to hear a ping", interval=0.1, on_timeout=server.output)


def streams(documents) -> dict[str, pd.DataFrame]:
    """The data of each stream of one run's documents, as DataFrames (by seq_num)."""
    names, rows = {}, {}
    for name, doc in documents:
        if name == "descriptor":
            names[doc["uid"]] = doc["name"]
        elif name == "event":
            rows.setdefault(names[doc["descriptor"]], []).append(doc["data"])
        elif name == "event_page":
            rows.setdefault(names[doc["descriptor"]], []).extend(e["data"] for e in event_model.unpack_event_page(doc))
    return {stream: pd.DataFrame(data) for stream, data in rows.items()}
