"""Benchmark: the pipeline against bare trackpy on the same frames; peak memory.

Run ``python -m benchmarks.bench_pipeline`` (``--help`` for options). Everything is measured in
one run on the same machine: events/s of

- the bare per-frame work, a plain loop of average + subtract + clip + ``trackpy.locate``;
- the pipeline with ``engine="trackpy"``, fed inline event-model documents of the same frames
  (its overhead over the bare loop);
- the pipeline with the default fast engine (its speed-up over the bare loop);

at 2048 x 2048 and 3072 x 3888 with 5 frames per event, their ratio (medians of repeats),
and the peak resident memory of a pipeline that processes 50 and 200 events (each count in
a fresh subprocess), which must not grow with the number of events: no image is kept.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import event_model
import numpy as np

#: The checkout, from where a child process imports ``benchmarks``.
_ROOT = str(Path(__file__).resolve().parent.parent)

LOCATE = {"diameter": 15, "percentile": 80, "separation": 100}
DATA_KEY = "dexela_image"


def synthetic_events(shape, *, n_distinct=3, n_frames=5, n_spots=40, seed=0):
    """A few distinct events (frames uint16) with Bragg-like spots over dark current + noise."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    events = []
    for _ in range(n_distinct):
        mean = np.full(shape, 100.0, dtype=np.float32)
        for r, c in zip(rng.uniform(20, rows - 20, n_spots), rng.uniform(20, cols - 20, n_spots)):
            r0, c0 = int(r), int(c)
            yy, xx = np.mgrid[r0 - 8:r0 + 9, c0 - 8:c0 + 9]
            mean[r0 - 8:r0 + 9, c0 - 8:c0 + 9] += rng.uniform(200, 2000) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 8.0)
        # Gaussian noise of Poisson's variance: drawing 60 M Poisson samples per event would
        # dominate the benchmark's set-up time, and the peak finder sees the same statistics.
        frames = mean + np.sqrt(mean) * rng.standard_normal((n_frames, *shape), dtype=np.float32)
        events.append(np.clip(frames, 0, 65535).astype(np.uint16))
    background = np.full(shape, 100.0)
    return events, background


def bare_loop(events, background, n_events):
    """The per-frame work without any pipeline: what a user would write by hand."""
    import trackpy

    n_peaks = 0
    for i in range(n_events):
        frames = events[i % len(events)]
        image = np.clip(frames.mean(axis=0, dtype=np.float64) - background, 0, None)
        n_peaks += len(trackpy.locate(image, **LOCATE))
    return n_peaks


def raw_documents(events, n_events):
    """Inline documents of a 1 x n_events grid scan (frames shared, not copied)."""
    run = event_model.compose_run(metadata={"shape": [1, n_events], "extents": [[0, 0], [0, 1]], "snaking": [False, False]})
    shape = list(events[0].shape)
    descriptor = run.compose_descriptor(name="primary", data_keys={DATA_KEY: {"dtype": "array", "shape": shape, "source": "bench"}})
    yield "start", run.start_doc
    yield "descriptor", descriptor.descriptor_doc
    for i in range(n_events):
        yield "event", descriptor.compose_event(data={DATA_KEY: events[i % len(events)]}, timestamps={DATA_KEY: time.time()}, validate=False)
    yield "stop", run.compose_stop()


def pipeline_run(events, background, n_events, engine="fast"):
    from streamcrystal import peak_tracking

    pipe = peak_tracking(DATA_KEY, subtrahend=background, search_range=50, engine=engine, **LOCATE)
    counted = []
    pipe.nodes["frame_results"].sink(lambda result: counted.append(result.n_peaks))
    for name, doc in raw_documents(events, n_events):
        pipe(name, doc)
    return sum(counted)


def compare(shape, *, n_events, repeats):
    """Median events/s of the bare loop and of the pipeline, interleaved, and their ratio."""
    events, background = synthetic_events(shape)
    bare_loop(events, background, 1)  # warm up trackpy's numba code
    pipeline_run(events, background, 1, engine="fast")  # compile or load the fast engine
    times = {"bare": [], "trackpy": [], "fast": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        bare_peaks = bare_loop(events, background, n_events)
        times["bare"].append(time.perf_counter() - t0)
        for engine in ("trackpy", "fast"):
            t0 = time.perf_counter()
            pipe_peaks = pipeline_run(events, background, n_events, engine=engine)
            times[engine].append(time.perf_counter() - t0)
            if pipe_peaks != bare_peaks:
                raise RuntimeError(f"pipeline ({engine}) found {pipe_peaks} peaks, the bare loop {bare_peaks}")
    rate = {key: n_events / statistics.median(values) for key, values in times.items()}
    return {"shape": list(shape), "events": n_events, "repeats": repeats, "bare_events_per_s": rate["bare"],
            "pipeline_events_per_s": rate["trackpy"], "fast_events_per_s": rate["fast"],
            "overhead": rate["bare"] / rate["trackpy"] - 1.0, "speedup": rate["fast"] / rate["bare"]}


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB).

    On Linux from ``VmHWM``: ``ru_maxrss`` survives ``execve``, so a child forked from a big
    parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(shape, n_events):
    events, background = synthetic_events(shape)
    pipeline_run(events, background, n_events)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_memory(shape, n_events) -> float:
    """Peak RSS (MB) of a fresh process that runs the pipeline over ``n_events`` events."""
    code = f"from benchmarks.bench_pipeline import _memory_child; _memory_child({tuple(shape)!r}, {n_events})"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=_ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_rss_mb"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6, help="events per timed repeat (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; medians are reported (default 3)")
    parser.add_argument("--memory-shape", default="2048x2048", help="detector shape of the memory runs")
    parser.add_argument("--quick", action="store_true", help="small images only (a smoke run)")
    args = parser.parse_args(argv)
    import trackpy

    trackpy.quiet()
    shapes = [(256, 256)] if args.quick else [(2048, 2048), (3072, 3888)]
    print(f"{'detector':>12} {'bare ev/s':>10} {'pipeline ev/s':>14} {'overhead':>9} {'fast pipeline ev/s':>19} "
          f"{'vs bare':>8}   (5 frames/event, medians of {args.repeats})")
    for shape in shapes:
        r = compare(shape, n_events=args.events, repeats=args.repeats)
        print(f"{shape[0]:>5} x {shape[1]:<4} {r['bare_events_per_s']:>10.2f} {r['pipeline_events_per_s']:>14.2f} "
              f"{r['overhead']:>+8.1%} {r['fast_events_per_s']:>19.2f} {r['speedup']:>7.1f}x")
    memory_shape = (64, 64) if args.quick else tuple(int(n) for n in args.memory_shape.split("x"))
    rss = {n: peak_memory(memory_shape, n) for n in (50, 200)}
    print(f"peak RSS, {memory_shape[0]} x {memory_shape[1]}: 50 events {rss[50]:.0f} MB, 200 events {rss[200]:.0f} MB "
          f"(growth {rss[200] - rss[50]:+.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
