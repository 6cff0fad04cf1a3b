"""The served-pipeline benchmark runs (``--quick``) and prints its figures."""
import re
import subprocess
import sys

from tests.helpers.serving import subprocess_env

NUMBER = r"\s+(\d+\.\d+)"


def test_bench_serve_quick_prints_both_paths_for_both_ways_of_carrying_frames():
    run = subprocess.run([sys.executable, "-m", "benchmarks.bench_serve", "--quick"], capture_output=True, text=True,
                         env=subprocess_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == ("256 x 256 detector, 5 frames/event, 4 events a run, medians of 2; 0MQ over tcp; server writes to jsonl; "
                        "results written on a writer thread")
    for first, mode in ((2, "inline: frames in the documents"), (6, "external: frames in HDF5 files")):
        assert re.fullmatch(mode + r"; publisher side \(not timed\): msgpack \d+\.\d ms an event", lines[first])
        local = re.fullmatch(r"in-process pipeline" + NUMBER + NUMBER, lines[first + 1].strip())
        served = re.fullmatch(r"served: publisher->proxy->server->writer" + NUMBER + NUMBER, lines[first + 2].strip())
        assert local and served, run.stdout
        assert all(float(value) > 0 for value in (*local.groups(), *served.groups()))
        assert re.fullmatch(r"  served/in-process throughput: \d+%", lines[first + 3])
