"""The client benchmark runs end to end on a LocalCluster (no timing asserted): every mode,
the fly scan's grouped tasks included, must find the serial pipeline's peaks (the mode without
peak finding: every frame back, with none), or it raises."""
from __future__ import annotations

from benchmarks import bench_client


def test_quick_benchmark_checks_every_mode_against_serial_and_prints_the_cpu_budget(capsys):
    assert bench_client.main(["--quick", "--cluster", "local"]) == 0
    out = capsys.readouterr().out
    for mode in ("serial", "inline", "HDF5", "HDF5 fly", "HDF5 no work"):
        assert f"  {mode} " in out, (mode, out)
    budget = [line for line in out.splitlines() if "CPU per event: client" in line]
    assert len(budget) == 4 and all("workers" in line and "events/s on" in line for line in budget), out
