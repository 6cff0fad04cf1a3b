"""Figures: rendered to PNG with Agg, then their content checked (images, extents, titles, circles)."""
import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from streamcrystal.views.plot import plot_maps, plot_peaks, plot_real_aspect, reshape  # noqa: E402

SNAKING_START = {
    "plan_name": "grid_scan",
    "shape": [3, 4],
    "extents": [[0.0, 1.0], [0.0, 3.0]],
    "snaking": [False, True],
    "motors": ["motor1", "motor2"],
}


def render(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    assert png.startswith(b"\x89PNG")
    return png


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_reshape_places_events_on_a_snaking_grid():
    table = pd.DataFrame({"seq_num": np.arange(1, 13), "I": np.arange(1.0, 13.0)})
    da = reshape(table, "I", start=SNAKING_START)
    np.testing.assert_array_equal(da.values, [[1, 2, 3, 4], [8, 7, 6, 5], [9, 10, 11, 12]])
    assert da.dims == ("motor1", "motor2") and da.name == "I"
    np.testing.assert_allclose(da.coords["motor1"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(da.coords["motor2"], [0.0, 1.0, 2.0, 3.0])


def test_reshape_uses_seq_num_not_row_order_and_leaves_unvisited_points_nan():
    # an aborted scan, rows shuffled: the seq_num column decides
    table = pd.DataFrame({"seq_num": [6, 1, 5], "I": [60.0, 10.0, 50.0]})
    da = reshape(table, "I", start=SNAKING_START)
    expected = np.full((3, 4), np.nan)
    expected[0, 0], expected[1, 3], expected[1, 2] = 10.0, 50.0, 60.0
    np.testing.assert_array_equal(da.values, expected)


def test_reshape_of_a_real_scan_puts_each_motor_reading_at_its_coordinate():
    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd.sim import det, motor1, motor2

    docs = []
    RunEngine({})(bp.grid_scan([det], motor1, 0, 1, 3, motor2, 0, 2, 4, snake_axes=True),
                  lambda name, doc: docs.append((name, doc)))
    start = next(doc for name, doc in docs if name == "start")
    events = [doc for name, doc in docs if name == "event"]
    dataset = xr.Dataset(
        {key: ("time", [e["data"][key] for e in events]) for key in ("motor1", "motor2", "det")},
        coords={"seq_num": ("time", [e["seq_num"] for e in events])},
        attrs=dict(start),
    )
    for motor in ("motor1", "motor2"):
        da = reshape(dataset, motor)  # the start document comes from attrs
        positions = xr.broadcast(da.coords["motor1"], da.coords["motor2"])[0 if motor == "motor1" else 1]
        np.testing.assert_allclose(da.values, positions.values, atol=1e-12)


def test_reshape_explains_a_missing_start_document_and_key():
    table = pd.DataFrame({"I": [1.0, 2.0]})
    with pytest.raises(ValueError, match="no start document: pass start="):
        reshape(table, "I")
    with pytest.raises(KeyError, match=r"'J' is not in the dataset; valid choices: \['I'\]"):
        reshape(table, "J", start=SNAKING_START)


def test_plot_real_aspect_shows_the_motor_extents_at_equal_scale():
    values = np.arange(16.0).reshape(4, 4)
    fig = plot_real_aspect(values, extents=((0, 4), (0, 1)))
    render(fig)
    (ax,) = fig.axes
    (image,) = ax.images
    # pixel centres on the motor positions: linspace(0, 4, 4) rows, linspace(0, 1, 4) cols
    left, right, bottom, top = image.get_extent()
    row_step, col_step = 4 / 3, 1 / 3
    np.testing.assert_allclose([left, right], [-col_step / 2, 1 + col_step / 2])
    np.testing.assert_allclose([bottom, top], [-row_step / 2, 4 + row_step / 2])
    np.testing.assert_allclose(ax.get_xlim(), [left, right])
    np.testing.assert_allclose(ax.get_ylim(), [bottom, top])
    # displayed: the axes box is 4 times as tall as wide, like the motor extents
    box = ax.get_window_extent()
    assert box.height / box.width == pytest.approx(4.0, rel=0.02)
    # value at row 0 (motor1 = 0) is drawn at the bottom (origin lower)
    np.testing.assert_array_equal(image.get_array()[0], values[0])
    assert image.origin == "lower"


def test_plot_real_aspect_uses_dataarray_coordinates_and_dims():
    da = reshape(pd.DataFrame({"I": np.arange(12.0)}), "I", start=SNAKING_START)
    fig = plot_real_aspect(da)
    render(fig)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_extent(), [-0.5, 3.5, -0.25, 1.25])
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("motor1", "motor2")
    box = ax.get_window_extent()
    assert box.height / box.width == pytest.approx(1.5 / 4.0, rel=0.02)


def test_plot_real_aspect_of_a_plain_image_is_pixel_square():
    fig = plot_real_aspect(np.zeros((2, 6)))
    render(fig)
    box = fig.axes[0].get_window_extent()
    assert box.height / box.width == pytest.approx(2 / 6, rel=0.02)
    with pytest.raises(ValueError, match="2-D"):
        plot_real_aspect(np.zeros((2, 3, 4)))


def make_maps(n=3):
    maps = np.zeros((n, 3, 4))
    for i in range(n):
        maps[i, i % 3, i] = 10.0 * (i + 1)
    return xr.DataArray(
        maps, dims=("particle", "motor1", "motor2"), name="crystal_map",
        coords={"particle": [5, 7, 11][:n], "y": ("particle", [10.25, 20.0, 30.5][:n]),
                "x": ("particle", [1.0, 2.75, 3.0][:n]), "n_frames": ("particle", [1] * n),
                "motor1": [0.0, 0.5, 1.0], "motor2": [0.0, 1.0, 2.0, 3.0]},
    )


@pytest.mark.parametrize("share", [False, True])
def test_plot_maps_one_titled_panel_per_particle(share):
    fig = plot_maps(make_maps(), share_color_scale=share)
    render(fig)
    panels = [ax for ax in image_axes(fig) if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "particle 5\n(y, x) = (10.2, 1.0)",
        "particle 7\n(y, x) = (20.0, 2.8)",
        "particle 11\n(y, x) = (30.5, 3.0)",
    ]
    for i, ax in enumerate(panels):
        data = ax.images[0].get_array()
        assert data.max() == 10.0 * (i + 1)  # each panel shows its own particle's map
        np.testing.assert_allclose(ax.images[0].get_extent(), [-0.5, 3.5, -0.25, 1.25])
    colorbars = [ax for ax in fig.axes if ax not in panels]
    assert len(colorbars) == (1 if share else 3)
    limits = {ax.images[0].get_clim() for ax in panels}
    assert limits == ({(0.0, 30.0)} if share else {(0.0, 10.0), (0.0, 20.0), (0.0, 30.0)})


def test_plot_maps_layout_and_no_particles():
    fig = plot_maps(make_maps(), ncols=1)
    render(fig)
    panels = [ax for ax in image_axes(fig) if ax.get_title()]
    assert [ax.get_subplotspec().get_geometry()[:2] for ax in panels] == [(3, 1)] * 3
    empty = plot_maps(make_maps().isel(particle=slice(0, 0)))
    render(empty)
    assert not image_axes(empty)
    assert "no crystal maps" in empty.axes[0].texts[0].get_text()


def test_plot_peaks_circles_each_feature():
    image = np.random.default_rng(0).normal(size=(40, 60))
    features = pd.DataFrame({"y": [5.0, 20.5, 33.0], "x": [10.0, 42.0, 57.25], "mass": [1.0, 2.0, 3.0]})
    fig = plot_peaks(image, features)
    render(fig)
    (ax,) = fig.axes
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    assert sorted(c.center for c in circles) == [(10.0, 5.0), (42.0, 20.5), (57.25, 33.0)]
    np.testing.assert_array_equal(ax.images[0].get_array(), image)
    assert ax.get_title() == "3 peaks"
    # image convention: row 0 at the top, pixel centres on integer (x, y)
    np.testing.assert_allclose(ax.images[0].get_extent(), [-0.5, 59.5, 39.5, -0.5])


def test_plot_peaks_draws_on_a_given_axes_and_checks_columns():
    from matplotlib.figure import Figure

    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    assert plot_peaks(np.zeros((8, 8)), pd.DataFrame({"y": [1.0], "x": [2.0]}), ax=ax2) is fig
    assert len(ax2.patches) == 1 and not ax1.patches
    with pytest.raises(KeyError, match=r"lack column\(s\) \['x'\]"):
        plot_peaks(np.zeros((8, 8)), pd.DataFrame({"y": [1.0]}))
