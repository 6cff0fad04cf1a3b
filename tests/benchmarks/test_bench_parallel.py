"""The parallel benchmark runs end to end on small images and prints its ratios (no timing asserted)."""
from __future__ import annotations

import pytest

from benchmarks import bench_parallel


def test_quick_benchmark_prints_every_mode_and_ratio(capsys):
    assert bench_parallel.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for line in ("serial", "serial, HDF5", "dask 1 worker", "dask 2 workers", "dask 2 workers, HDF5", "tp.batch(processes=2)",
                 "2 workers / serial:", "2 workers / serial, both HDF5:", "1 worker overhead vs serial:", "2 workers / tp.batch(processes=2):",
                 "HDF5 references / shipped arrays:", "ms/event", "steady (the frames", "bare 2 processes / bare 1 process:"):
        assert line in out, (line, out)


def test_help_describes_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_parallel.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--workers" in out and "3072x3888" in out
