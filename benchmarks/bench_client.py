"""Benchmark: how many events one client can put through a Dask cluster (issue 16, part 2).

Run ``python -m benchmarks.bench_client`` (``--help`` for options). Small events (512 x 512,
one uint16 frame each, so the workers are not the limit) go through
``peak_tracking(client=...)`` with 2 workers, and the benchmark reports, per mode (medians of
repeats, the modes in turn):

- events/s through the pipeline (``pipe(name, doc)`` for every document of a run, until the
  stop returns with the run linked and mapped);
- the client process's CPU per event (all its threads; with ``--cluster local`` that includes
  the in-process scheduler of the ``LocalCluster``, with ``--cluster cli`` it does not);
- the CPU per event of the client's event-loop thread, where the graph, scatter and gather run;
- the CPU per event of the cluster's processes (the scheduler, when it is not the client's
  process, and the workers), so the whole budget of an event shows: on a machine of C cores,
  nothing can go faster than C / (the sum) events/s.

Modes: ``serial`` (no cluster, the reference), ``inline`` (the frames in the event documents;
through shared memory when the workers share this host), ``HDF5`` (StreamResource/StreamDatum,
one StreamDatum and one event per frame, as a step scan gives them: only references travel) and
``HDF5 fly`` (a fly scan: one StreamDatum and one event page for every 50 frames, as a fast
detector flushing its file gives them; the frames of one StreamDatum travel in tasks of 16,
:class:`streamcrystal.graph.dask.GroupFrames`). Every mode must find the serial pipeline's
peaks, or the run stops. A step scan's events given while the cluster is busy also travel in
groups (:class:`~streamcrystal.graph.dask.GroupFrames`).

One more mode, ``HDF5 no work``, measures the client's own ceiling: the step scan of
``HDF5``, the workers neither reading the frames nor finding peaks (:func:`read_nothing`,
:func:`located_nothing`), so that the workers are no longer the limit on two cores: the
events/s a client (and scheduler) can route, not an analysis rate. Its frames must all come
back, each with no peak.

``--cluster cli`` starts ``dask scheduler`` and 2 ``dask worker`` processes from the command
line on loopback (:mod:`benchmarks.cli_cluster`); ``--cluster tcp://host:port`` uses a running
scheduler; ``--cluster local`` a ``LocalCluster`` (``make_client("local:2")``).
``--profile FILE`` writes a cProfile of the client's event-loop thread over one HDF5 run and
prints where its time goes.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time

import cloudpickle
import numpy as np

from benchmarks.bench_parallel import hdf5_documents, write_hdf5
from benchmarks.bench_pipeline import DATA_KEY, raw_documents

SMALL = (512, 512)
FLY_PER_DATUM = 50  # frames a fast detector's StreamDatum covers (100 frames/s, its file flushed every 0.5 s)
LOCATE = {"diameter": 11, "percentile": 80, "separation": 20}


def small_events(shape=SMALL, *, n_distinct: int = 4, n_spots: int = 12, seed: int = 0):
    """``n_distinct`` one-frame uint16 events of the same spots (new noise each): the peaks link
    from event to event into ``n_spots`` particles, so the end of a run (maps, grains) stays small
    and the client's per-event path is what is measured."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    mean = np.full(shape, 100.0)
    yy, xx = np.mgrid[0:rows, 0:cols]
    for r, c in zip(rng.uniform(30, rows - 30, n_spots), rng.uniform(30, cols - 30, n_spots)):
        mean += rng.uniform(500, 2000) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 8.0)
    events = [np.clip(mean + np.sqrt(mean) * rng.standard_normal((1, *shape)), 0, 65535).astype(np.uint16)
              for _ in range(n_distinct)]
    return events, np.full(shape, 100.0)


def read_nothing(task, **process_options):
    """The workers' ``process`` step of the ``HDF5 no work`` mode: the frame is not read, its
    image is one zero pixel."""
    from streamcrystal.records import replace

    return replace(task, frames=None, background=None, image=np.zeros((1, 1)))


def located_nothing(task, **locate_options):
    """The workers' ``locate`` step of the ``HDF5 no work`` mode: the frame's result with no
    peak (``locate_step`` on an all-zero image), at about 0.2 ms."""
    from streamcrystal.graph.steps import locate_step
    from streamcrystal.records import replace

    return locate_step(replace(task, image=np.zeros((1, 1))), **locate_options)


def _loop_thread_id(client) -> int:
    """The native id of the client's event-loop thread (where the pipeline's graph runs)."""
    async def native_id():
        return threading.get_native_id()
    return client.sync(native_id)


def _thread_cpu(native_id: int) -> float:
    import psutil

    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return float("nan")


def _cluster_processes(client) -> dict:
    """psutil processes of the cluster's scheduler (unless it is this process) and workers, by role."""
    import psutil

    here = os.getpid()
    scheduler = client.run_on_scheduler(os.getpid)
    workers = sorted(client.run(os.getpid).values())
    roles = {"workers": [psutil.Process(pid) for pid in workers]}
    if scheduler != here:
        roles["scheduler"] = [psutil.Process(scheduler)]
    return roles


def _cpu_of(roles: dict) -> dict:
    """CPU seconds (user + system) used so far by each role's processes."""
    return {role: sum(sum(process.cpu_times()[:2]) for process in processes) for role, processes in roles.items()}


def run_once(make_docs, background, *, client=None, profile: cProfile.Profile | None = None,
             max_in_flight: int | None = None, cluster: dict | None = None, work: dict | None = None):
    """Feed one run: (seconds, client process CPU s, loop thread CPU s, peaks per frame, the CPU s of
    each role of ``cluster`` (:func:`_cluster_processes`)); ``work``: the DaskFrames' steps."""
    work = work or {}
    from streamcrystal import peak_tracking

    from streamcrystal.graph.dask import DaskFrames

    if client is not None:
        client = DaskFrames(client, max_in_flight=max_in_flight, **work)
    pipe = peak_tracking(DATA_KEY, subtrahend=background, search_range=20, client=client, **LOCATE)
    peaks = []
    pipe.nodes["frame_results"].sink(lambda result: peaks.append((result.seq_num, result.n_peaks)))
    loop_id = _loop_thread_id(client.client) if client is not None else threading.get_native_id()
    docs = list(make_docs())
    if profile is not None:
        async def enable():
            profile.enable()
        client.client.sync(enable)
    roles0 = _cpu_of(cluster or {})
    cpu0, loop0, t0 = time.process_time(), _thread_cpu(loop_id), time.perf_counter()
    for name, doc in docs:
        pipe(name, doc)
    elapsed = time.perf_counter() - t0
    cpu, loop = time.process_time() - cpu0, _thread_cpu(loop_id) - loop0
    roles = {role: used - roles0[role] for role, used in _cpu_of(cluster or {}).items()}
    if profile is not None:
        async def disable():
            profile.disable()
        client.client.sync(disable)
    pipe.close()
    return elapsed, cpu, loop, sorted(peaks), roles


@contextlib.contextmanager
def connect(spec: str, n_workers: int):
    """A client for ``spec``: ``local`` (LocalCluster), ``cli`` (dask scheduler/worker commands) or an address."""
    from streamcrystal import make_client

    if spec == "local":
        with make_client(f"local:{n_workers}") as client:
            yield client
    elif spec == "cli":
        from benchmarks.cli_cluster import cli_cluster

        with cli_cluster(n_workers) as address, make_client(address, direct_to_workers=True) as client:
            yield client
    else:
        with make_client(spec, direct_to_workers=True) as client:
            yield client


def measure(*, cluster: str = "local", n_events: int = 200, repeats: int = 3, n_workers: int = 2, shape=SMALL,
            profile_path: str | None = None, max_in_flight: int | None = None, say=print) -> dict:
    """Events/s and CPU per event of each mode (medians); the peaks checked equal to serial."""
    from streamcrystal.science.frames import process_frames
    from streamcrystal.science.peaks import locate

    if __name__ != "__main__":  # the workers may not import this module: its steps of 'no work' travel by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    events, background = small_events(shape)
    locate(process_frames(events[0], background), **LOCATE)  # numba's compilation, outside the timings
    inline = lambda: raw_documents(events, n_events)  # noqa: E731
    results = {}
    with tempfile.TemporaryDirectory(prefix="streamcrystal-bench-") as directory, connect(cluster, n_workers) as client:
        path = write_hdf5(events, directory)
        referenced = lambda: hdf5_documents(path, len(events), n_events, events[0].shape)  # noqa: E731
        fly_path = write_hdf5([events[k % len(events)] for k in range(FLY_PER_DATUM + len(events))], directory,
                              name="fly.h5")
        fly = lambda: hdf5_documents(fly_path, len(events), n_events, events[0].shape,  # noqa: E731
                                     per_datum=FLY_PER_DATUM)
        where = client.run(lambda: __import__("streamcrystal").__file__)
        say(f"cluster {cluster}: {client.scheduler.address}, {len(where)} workers, streamcrystal from "
            f"{sorted(set(where.values()))}")
        # warm-up of the workers, both ways: numba compiles a kernel for each kind of array it meets (a
        # frame mapped from shared memory, one read from a file), about 2 s a worker, not to be timed
        for warm_up in (lambda: raw_documents(events, 10),
                        lambda: hdf5_documents(path, len(events), 10, events[0].shape),
                        lambda: hdf5_documents(fly_path, len(events), 20, events[0].shape, per_datum=FLY_PER_DATUM)):
            run_once(warm_up, background, client=client)
        cluster_roles = _cluster_processes(client)
        on = {"client": client, "max_in_flight": max_in_flight, "cluster": cluster_roles}
        modes = {"serial": lambda: run_once(inline, background),
                 "inline": lambda: run_once(inline, background, **on),
                 "HDF5": lambda: run_once(referenced, background, **on),
                 "HDF5 fly": lambda: run_once(fly, background, **on),
                 "HDF5 no work": lambda: run_once(referenced, background, **on,
                                                  work={"process": read_nothing, "locate": located_nothing})}
        samples = {label: [] for label in modes}
        peaks = {}
        for _ in range(repeats):
            for label, run in modes.items():
                elapsed, cpu, loop, peaks[label], roles = run()
                samples[label].append((elapsed, cpu, loop, roles))
        for label in modes:
            if label == "HDF5 no work":
                if peaks[label] != [(seq_num, 0) for seq_num, _ in peaks["serial"]]:
                    raise RuntimeError(f"{label}: not every frame came back, each without peaks")
            elif peaks[label] != peaks["serial"]:
                raise RuntimeError(f"{label} found other peaks than the serial pipeline")
            rates = sorted(n_events / sample[0] for sample in samples[label])
            cpu_ms = statistics.median(1000 * sample[1] / n_events for sample in samples[label])
            loop_ms = statistics.median(1000 * sample[2] / n_events for sample in samples[label])
            roles_ms = {role: statistics.median(1000 * sample[3][role] / n_events for sample in samples[label])
                        for role in samples[label][0][3]}
            total_ms = cpu_ms + sum(roles_ms.values())
            results[label] = {"events_per_s": statistics.median(rates), "range": (rates[0], rates[-1]),
                              "cpu_ms": cpu_ms, "loop_ms": loop_ms, "cluster_ms": roles_ms, "total_ms": total_ms}
            say(f"  {label:<14} {results[label]['events_per_s']:7.1f} events/s ({rates[0]:.1f}-{rates[-1]:.1f})   "
                f"client CPU {cpu_ms:5.2f} ms/event, of which its event-loop thread {loop_ms:5.2f} ms/event")
            if roles_ms:
                cores = os.cpu_count() or 1
                say(f"  {'':<14} CPU per event: client {cpu_ms:.2f} + "
                    + " + ".join(f"{role} {ms:.2f}" for role, ms in roles_ms.items())
                    + f" = {total_ms:.2f} ms: at most {1000 * cores / total_ms:.0f} events/s on {cores} cores")
        if profile_path:
            profile = cProfile.Profile(time.thread_time)  # CPU, not wall time: the machine is shared
            run_once(referenced, background, client=client, profile=profile, max_in_flight=max_in_flight)
            profile.dump_stats(profile_path)
            say(f"cProfile of the event-loop thread over one HDF5 run of {n_events} events: {profile_path}")
            pstats.Stats(profile_path).sort_stats("tottime").print_stats(25)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default="local",
                        help="local (LocalCluster), cli (dask scheduler + workers started here on loopback) or "
                             "tcp://host:port (default %(default)s)")
    parser.add_argument("--events", type=int, default=200, help="events per timed run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; medians (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="workers to start (local, cli; default 2)")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the event-loop thread to FILE")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="the pipeline's bound on events in flight (default: 2 x worker threads + 1; on a "
                             "quiet 2-core machine 16 gave the same figures)")
    parser.add_argument("--quick", action="store_true", help="20 events, one repeat (a smoke run)")
    args = parser.parse_args(argv)
    import trackpy

    trackpy.quiet()
    n_events, repeats = (20, 1) if args.quick else (args.events, args.repeats)
    print(f"{SMALL[0]} x {SMALL[1]} x 1 frame uint16 per event, {n_events} events per run, medians (min-max) of "
          f"{repeats}, modes in turn, {os.cpu_count()} cores, load average before the run {os.getloadavg()[0]:.2f}")
    measure(cluster=args.cluster, n_events=n_events, repeats=repeats, n_workers=args.workers,
            profile_path=args.profile, max_in_flight=args.max_in_flight)
    return 0


if __name__ == "__main__":
    sys.exit(main())
