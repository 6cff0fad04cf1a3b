"""Figures of scan grids: per-event values on the grid, crystal maps, located peaks.

Every function returns a :class:`matplotlib.figure.Figure` made with the object API (no
pyplot state, nothing shown): save it with ``fig.savefig`` or let a notebook display it.
Maps are drawn with the first grid axis (the slow motor) vertical, increasing upwards, and
one unit of motor travel the same length on both axes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ..science.maps import grid_coords, grid_index, grid_of

__all__ = ["reshape", "plot_real_aspect", "plot_points", "plot_maps", "plot_grains", "plot_peaks", "show_in_place"]


def show_in_place(figure: Figure, handle=None):
    """Show ``figure`` in a Jupyter output that later calls redraw in place.

    ``handle``: what the previous call returned (None the first time). Returns the display
    handle to pass next time; outside IPython nothing is shown and ``handle`` is returned.
    """
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return handle
    if get_ipython() is None:
        return handle
    if handle is None:
        return display(figure, display_id=True)
    handle.update(figure)
    return handle


def _start_of(dataset, start: Mapping | None) -> Mapping:
    if start is not None:
        return start
    attrs = getattr(dataset, "attrs", None) or {}
    if "shape" in attrs or "extents" in attrs:
        return attrs
    if isinstance(attrs.get("start"), Mapping):
        return attrs["start"]
    raise ValueError("no start document: pass start=... (e.g. run.metadata['start']) or put it, or its "
                     "'shape'/'extents'/'snaking', in dataset.attrs")


def _seq_nums_of(dataset, n: int) -> np.ndarray:
    if isinstance(dataset, pd.DataFrame):
        if "seq_num" in dataset.columns:
            return dataset["seq_num"].to_numpy()
        if dataset.index.name == "seq_num":
            return dataset.index.to_numpy()
    elif isinstance(dataset, (xr.Dataset, Mapping)) and "seq_num" in dataset:
        return np.asarray(dataset["seq_num"]).ravel()
    return np.arange(1, n + 1)


def reshape(dataset, key: str, *, start: Mapping | None = None) -> xr.DataArray:
    """Place the per-event variable ``dataset[key]`` on the scan grid.

    Parameters
    ----------
    dataset : xarray.Dataset, pandas.DataFrame or mapping of arrays
        One entry per event. Events are placed by their ``seq_num`` (a column, coordinate,
        index named ``seq_num``, or else ``1..n`` in order).
    key : str
        The variable to place.
    start : mapping, optional
        The run's start document (``shape``, ``snaking``, ``extents``, ``motors``); default
        ``dataset.attrs`` (or ``dataset.attrs["start"]``).

    Returns
    -------
    xarray.DataArray
        float64 on the grid, dims the motors, coords their positions; NaN where no event is.

    Examples
    --------
    >>> start = {"shape": [2, 3], "snaking": [False, True], "extents": [[0, 1], [0, 2]], "motors": ["m1", "m2"]}
    >>> da = reshape(pd.DataFrame({"I": [1, 2, 3, 4, 5, 6]}), "I", start=start)
    >>> da.values.tolist(), da.dims
    ([[1.0, 2.0, 3.0], [6.0, 5.0, 4.0]], ('m1', 'm2'))
    """
    if key not in dataset:
        names = list(dataset.columns) if isinstance(dataset, pd.DataFrame) else list(dataset.keys())
        raise KeyError(f"{key!r} is not in the dataset; valid choices: {names}")
    values = np.asarray(dataset[key])
    if values.ndim != 1:
        raise ValueError(f"{key!r} has shape {values.shape}; reshape places one scalar per event (1-D)")
    seq_nums = _seq_nums_of(dataset, len(values))
    shape, snaking, extents, dims = grid_of(_start_of(dataset, start), int(np.max(seq_nums, initial=0)))
    grid = np.full(shape, np.nan)
    grid[tuple(grid_index(seq_nums, shape, snaking).T)] = values.astype(np.float64)
    if extents is not None:
        axes = grid_coords(shape, extents)
    else:
        axes = [np.arange(n) + (1 if dim == "seq_num" else 0) for dim, n in zip(dims, shape)]
    return xr.DataArray(grid, dims=dims, coords=dict(zip(dims, axes)), name=key)


def _is_uniform(coord) -> bool:
    coord = np.asarray(coord, dtype=np.float64)
    return len(coord) <= 2 or bool(np.allclose(np.diff(coord), coord[1] - coord[0], rtol=1e-6, atol=0))


def _cell_edges(coord) -> np.ndarray:
    """The edges of the cells around each coordinate: halfway to the neighbours (half a gap out at the ends)."""
    coord = np.asarray(coord, dtype=np.float64)
    if len(coord) == 1:
        return np.array([coord[0] - 0.5, coord[0] + 0.5])
    middle = (coord[1:] + coord[:-1]) / 2
    return np.concatenate([[coord[0] - (middle[0] - coord[0])], middle, [coord[-1] + (coord[-1] - middle[-1])]])


def _pixel_edges(start: float, stop: float, n: int) -> tuple[float, float]:
    """Outer edges of ``n`` pixels whose centres are ``linspace(start, stop, n)``."""
    half = (stop - start) / (n - 1) / 2 if n > 1 else 0.5
    return start - half, stop + half


def plot_real_aspect(array, *, extents=None, ax: Axes | None = None, **imshow_kwargs) -> Figure:
    """Show a 2-D grid with motor-position axes and the real aspect ratio (same mm per mm).

    Parameters
    ----------
    array : 2-D array or xarray.DataArray
        Rows along the first scan axis. A DataArray's dims label the axes and its coordinates
        give the positions: a grid whose coordinates are not evenly spaced (``list_grid_scan``)
        is drawn cell by cell (``pcolormesh``), each cell reaching halfway to its neighbours.
    extents : ((row_start, row_stop), (col_start, col_stop)), optional
        The motor positions of the first and last grid points (the start document's
        ``extents``); pixel centres sit on ``np.linspace(start, stop, n)``. Without extents
        or coordinates, pixels are square in index units.
    ax : matplotlib.axes.Axes, optional
        Draw here; default a new figure.
    **imshow_kwargs
        Passed to ``Axes.imshow`` (defaults ``origin="lower"``, ``interpolation="nearest"``).

    Examples
    --------
    >>> fig = plot_real_aspect(np.arange(6.0).reshape(2, 3), extents=((0, 1), (0, 4)))
    >>> fig.axes[0].images[0].get_extent()
    [-1.0, 5.0, -0.5, 1.5]
    """
    labels = ("axis 0", "axis 1")
    if isinstance(array, xr.DataArray):
        if array.ndim != 2:
            raise ValueError(f"plot_real_aspect needs a 2-D array; got dims {array.dims}: select one slice first, "
                             "e.g. maps.sel(particle=0)")
        labels = tuple(str(d) for d in array.dims)
        if extents is None and all(d in array.coords for d in array.dims):
            coords = [array.coords[d].values for d in array.dims]
            if not all(map(_is_uniform, coords)):
                return _plot_cells(array.values, coords, labels, ax, imshow_kwargs)
            extents = tuple((float(c[0]), float(c[-1])) for c in coords)
        array = array.values
    image = np.asarray(array, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"plot_real_aspect needs a 2-D array; got shape {image.shape}")
    if extents is not None:
        if len(extents) != 2:
            raise ValueError(f"extents {extents!r} must be ((row_start, row_stop), (col_start, col_stop))")
        (r0, r1), (c0, c1) = (_pixel_edges(float(a), float(b), n) for (a, b), n in zip(extents, image.shape))
        imshow_kwargs.setdefault("extent", (c0, c1, r0, r1))
    if ax is None:
        ax = Figure(layout="constrained").add_subplot()
    imshow_kwargs.setdefault("origin", "lower")
    imshow_kwargs.setdefault("interpolation", "nearest")
    imshow_kwargs.setdefault("aspect", "equal")
    ax.imshow(image, **imshow_kwargs)
    ax.set_ylabel(labels[0])
    ax.set_xlabel(labels[1])
    return ax.figure


def _plot_cells(image, coords, labels, ax, kwargs) -> Figure:
    if ax is None:
        ax = Figure(layout="constrained").add_subplot()
    kwargs = {key: value for key, value in kwargs.items() if key not in ("origin", "interpolation", "extent")}
    ax.pcolormesh(_cell_edges(coords[1]), _cell_edges(coords[0]), np.asarray(image, dtype=np.float64), **kwargs)
    ax.set_aspect("equal")
    ax.set_ylabel(labels[0])
    ax.set_xlabel(labels[1])
    return ax.figure


def plot_points(values: xr.DataArray, *, ax: Axes | None = None, **scatter_kwargs) -> Figure:
    """Values over the points of a scan that is not a grid (a spiral, a path), drawn where the sample was.

    ``values`` has the one dim ``point``, and two coordinates along it: the positions of the
    scan's two motors (the first one vertical). Each point is a marker coloured by its value,
    one unit of motor travel the same length on both axes.

    Examples
    --------
    >>> values = xr.DataArray([1.0, 2.0, 3.0], dims="point", coords={"point": [0, 1, 2],
    ...                       "sample_y": ("point", [0.0, 0.5, 1.0]), "sample_x": ("point", [0.0, 0.3, 0.1])})
    >>> plot_points(values).axes[0].get_xlabel()
    'sample_x'
    """
    motors = [name for name, coord in values.coords.items() if coord.dims == ("point",) and name != "point"]
    if values.dims != ("point",) or not 1 <= len(motors) <= 2:
        raise ValueError(f"plot_points needs values along 'point' with one or two motor coordinates, got dims "
                         f"{values.dims} and coordinates {list(values.coords)}")
    if ax is None:
        ax = Figure(layout="constrained").add_subplot()
    y = values.coords[motors[0]].values if len(motors) == 2 else np.zeros(values.size)
    x = values.coords[motors[-1]].values
    scatter_kwargs.setdefault("s", 60)
    ax.scatter(x, y, c=values.values, **scatter_kwargs)
    ax.set_aspect("equal")
    ax.set_xlabel(motors[-1])
    ax.set_ylabel(motors[0] if len(motors) == 2 else "")
    return ax.figure


def _scalar(panel: xr.DataArray, *names: str) -> float | None:
    for name in names:
        if name in panel.coords and panel.coords[name].ndim == 0:
            return float(panel.coords[name])
    return None


def _height_ratio(maps: xr.DataArray) -> float:
    """Height/width of one map panel as drawn (clipped to 1/4..4), to size the figure."""
    if maps.ndim != 3:
        return 0.6
    spans = []
    for dim, n in zip(maps.dims[1:], maps.shape[1:]):
        coord = maps.coords[dim].values.astype(float) if dim in maps.coords else np.arange(n, dtype=float)
        edges = _cell_edges(coord)
        spans.append(abs(edges[-1] - edges[0]))
    return float(np.clip(spans[0] / spans[1], 0.25, 4.0)) if spans[1] else 1.0


def plot_maps(maps: xr.DataArray, *, ncols: int | None = None, share_color_scale: bool = False,
              cmap: str = "viridis") -> Figure:
    """A gallery of crystal maps, one panel per particle, titled with its detector position.

    Parameters
    ----------
    maps : xarray.DataArray
        Dims ``("particle", row, col)`` (or ``("particle", seq_num)`` for a 1-D run, drawn
        as lines), as from :func:`streamcrystal.maps.maps_to_xarray`.
    ncols : int, optional
        Panels per row; default about the square root of the number of particles.
    share_color_scale : bool
        One colour scale (and colorbar) for all panels instead of one per panel.
    cmap : str
        Matplotlib colormap.

    Examples
    --------
    >>> maps = xr.DataArray(np.ones((2, 2, 3)), dims=("particle", "m1", "m2"),
    ...                     coords={"particle": [3, 7], "y": ("particle", [10.0, 20.0]), "x": ("particle", [1.0, 2.0])})
    >>> [ax.get_title() for ax in plot_maps(maps).axes if ax.images]
    ['particle 3\\n(y, x) = (10.0, 1.0)', 'particle 7\\n(y, x) = (20.0, 2.0)']
    """
    if not isinstance(maps, xr.DataArray) or maps.dims[:1] != ("particle",) or maps.ndim not in (2, 3):
        raise ValueError("plot_maps needs a DataArray with dims ('particle', row, col), as from "
                         f"maps_to_xarray or RunResults.maps; got {getattr(maps, 'dims', type(maps).__name__)}")
    n = maps.sizes["particle"]
    if n == 0:
        fig = Figure(figsize=(4, 3))
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no crystal maps (no particle kept)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ncols = int(ncols) if ncols else math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    ratio = _height_ratio(maps)  # panels about 3 inches on their longer side, plus labels and colorbar
    width, height = (3.0, 3.0 * ratio) if ratio <= 1 else (3.0 / ratio, 3.0)
    fig = Figure(figsize=((width + 1.5) * min(ncols, n), (height + 1.0) * nrows), layout="constrained")
    limits = {}
    if share_color_scale:
        limits = {"vmin": float(np.nanmin(maps.values)), "vmax": float(np.nanmax(maps.values))}
    axes, image = [], None
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        axes.append(ax)
        panel = maps.isel(particle=i)
        if panel.dims == ("point",):
            plot_points(panel, ax=ax, cmap=cmap, **limits)
            image = ax.collections[-1]
            if not share_color_scale:
                fig.colorbar(image, ax=ax, shrink=0.8)
        elif panel.ndim == 1:
            dim = panel.dims[0]
            ax.plot(panel.coords[dim].values if dim in panel.coords else np.arange(panel.size), panel.values)
            ax.set_xlabel(str(dim))
        else:
            plot_real_aspect(panel, ax=ax, cmap=cmap, **limits)
            image = ax.images[-1]
            if not share_color_scale:
                fig.colorbar(image, ax=ax, shrink=0.8)
        particle = maps.coords["particle"].values[i] if "particle" in maps.coords else i
        y, x = _scalar(panel, "peak_y", "y"), _scalar(panel, "peak_x", "x")
        position = f"\n(y, x) = ({y:.1f}, {x:.1f})" if y is not None and x is not None else ""
        ax.set_title(f"particle {particle}{position}", fontsize="medium")
    if share_color_scale and image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label=str(maps.name or "intensity"))
    return fig


def plot_grains(grain_labels: xr.DataArray, grain_maps: xr.DataArray, *, title: str = "", ncols: int | None = None
                ) -> Figure:
    """The grains of a run: which grain is strongest where (one colour a grain), then each grain's map.

    Parameters
    ----------
    grain_labels : xarray.DataArray
        The grain-label map (``RunResults.grain_labels``): the grid's (or points') shape,
        0 where no grain is.
    grain_maps : xarray.DataArray
        ``(grain, *grid)`` (``RunResults.grain_maps``).
    title : str
        Above the label map (e.g. the events so far).
    ncols : int, optional
        Panels per row (the label map is the first panel).

    Examples
    --------
    >>> labels = xr.DataArray([[1, 1, 0], [0, 2, 2]], dims=("y", "x"), coords={"y": [0.0, 1.0], "x": [0.0, 1.0, 2.0]})
    >>> maps = xr.DataArray(np.ones((2, 2, 3)), dims=("grain", "y", "x"), coords={"grain": [1, 2], **labels.coords})
    >>> [ax.get_title() for ax in plot_grains(labels, maps).axes if ax.get_title()]
    ['2 grains', 'grain 1', 'grain 2']
    """
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap

    n = grain_maps.sizes["grain"]
    ncols = int(ncols) if ncols else max(2, math.ceil(math.sqrt(n + 1)))
    nrows = math.ceil((n + 1) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.6 * nrows), layout="constrained")
    colours = ListedColormap(["#f0f0f0", *[colormaps["tab20"](k % 20) for k in range(max(n, 1))]])
    norm = BoundaryNorm(np.arange(-0.5, n + 1.5), colours.N)
    ax = fig.add_subplot(nrows, ncols, 1)
    labels = grain_labels.astype(np.float64)
    if labels.dims == ("point",):
        plot_points(labels, ax=ax, cmap=colours, norm=norm)
    elif labels.ndim == 2:
        plot_real_aspect(labels, ax=ax, cmap=colours, norm=norm)
    else:
        ax.plot(labels.values, drawstyle="steps-mid")
    ax.set_title(f"{title + ', ' if title else ''}{n} grain{'s' if n != 1 else ''}")
    for k in range(n):
        ax = fig.add_subplot(nrows, ncols, k + 2)
        panel = grain_maps.isel(grain=k)
        if panel.dims == ("point",):
            plot_points(panel, ax=ax, cmap="viridis")
        elif panel.ndim == 2:
            plot_real_aspect(panel, ax=ax, cmap="viridis")
        else:
            ax.plot(panel.values)
        ax.set_title(f"grain {int(grain_maps.coords['grain'].values[k])}", color=colours(k + 1))
    return fig


def plot_peaks(image, features: pd.DataFrame, *, ax: Axes | None = None, radius: float = 5.0) -> Figure:
    """A processed detector image with the located peaks circled.

    Parameters
    ----------
    image : 2-D array
        The processed frame (row 0 at the top, as a detector image).
    features : pandas.DataFrame
        Columns ``y`` (row) and ``x`` (column) in pixels, e.g. from ``streamcrystal.locate``.
    ax : matplotlib.axes.Axes, optional
    radius : float
        Circle radius in pixels.

    Examples
    --------
    >>> fig = plot_peaks(np.zeros((20, 30)), pd.DataFrame({"y": [5.0], "x": [12.0]}))
    >>> [p.center for p in fig.axes[0].patches]
    [(12.0, 5.0)]
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"plot_peaks needs one 2-D image; got shape {image.shape} "
                         "(average a stack of frames first, e.g. streamcrystal.frames.average_frames)")
    missing = [c for c in ("y", "x") if c not in features.columns]
    if missing:
        raise KeyError(f"features lack column(s) {missing}; have {list(features.columns)}")
    if ax is None:
        ax = Figure(layout="constrained").add_subplot()
    ax.imshow(image, cmap="gray", interpolation="nearest")
    for y, x in zip(features["y"].astype(float).tolist(), features["x"].astype(float).tolist()):
        ax.add_patch(Circle((x, y), radius, fill=False, edgecolor="tab:red", linewidth=1.2))
    ax.set_title(f"{len(features)} peak{'' if len(features) == 1 else 's'}")
    ax.set_xlabel("x (column, px)")
    ax.set_ylabel("y (row, px)")
    return ax.figure
