"""Benchmark: the fast peak finder against ``trackpy.locate`` on the same images.

Run ``python -m benchmarks.bench_locate`` (``--help`` for options). In one run, on
simulated detector images (:class:`streamcrystal.sim.sample.CrystalRod`: Bragg peaks of
the grains at a grid point, powder rings, air scattering, dark current, Poisson noise; 5
uint16 frames, the noiseless dark image as background) it measures

- ``trackpy.locate`` against :func:`streamcrystal.science.fastlocate.locate` (``diameter=15,
  percentile=80, separation=100``) on the processed image at 2048 x 2048 and 3072 x 3888:
  median milliseconds per image over the repeats (the two interleaved), their ratio, and
  whether the two DataFrames are identical;
- the whole per-event path at 3072 x 3888, 5 frames -> average + subtract + clip + locate:
  numpy and ``trackpy.locate`` (what a user writes by hand) against the fused one-pass
  average/subtract/clip and the fast engine;
- the peak resident memory of one event of each path, each in a fresh process;
- with ``--threads N``: the fast event's latency with N threads (``fastlocate.set_threads``,
  which also puts the fused average/subtract/clip on bands of rows) against one thread, interleaved;
- with ``--profile``: where the fast engine's time goes at the largest size, step by step
  (``engine.run``'s timings: bandpass, integer conversion and histogram, percentile,
  maxima, trackpy's refinement and ``where_close``, the pandas filters, the background
  noise and ``ep``; "other" is the rest of ``locate``: argument checks, the call), medians
  of the repeats, with one thread and with N taking turns.

``--quick`` runs the same at small sizes with few repeats (a smoke test, no figures).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: The checkout, from where a child process imports ``benchmarks``.
_ROOT = str(Path(__file__).resolve().parent.parent)

LOCATE = {"diameter": 15, "percentile": 80, "separation": 100}
FULL_SHAPES = ((2048, 2048), (3072, 3888))
QUICK_SHAPES = ((256, 256), (384, 486))


def simulated_event(shape: tuple[int, int], *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """5 noisy uint16 frames of a crystal rod at the grid point most grains light up, and
    the dark image (float64) that is subtracted from them."""
    from streamcrystal.sim.sample import CrystalRod

    small = min(shape) < 1024  # fewer, closer peaks fit a small detector
    rod = CrystalRod((8, 6), shape, frames_per_point=5, n_grains=2 if small else 6,
                     peaks_per_grain=2 if small else 3, min_peak_distance=60 if small else 110, seed=seed)
    lit = sum(grain.footprint.astype(int) for grain in rod.truth.grains)
    row, col = np.unravel_index(np.argmax(lit), lit.shape)
    return rod.frames(row, col, np.random.default_rng(seed)), rod.dark_image()


def bare_event(frames: np.ndarray, background: np.ndarray):
    """What a user writes by hand: numpy average, subtract, clip; ``trackpy.locate``."""
    import trackpy

    image = np.clip(frames.mean(axis=0, dtype=np.float64) - background, 0, None)
    return trackpy.locate(image, **LOCATE)


def fast_event(frames: np.ndarray, background: np.ndarray):
    """The fused average/subtract/clip and the fast engine (with ``fastlocate``'s threads)."""
    from streamcrystal.science.fastlocate import locate
    from streamcrystal.science.frames import process_frames

    return locate(process_frames(frames, background), **LOCATE)


def _interleaved(first, second, repeats: int) -> tuple[list[float], list[float], object, object]:
    """Run ``first()`` and ``second()`` alternately; their times (ms) and last results."""
    times_first, times_second = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result_first = first()
        times_first.append(1e3 * (time.perf_counter() - start))
        start = time.perf_counter()
        result_second = second()
        times_second.append(1e3 * (time.perf_counter() - start))
    return times_first, times_second, result_first, result_second


def _identical(a, b) -> bool:
    import pandas as pd

    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    except AssertionError:
        return False
    return True


def compare_locate(image: np.ndarray, repeats: int) -> dict:
    """Median ms per image of ``trackpy.locate`` and of the fast engine, on ``image``."""
    import trackpy

    from streamcrystal.science.fastlocate import locate

    slow, fast, expected, found = _interleaved(lambda: trackpy.locate(image, **LOCATE),
                                               lambda: locate(image, **LOCATE), repeats)
    slow_ms, fast_ms = statistics.median(slow), statistics.median(fast)
    return {"trackpy_ms": slow_ms, "fast_ms": fast_ms, "ratio": slow_ms / fast_ms,
            "features": len(found), "identical": _identical(expected, found)}


def compare_event(frames: np.ndarray, background: np.ndarray, repeats: int) -> dict:
    """Median ms per event of :func:`bare_event` and :func:`fast_event`."""
    slow, fast, expected, found = _interleaved(lambda: bare_event(frames, background),
                                               lambda: fast_event(frames, background), repeats)
    slow_ms, fast_ms = statistics.median(slow), statistics.median(fast)
    return {"bare_ms": slow_ms, "fast_ms": fast_ms, "ratio": slow_ms / fast_ms,
            "identical": _identical(expected, found)}


def compare_threads(frames: np.ndarray, background: np.ndarray, threads: int, repeats: int) -> dict:
    """Median ms per fast event with one thread and with ``threads``, interleaved."""
    from streamcrystal.science.fastlocate import using_threads

    def threaded():
        with using_threads(threads):
            return fast_event(frames, background)

    threaded()  # the pool starts
    single, multi, expected, found = _interleaved(lambda: fast_event(frames, background), threaded, repeats)
    single_ms, multi_ms = statistics.median(single), statistics.median(multi)
    return {"single_ms": single_ms, "multi_ms": multi_ms, "ratio": single_ms / multi_ms,
            "identical": _identical(expected, found)}


def profile(frames: np.ndarray, background: np.ndarray, thread_counts: list[int], repeats: int) -> dict:
    """Median ms of each step of the fast event, per thread count (the counts take turns
    within each repeat); see the module."""
    from streamcrystal.science.fastlocate import engine, options, using_threads
    from streamcrystal.science.frames import process_frames

    steps: dict[int, dict[str, list[float]]] = {n: {} for n in thread_counts}
    for _ in range(repeats):
        for n in thread_counts:
            with using_threads(n):
                start = time.perf_counter()
                image = process_frames(frames, background)
                average = time.perf_counter() - start
                timings = {"average + subtract + clip (frames.py)": average}
                start = time.perf_counter()
                engine.run(options.plan(image, **LOCATE), timings)  # what locate runs
                total = time.perf_counter() - start
            timings["other (plan, glue)"] = total - (sum(timings.values()) - average)
            timings["locate"], timings["event"] = total, average + total
            for step in ("average + subtract + clip (frames.py)", *engine.STEPS, "other (plan, glue)", "locate",
                         "event"):
                steps[n].setdefault(step, []).append(1e3 * timings.get(step, 0.0))
    return {n: {step: statistics.median(values) for step, values in by_step.items()} for n, by_step in steps.items()}


def print_profile(profiles: dict[int, dict], shape) -> None:
    """The per-step table, a column per thread count."""
    counts = sorted(profiles)
    print(f"where the time goes, {_shape(shape)}, median ms of the repeats "
          f"({', '.join(f'{n} thread' + ('s' if n > 1 else '') for n in counts)}):")
    print(f"{'step':>40}" + "".join(f"{f'{n} thr':>10}" for n in counts))
    for step in profiles[counts[0]]:
        print(f"{step:>40}" + "".join(f"{profiles[n][step]:>10.1f}" for n in counts))
    if len(counts) > 1:
        print("(with threads the background noise runs beside trackpy's refinement: its row is the wait)")


def _quietly(run, *args):
    """``run(*args)`` without its warnings (a crop of the event may have no peak)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(*args)


def _status_mb(field: str) -> float:
    """A memory field of ``/proc/self/status`` in MB (``VmRSS``: now, ``VmHWM``: the peak).

    Not ``getrusage``: Linux carries ``ru_maxrss`` over from the parent that forked us.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(path: str, directory: str) -> None:
    """In a fresh process: load the event, warm the path up on a small image, run it once."""
    import trackpy

    trackpy.quiet()
    frames, background = np.load(Path(directory) / "frames.npy"), np.load(Path(directory) / "background.npy")
    run = fast_event if path == "fast" else bare_event
    _quietly(run, frames[:, :64, :64], background[:64, :64])  # compiles numba code, allocates little
    before = _status_mb("VmRSS")
    run(frames, background)
    print(json.dumps({"peak_mb": _status_mb("VmHWM"), "before_mb": before}))


def peak_memory(frames: np.ndarray, background: np.ndarray) -> dict:
    """Peak RSS (MB) of one event of each path, each in a fresh process, and above the
    RSS it had with the event loaded."""
    result = {}
    with tempfile.TemporaryDirectory() as directory:
        np.save(Path(directory) / "frames.npy", frames)
        np.save(Path(directory) / "background.npy", background)
        for path in ("bare", "fast"):
            code = f"from benchmarks.bench_locate import _memory_child; _memory_child({path!r}, {directory!r})"
            output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=_ROOT).stdout
            result[path] = json.loads(output.strip().splitlines()[-1])
    return result


def _shape(shape: tuple[int, int]) -> str:
    return f"{shape[0]} x {shape[1]}"


def _compare_with_trackpy(events: dict, repeats: int, no_memory: bool) -> list[str]:
    """The locate and per-event tables; returns the ratio lines."""
    print(f"locate({', '.join(f'{k}={v}' for k, v in LOCATE.items())}) on simulated detector images, "
          f"median of {repeats} repeats")
    print(f"{'image':>13} {'trackpy ms':>11} {'fast ms':>9} {'ratio':>7} {'features':>9} {'identical':>10}")
    ratios = []
    for shape, (frames, background) in events.items():
        image = np.clip(frames.mean(axis=0, dtype=np.float64) - background, 0, None)
        _quietly(bare_event, frames[:, :64, :64], background[:64, :64])  # trackpy's refinement compiles
        r = compare_locate(image, repeats)
        ratios.append(f"ratio locate {_shape(shape)}: {r['ratio']:.1f}x")
        print(f"{_shape(shape):>13} {r['trackpy_ms']:>11.1f} {r['fast_ms']:>9.1f} {r['ratio']:>6.1f}x "
              f"{r['features']:>9d} {'yes' if r['identical'] else 'NO':>10}")
    shape = list(events)[-1]
    frames, background = events[shape]
    e = compare_event(frames, background, repeats)
    ratios.append(f"ratio per-event {_shape(shape)}: {e['ratio']:.1f}x")
    print(f"per event, {frames.shape[0]} {frames.dtype} frames {_shape(shape)} -> average + subtract + clip + locate "
          f"(identical features: {'yes' if e['identical'] else 'NO'})")
    print(f"{'bare (numpy + trackpy.locate)':>36} {e['bare_ms']:>9.1f} ms")
    print(f"{'fast (fused frames + fastlocate)':>36} {e['fast_ms']:>9.1f} ms")
    if not no_memory:
        m = peak_memory(frames, background)
        print(f"peak RSS of one event in a fresh process ({_shape(shape)}): "
              f"bare {m['bare']['peak_mb']:.0f} MB ({m['bare']['peak_mb'] - m['bare']['before_mb']:+.0f} MB over the "
              f"loaded event), fast {m['fast']['peak_mb']:.0f} MB ({m['fast']['peak_mb'] - m['fast']['before_mb']:+.0f} MB)")
    return ratios


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_locate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each; medians are reported (default 5)")
    parser.add_argument("--quick", action="store_true", help="small images, 2 repeats (a smoke run, no figures)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--threads", type=int, default=1,
                        help="also time the fast event with this many threads against one (default 1: not)")
    parser.add_argument("--profile", action="store_true", help="print the fast engine's time step by step")
    parser.add_argument("--no-trackpy", action="store_true", help="skip the comparisons with trackpy")
    args = parser.parse_args(argv)
    import trackpy

    from streamcrystal.science.fastlocate import warmup

    trackpy.quiet()
    shapes, repeats = (QUICK_SHAPES, 2) if args.quick else (FULL_SHAPES, args.repeats)
    warmup()
    events = {shape: simulated_event(shape) for shape in shapes}
    ratios = [] if args.no_trackpy else _compare_with_trackpy(events, repeats, args.no_memory)
    shape = shapes[-1]
    frames, background = events[shape]
    if args.threads > 1:
        t = compare_threads(frames, background, args.threads, repeats)
        ratios.append(f"ratio {args.threads} threads / 1 thread, per-event {_shape(shape)}: {t['ratio']:.2f}x")
        print(f"fast event {_shape(shape)}: 1 thread {t['single_ms']:.1f} ms, {args.threads} threads "
              f"{t['multi_ms']:.1f} ms (identical features: {'yes' if t['identical'] else 'NO'})")
    if args.profile:
        print_profile(profile(frames, background, sorted({1, args.threads}), repeats), shape)
    for line in ratios:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
