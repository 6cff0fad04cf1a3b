"""Benchmark: the pipeline on Dask workers against the serial pipeline and ``trackpy.batch``.

Run ``python -m benchmarks.bench_parallel`` (``--help`` for options). Everything is measured
in one run on the same machine, on the same synthetic events (3072 x 3888 pixels, 5 uint16
frames each, Bragg-like spots over dark current and noise), as events/s (medians of repeats):

- ``serial``: ``peak_tracking`` in this process, inline event documents (frames in memory);
- ``serial, HDF5``: the same, the frames read from an HDF5 file (StreamResource/StreamDatum),
  as a replay of a stored run or a detector writing files gives them;
- ``dask 1 worker`` / ``dask 2 workers``: ``peak_tracking(client=...)`` on
  ``make_client("local:1")`` or ``"local:2"`` (worker processes of one thread each), the
  frames shipped to the workers;
- ``dask 2 workers, HDF5``: the frames in an HDF5 file (StreamResource/StreamDatum), the
  workers read them themselves (only references are sent);
- ``tp.batch(processes=2)``: trackpy's own parallel ``batch`` on the processed images
  (averaged, background subtracted, clipped beforehand, not timed): locate only;
- ``bare 1 process`` / ``bare 2 processes``: the per-frame work alone (what a Dask task
  does: average, subtract, clip, locate) in a ``multiprocessing`` pool whose processes hold
  the events already: no pipeline, no Dask, no transfer. Their ratio is what this machine
  gives two workers at best (two processes share its memory bandwidth and caches).

and the ratios (2 workers / serial with the frames in memory, 2 workers / serial with the
frames in HDF5 files for both, 1 worker's overhead vs serial, 2 workers / tp.batch, HDF5
references / shipped arrays), the peak resident memory of this process and of the
workers (sampled every 50 ms), and the time per frame of a worker. Each rate is given twice:
for the whole run (from its start document to its stop returned, the run's analysis done) and
steady (:func:`steady_rate`: the events of the run's last three quarters, without what each
run pays once, at its start and after its last frame). The modes take turns in
each repeat, so a neighbour's load slows them alike (the load average before the run is
printed). Every mode must find the same peaks, or the run stops.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time

import event_model
import numpy as np

from benchmarks.bench_pipeline import DATA_KEY, LOCATE, raw_documents, synthetic_events

FULL = (3072, 3888)


class MemorySampler:
    """Peak RSS (MB) of this process and the sum over ``pids`` (the workers), sampled in a thread."""

    def __init__(self, pids=(), interval: float = 0.05) -> None:
        import psutil

        self._main = psutil.Process()
        self._others = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.main_mb = self.others_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        mb = 1024 * 1024
        self.main_mb = max(self.main_mb, self._main.memory_info().rss / mb)
        with contextlib.suppress(Exception):  # a worker may be restarting
            self.others_mb = max(self.others_mb, sum(p.memory_info().rss for p in self._others) / mb)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "MemorySampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def hdf5_documents(path: str, n_distinct: int, n_events: int, event_shape, *, per_datum: int = 1):
    """Documents of a 1 x n_events scan whose frames are in ``path`` (event i: distinct frame
    i % n_distinct, at dataset index i % n_distinct for a step scan).

    ``per_datum=1``: a step scan, one StreamDatum and one event per frame. More: a fly scan, as
    a fast detector flushing its file gives it: every ``per_datum`` events, one StreamDatum of
    their frames and one event page; ``path`` then holds ``per_datum + n_distinct`` frames,
    frame j being distinct frame j % n_distinct.
    """
    run = event_model.compose_run(metadata={"shape": [1, n_events], "extents": [[0, 0], [0, 1]], "snaking": [False, False]})
    data_keys = {DATA_KEY: {"dtype": "array", "shape": list(event_shape), "source": "bench", "external": "STREAM:"}}
    descriptor = run.compose_descriptor(name="primary", data_keys=data_keys)
    resource = run.compose_stream_resource(mimetype="application/x-hdf5", uri=f"file://localhost{path}", data_key=DATA_KEY,
                                           parameters={"dataset": "/entry/data/data", "chunk_shape": [1, *event_shape]})
    yield "start", run.start_doc
    yield "descriptor", descriptor.descriptor_doc
    yield "stream_resource", resource.stream_resource_doc
    for first in range(0, n_events, per_datum):
        n, index = min(per_datum, n_events - first), first % n_distinct
        yield "stream_datum", resource.compose_stream_datum(indices={"start": index, "stop": index + n},
                                                            seq_nums={"start": first + 1, "stop": first + n + 1},
                                                            descriptor=descriptor.descriptor_doc)
        if per_datum == 1:
            yield "event", descriptor.compose_event(data={}, timestamps={}, validate=False)
        else:
            seq_nums = list(range(first + 1, first + n + 1))
            yield "event_page", descriptor.compose_event_page(data={}, timestamps={}, seq_num=seq_nums,
                                                              time=[time.time()] * n, validate=False)
    yield "stop", run.compose_stop()


def write_hdf5(events, directory: str, *, name: str = "bench_frames.h5") -> str:
    import h5py

    path = os.path.join(directory, name)
    with h5py.File(path, "w") as file:
        file.create_dataset("/entry/data/data", data=np.stack(events), chunks=(1, *events[0].shape))
    return path


def time_pipeline(make_docs, background, *, client=None, pids=()):
    """Seconds to feed one run through a new pipeline (the stop returns once it is mapped),
    the peaks found, peak memory (this process, workers), and the steady rate (:func:`steady_rate`)."""
    from streamcrystal import peak_tracking

    pipe = peak_tracking(DATA_KEY, subtrahend=background, search_range=50, client=client, **LOCATE)
    peaks, done = [], []
    pipe.nodes["frame_results"].sink(lambda result: (peaks.append(result.n_peaks), done.append(time.perf_counter())))
    with MemorySampler(pids) as memory:
        t0 = time.perf_counter()
        for name, doc in make_docs():
            pipe(name, doc)
        elapsed = time.perf_counter() - t0
    pipe.close()  # the graph and the background on the workers go before the next run
    return elapsed, sum(peaks), (memory.main_mb, memory.others_mb), steady_rate(done)


def steady_rate(done: list[float]) -> float:
    """Events/s while a run goes on: frames out between the first quarter of the run and its
    last frame, over that time (``done``: when each frame's result came out).

    The whole run's rate also counts what every run pays once, whatever its length: the
    pipeline filling up (the first events, while the workers start on them) and the run's end
    after its last frame (linking the whole run, the maps, the grains, the stop). A scan of
    hundreds of points is mostly the steady part.
    """
    if len(done) < 3:
        return float("nan")
    first = max(1, len(done) // 4) - 1
    return (len(done) - 1 - first) / (done[-1] - done[first])


def time_tp_batch(images, processes: int):
    import trackpy

    t0 = time.perf_counter()
    found = trackpy.batch(images, processes=processes, **LOCATE)
    return time.perf_counter() - t0, len(found)


def measure(shape, *, n_events: int, repeats: int, workers=(1, 2), say=print) -> dict:
    """Events/s of every mode (medians), the same events for all; peaks checked equal.

    The modes take turns within each repeat (serial, 1 worker, 2 workers, HDF5,
    tp.batch, then again), so a neighbour's load on a shared machine slows them alike.
    """
    from streamcrystal.science.frames import process_frames
    from streamcrystal import make_client
    from streamcrystal.science.peaks import locate

    events, background = synthetic_events(shape)
    locate(process_frames(events[0], background), **LOCATE)  # numba's compilation, outside the timings
    n = max(workers)
    inline = lambda: raw_documents(events, n_events)  # noqa: E731
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="streamcrystal-bench-"))
        path = write_hdf5(events, directory)
        referenced = lambda: hdf5_documents(path, len(events), n_events, events[0].shape)  # noqa: E731
        clients, pids = {}, {}
        for size in workers:
            clients[size] = stack.enter_context(make_client(f"local:{size}"))
            pids[size] = list(clients[size].run(os.getpid).values())
            time_pipeline(lambda: raw_documents(events, 2 * size), background, client=clients[size])  # warm-up
        modes = [("serial", lambda: time_pipeline(inline, background)),
                 ("serial, HDF5", lambda: time_pipeline(referenced, background))]
        for size in workers:
            label = f"dask {size} worker{'s' if size > 1 else ''}"
            modes.append((label, lambda size=size: time_pipeline(inline, background, client=clients[size], pids=pids[size])))
        modes.append((f"dask {n} workers, HDF5", lambda: time_pipeline(referenced, background, client=clients[n], pids=pids[n])))
        modes.append((f"tp.batch(processes={n})", lambda: _tp_batch_mode(events, background, n_events, n)))
        for size in workers:
            modes.append((f"bare {size} process{'es' if size > 1 else ''}",
                          lambda size=size: _bare_mode(events, background, n_events, size)))
        times = {label: [] for label, _ in modes}
        steady = {label: [] for label, _ in modes}
        memory = {label: (0.0, 0.0) for label, _ in modes}
        peaks = {}
        for _ in range(repeats):
            for label, run in modes:
                elapsed, peaks[label], mem, rate = run()
                times[label].append(elapsed)
                steady[label].append(rate)
                memory[label] = tuple(map(max, memory[label], mem))
        per_frame = clients[n].run(_worker_ms_per_frame, events[0], background)

    results = {"worker_ms_per_frame": statistics.median(per_frame.values())}
    for label, _ in modes:
        if peaks[label] != peaks["serial"]:
            raise RuntimeError(f"{label} found {peaks[label]} peaks, the serial pipeline {peaks['serial']}")
        rates = sorted(n_events / t for t in times[label])
        results[label] = {"events_per_s": statistics.median(rates), "range": (rates[0], rates[-1]),
                          "steady_per_s": statistics.median(steady[label]), "memory_mb": memory[label]}
        say(f"  {label:<24} {results[label]['events_per_s']:6.2f} events/s ({rates[0]:.2f}-{rates[-1]:.2f}), "
            f"steady {results[label]['steady_per_s']:6.2f}   peak RSS: "
            f"this process {memory[label][0]:6.0f} MB, workers {memory[label][1]:6.0f} MB")
    return results


def _tp_batch_mode(events, background, n_events: int, processes: int):
    """tp.batch on the processed images (made here, not timed): seconds, features, memory."""
    from streamcrystal.science.frames import process_frames

    images = [process_frames(events[i % len(events)], background) for i in range(n_events)]
    with MemorySampler() as memory:
        elapsed, found = time_tp_batch(images, processes)
    return elapsed, found, (memory.main_mb, 0.0), float("nan")


_BARE: dict = {}  # in each process of the bare pool: the events and the background


def _bare_start(events, background) -> None:
    """A bare pool process's start: keep the events, and compile (numba) before the clock starts."""
    from streamcrystal.graph.steps import locate_step, process_step
    from streamcrystal.records import FrameTask

    _BARE.update(events=events, background=background)
    locate_step(process_step(FrameTask("bench", 0, "primary", frames=events[0], background=background)), **LOCATE)


def _bare_ready(seconds: float) -> None:
    time.sleep(seconds)


def _bare_event(i: int) -> int:
    """The per-frame work of event ``i`` (what a Dask task does), in a bare pool process: its peaks."""
    from streamcrystal.graph.steps import locate_step, process_step
    from streamcrystal.records import FrameTask

    events = _BARE["events"]
    task = FrameTask("bench", i + 1, "primary", frames=events[i % len(events)], background=_BARE["background"])
    return locate_step(process_step(task), **LOCATE).n_peaks


def _bare_mode(events, background, n_events: int, processes: int):
    """The hardware's ceiling for ``processes`` workers: the per-frame work alone in a
    ``multiprocessing`` pool whose processes hold the events already (no pipeline, no Dask,
    nothing sent but the event's index). Seconds, peaks, memory, nan."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork of a process that runs threads
    with context.Pool(processes, initializer=_bare_start, initargs=(events, background)) as pool:
        pool.map(_bare_ready, [0.5] * processes, chunksize=1)  # each process started and compiled
        with MemorySampler() as memory:
            t0 = time.perf_counter()
            found = pool.map(_bare_event, range(n_events), chunksize=1)
            elapsed = time.perf_counter() - t0
    return elapsed, sum(found), (memory.main_mb, 0.0), float("nan")


def _worker_ms_per_frame(frames, background, repeats: int = 2) -> float:
    """On a worker: milliseconds of the whole per-frame work of one event (warm)."""
    from streamcrystal.graph.steps import locate_step, process_step
    from streamcrystal.records import FrameTask

    task = FrameTask("bench", 1, "primary", frames=frames, background=background)
    locate_step(process_step(task), **LOCATE)
    t0 = time.perf_counter()
    for _ in range(repeats):
        locate_step(process_step(task), **LOCATE)
    return (time.perf_counter() - t0) / repeats * 1000


def _goal_ratios(rate: dict, n: int, say) -> None:
    """The ratios issue 16 sets goals for: n workers / serial (frames in memory, and both in HDF5), 1 worker's overhead."""
    if f"dask {n} workers" in rate:
        say(f"  {n} workers / serial:                {rate[f'dask {n} workers'] / rate['serial']:5.2f}x")
    if "dask 1 worker" in rate:
        say(f"  1 worker overhead vs serial:        {rate['serial'] / rate['dask 1 worker'] - 1:+6.1%}")
    if f"dask {n} workers, HDF5" in rate:
        say(f"  {n} workers / serial, both HDF5:      {rate[f'dask {n} workers, HDF5'] / rate['serial, HDF5']:5.2f}x")


def report(results: dict, workers, say=print) -> None:
    rate = {label: r["events_per_s"] for label, r in results.items() if isinstance(r, dict) and "events_per_s" in r}
    n = max(workers)
    say("ratios:")
    _goal_ratios(rate, n, say)
    if f"dask {n} workers" in rate:
        say(f"  {n} workers / tp.batch(processes={n}): {rate[f'dask {n} workers'] / rate[f'tp.batch(processes={n})']:5.2f}x")
    if f"dask {n} workers, HDF5" in rate:
        say(f"  {n} workers HDF5 / serial in memory:  {rate[f'dask {n} workers, HDF5'] / rate['serial']:5.2f}x")
        say(f"  HDF5 references / shipped arrays:   {rate[f'dask {n} workers, HDF5'] / rate[f'dask {n} workers']:5.2f}x")
    if f"bare {n} processes" in rate and "bare 1 process" in rate:
        bare = rate[f"bare {n} processes"] / rate["bare 1 process"]
        say(f"  bare {n} processes / bare 1 process:  {bare:5.2f}x (this machine's ceiling for {n} workers: the "
            f"per-frame work alone)")
        if f"dask {n} workers" in rate:
            say(f"  {n} workers / bare {n} processes:     {rate[f'dask {n} workers'] / rate[f'bare {n} processes']:5.2f}x")
    steady = {label: r["steady_per_s"] for label, r in results.items() if isinstance(r, dict) and "steady_per_s" in r}
    say("steady (the frames of each run's last three quarters: without its start and its end):")
    _goal_ratios(steady, n, say)
    if "worker_ms_per_frame" in results:
        ms = results["worker_ms_per_frame"]
        say(f"per-frame work on one worker: {ms:.0f} ms/event -> {1000 / ms:.2f} events/s per worker core")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_parallel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=16, help="events per timed run (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; medians are reported (default 3)")
    parser.add_argument("--shape", default=f"{FULL[0]}x{FULL[1]}", help="detector shape, ROWSxCOLS (default %(default)s)")
    parser.add_argument("--workers", default="1,2", help="LocalCluster sizes, comma-separated (default 1,2)")
    parser.add_argument("--quick", action="store_true", help="small images, few events, one repeat (a smoke run)")
    args = parser.parse_args(argv)
    import trackpy

    trackpy.quiet()
    shape = (256, 256) if args.quick else tuple(int(n) for n in args.shape.lower().split("x"))
    n_events, repeats = (4, 1) if args.quick else (args.events, args.repeats)
    workers = tuple(sorted(int(n) for n in args.workers.split(",")))
    print(f"{shape[0]} x {shape[1]} x 5 frames uint16 per event, {n_events} events per run, medians (min-max) of "
          f"{repeats}, modes in turn, {os.cpu_count()} cores, load average before the run {os.getloadavg()[0]:.2f}")
    results = measure(shape, n_events=n_events, repeats=repeats, workers=workers)
    report(results, workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
