"""End to end: a real RunEngine scans the simulated rod, the seed's pipeline maps it live, and
the maps are checked against the simulator's ground truth (grain footprints, peak positions).
Also the ``streamcrystal`` command itself, run as a user runs it."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from bluesky import RunEngine

from streamcrystal.demo import default_minmass, match_grains
from streamcrystal.science.frames import process_frames
from streamcrystal.science.peaks import locate, noise_minmass
from streamcrystal.graph.files import load_pipeline
from streamcrystal.sim import CrystalRod, simulate_scan

SCAN = dict(grid_shape=(10, 8), detector_shape=(512, 512), frames_per_point=3, n_grains=3, peaks_per_grain=2,
            min_peak_distance=110, seed=1)


def rod() -> CrystalRod:
    keys = ("grid_shape", "detector_shape")
    return CrystalRod(*(SCAN[k] for k in keys), **{k: v for k, v in SCAN.items() if k not in keys})


@pytest.fixture(scope="module")
def live_scan():
    """One scan with two pipelines subscribed: the demo's configuration, and the seed's scan-order
    linking without ``memory`` (trackpy's default 0)."""
    sample = rod()
    empty_row, empty_col = np.argwhere(sample.truth.empty)[0]
    background = sample.frames(int(empty_row), int(empty_col), np.random.default_rng(11))
    pipeline_file = load_pipeline("peak_tracking")
    minmass = default_minmass(sample, pipeline_file.PARAMETERS)
    options = dict(subtrahend=background, minmass=minmass, maxsize=3.0, min_frames=2)
    pipe = pipeline_file.make_pipeline(**options)
    no_memory = pipeline_file.make_pipeline(**{**options, "linking": "trackpy", "memory": 0})
    uid, truth = simulate_scan(RunEngine({}), callbacks=[pipe, no_memory], **SCAN)
    return truth, pipe.results(uid), no_memory.results(uid)


def test_each_grain_peak_is_one_particle_mapped_on_its_footprint(live_scan):
    truth, results, _ = live_scan
    particles, maps = results.particles, results.maps.values
    for grain in truth.grains:
        for peak in grain.peaks:
            near = np.flatnonzero(np.hypot(particles["y"] - peak[0], particles["x"] - peak[1]) < 2.0)
            assert len(near) == 1, f"grain {grain.index}, peak {peak}: particles {particles.iloc[near]}"
            found = maps[near[0]] > 0
            iou = (found & grain.footprint).sum() / (found | grain.footprint).sum()
            assert iou >= 0.8, f"grain {grain.index}: IoU {iou:.2f}\n{found.astype(int)}\n{grain.footprint.astype(int)}"


def test_every_mapped_particle_is_a_true_bragg_peak(live_scan):
    truth, results, _ = live_scan
    peaks = np.concatenate([grain.peaks for grain in truth.grains])
    positions = results.particles[["y", "x"]].to_numpy()
    distance = np.hypot(*(positions[:, None, :] - peaks[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    assert len(positions) == len(peaks)
    assert distance.max() < 2.0


def test_without_memory_a_grain_spanning_rows_splits_into_several_particles(live_scan):
    truth, with_memory, without = live_scan
    footprints = [grain.footprint for grain in truth.grains]
    assert min(match_grains(with_memory.maps.values, footprints)) >= 0.8
    per_peak = [
        int((np.hypot(without.particles["y"] - peak[0], without.particles["x"] - peak[1]) < 2.0).sum())
        for grain in truth.grains for peak in grain.peaks
    ]
    assert max(per_peak) >= 2
    assert min(match_grains(without.maps.values, footprints)) < 0.8


def test_noise_minmass_is_above_every_noise_maximum_of_an_independent_exposure():
    sample = rod()
    empty = np.argwhere(sample.truth.empty)
    rng = np.random.default_rng(5)
    first, second = (process_frames(sample.frames(int(r), int(c), rng)) for r, c in empty[[0, -1]])
    cut = noise_minmass(first, second, 15, percentile=80, separation=100)
    noise_masses = np.concatenate([
        locate(np.clip(process_frames(sample.frames(int(r), int(c), rng)) - first, 0, None), 15, percentile=80,
               separation=100)["mass"]
        for r, c in empty[1:9]
    ])
    assert len(noise_masses) > 30
    assert cut > noise_masses.max()
    # and far below the Bragg peaks at a grain's weakest point (its footprint's edge)
    grain = sample.truth.grains[0]
    row, col = np.argwhere(grain.footprint)[np.argmin(grain.intensity[grain.footprint])]
    image = process_frames(sample.frames(int(row), int(col), rng)) - first
    peaks = locate(np.clip(image, 0, None), 15, percentile=80, separation=100, minmass=cut)
    for peak in grain.peaks:
        assert np.hypot(peaks["y"] - peak[0], peaks["x"] - peak[1]).min() < 2.0


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamcrystal.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_demo_help_names_the_options_a_user_tunes():
    done = run_cli("demo", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--output", "--grid", "--detector", "--minmass", "--maxsize", "--min-frames", "--seed"):
        assert option in done.stdout


def test_a_bad_grid_is_refused_with_the_expected_form():
    done = run_cli("demo", "--grid", "12")
    assert done.returncode == 2
    assert "ROWSxCOLS" in done.stderr


@pytest.mark.slow
def test_demo_command_maps_every_grain_and_writes_its_files(tmp_path):
    output = tmp_path / "out"
    done = run_cli("demo", "--output", str(output), "--grid", "8x6", "--detector", "512x512", "--frames", "3",
                   "--grains", "2", "--seed", "4", "--no-progress", "--catalog", str(tmp_path / "catalog"))
    assert done.returncode == 0, done.stderr
    ious = [float(v) for v in re.search(r"IoU\) per grain: (.*)", done.stdout).group(1).split(", ")]
    assert len(ious) == 2 and min(ious) >= 0.8, done.stdout
    assert "INFO" not in done.stderr  # trackpy's per-frame log lines are silenced
    grains = re.findall(r"simulated grain (\d+): grain (\d+), peaks (\d+) of (\d+), (\d+) other, map IoU ([\d.]+)",
                        done.stdout)
    assert [int(g[0]) for g in grains] == [0, 1], done.stdout  # each simulated grain found once ...
    assert len({g[1] for g in grains}) == 2 and all(g[2] == g[3] and g[4] == "0" for g in grains)  # ... exactly
    assert min(float(g[5]) for g in grains) >= 0.9
    for name in ("features.csv", "tracks.csv", "frames.csv", "particles.csv", "crystal_maps.png", "grains.png",
                 "pipeline.png", "background.npy"):
        assert (output / name).stat().st_size > 0, name
    import matplotlib.image

    picture = matplotlib.image.imread(output / "crystal_maps.png")
    assert picture.shape[0] > 200 and picture[..., :3].std() > 0.05  # a drawn figure, not a blank canvas
    import pandas as pd

    frames = pd.read_csv(output / "frames.csv")
    assert sorted(frames["frame"]) == list(range(1, 8 * 6 + 1))
    # the raw scan and its analysis are in the catalog, and the printed commands name them
    raw_uid = re.search(r"raw run (\S+), analysis run (\S+),", done.stdout).group(1)
    assert f"streamcrystal replay {raw_uid} --catalog {tmp_path / 'catalog'}" in done.stdout
    import streamcrystal as sc

    stored = sc.load_results(sc.catalog(tmp_path / "catalog"), raw_uid)
    tracks = pd.read_csv(output / "tracks.csv")
    np.testing.assert_allclose(stored.tracks[["y", "x", "mass"]].to_numpy(), tracks[["y", "x", "mass"]].to_numpy())
    assert stored.maps.sizes["particle"] == len(pd.read_csv(output / "particles.csv"))
    # the replay command it prints analyses the stored scan again with the demo's parameters and
    # background: the same peaks
    command = re.search(r"^  streamcrystal (replay .*?)\s+#", done.stdout, re.MULTILINE).group(1).split()
    replayed = run_cli(*command, "--no-progress")
    assert replayed.returncode == 0, replayed.stderr
    from streamcrystal.storage.writeback import analysis_runs

    db = sc.catalog(tmp_path / "catalog")
    assert len(analysis_runs(db, raw_uid)) == 2
    again = sc.load_results(db, raw_uid)  # the newest: the replay's
    np.testing.assert_allclose(again.features[["y", "x", "mass"]].to_numpy(), stored.features[["y", "x", "mass"]].to_numpy())
    assert again.maps.sizes["particle"] == stored.maps.sizes["particle"]


def test_live_map_sums_the_peak_intensity_of_each_grid_point(live_scan):
    # replay the stored features through a LiveMap and compare with placing them by hand
    import pandas as pd

    from streamcrystal.views.plot import reshape
    from streamcrystal.views.live_map import LiveMap

    truth, results, _ = live_scan
    live = LiveMap(every=4)
    start = {"uid": "analysis", "raw_grid": {"shape": list(truth.grid_shape), "snaking": list(truth.snaking),
                                             "extents": [list(e) for e in truth.extents]}}
    live("start", start)
    live("descriptor", {"uid": "f", "name": "features"})
    live("descriptor", {"uid": "fr", "name": "frames"})
    for row in results.features.itertuples():
        live("event", {"descriptor": "f", "data": {"frame": row.frame, "mass": row.mass}})
    for frame in results.frames["frame"]:
        live("event", {"descriptor": "fr", "data": {"frame": frame}})
    live("stop", {})
    per_frame = results.features.groupby("frame")["mass"].sum()
    expected = reshape(pd.DataFrame({"seq_num": per_frame.index, "mass": per_frame.values}), "mass",
                       start={"shape": truth.grid_shape, "snaking": truth.snaking, "extents": truth.extents})
    np.testing.assert_allclose(live.grid, np.nan_to_num(expected.values))
    assert live.figure is not None and "frames" in live.figure.axes[0].get_title()


def test_a_demo_that_cannot_start_leaves_no_output_folder(tmp_path):
    from streamcrystal.demo import demo

    with pytest.raises(ValueError, match="use a larger detector"):
        demo(tmp_path / "out", grid_shape=(6, 5), detector_shape=(128, 128), n_grains=4, catalog_path=tmp_path / "c")
    assert not (tmp_path / "out").exists()
