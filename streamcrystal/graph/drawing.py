"""Draw a streamz graph: with graphviz's ``dot`` where it is installed, else with networkx + matplotlib.

streamz draws graphs with the graphviz program ``dot``, which pip cannot install. Without
it, the same graph (streamz's own networkx description of the nodes and edges) is laid out
here in layers — each node one layer below its lowest upstream, as ``dot`` ranks them — by
networkx's ``multipartite_layout``, and drawn with matplotlib: boxes with the node names,
arrows downwards. Both give a PNG (or SVG/PDF) file and, in a notebook, an image.
"""
from __future__ import annotations

import io
import os
import shutil

from ..errors import GraphvizMissingError

__all__ = ["visualize", "has_dot"]

_FORMATS = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def has_dot() -> bool:
    """Whether graphviz's ``dot`` program is on ``PATH``."""
    return shutil.which("dot") is not None


def visualize(source, filename: str | None = None, *, engine: str = "auto", **graphviz_kwargs):
    """Draw the graph that ``source`` belongs to.

    Parameters
    ----------
    source : streamz.Stream
        Any node of the graph.
    filename : str, optional
        Write the drawing there; the extension (.png, .svg, .pdf, .jpg) gives the format
        (PNG if none).
    engine : {"auto", "graphviz", "matplotlib"}
        ``"auto"``: graphviz if ``dot`` is installed, else matplotlib.
    **graphviz_kwargs
        Passed to ``streamz.graph.visualize`` (graphviz only).

    Returns
    -------
    IPython.display.Image or SVG, or None
        What a notebook cell shows (None where IPython is not installed).

    Raises
    ------
    ValueError
        For an unknown engine.
    GraphvizMissingError
        For ``engine="graphviz"`` without ``dot`` installed.
    """
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise ValueError(f"engine {engine!r} is not one of 'auto', 'graphviz', 'matplotlib'")
    if engine == "graphviz" or (engine == "auto" and has_dot()):
        if not has_dot():
            raise GraphvizMissingError(
                "engine='graphviz' needs graphviz's program 'dot', which is not on PATH: install it with "
                "'apt-get install graphviz' (Debian/Ubuntu), 'conda install -c conda-forge graphviz' or "
                "'brew install graphviz', or draw with engine='matplotlib'")
        import streamz.graph

        return streamz.graph.visualize(source, filename=filename, **graphviz_kwargs)
    data, format = _matplotlib_drawing(source, filename)
    if filename:
        path = filename if filename.lower().endswith(_FORMATS) else f"{filename}.png"
        with open(path, "wb") as file:
            file.write(data)
    return _display(data, format)


def _layers(graph) -> dict:
    """Each node's layer: one below its lowest upstream (the longest path from a source)."""
    import networkx as nx

    layer: dict = {}
    for node in nx.topological_sort(graph):
        layer[node] = max((layer[up] + 1 for up in graph.predecessors(node)), default=0)
    return layer


def _matplotlib_drawing(source, filename: str | None) -> tuple[bytes, str]:
    import networkx as nx
    import streamz.graph
    from matplotlib.figure import Figure

    described = nx.DiGraph()
    streamz.graph.create_graph(source, described)
    graph = streamz.graph.readable_graph(described)
    for node, layer in _layers(graph).items():
        graph.nodes[node]["layer"] = layer
    positions = nx.multipartite_layout(graph, subset_key="layer", align="horizontal", scale=1.0)
    positions = {node: (x, -y) for node, (x, y) in positions.items()}  # sources on top
    n_layers = 1 + max(nx.get_node_attributes(graph, "layer").values(), default=0)
    widest = max((sum(1 for v in nx.get_node_attributes(graph, "layer").values() if v == k)
                  for k in range(n_layers)), default=1)
    figure = Figure(figsize=(max(6.0, 2.4 * widest), max(4.0, 0.9 * n_layers)))
    ax = figure.add_subplot()
    nx.draw_networkx_edges(graph, positions, ax=ax, arrows=True, arrowsize=10, edge_color="0.45",
                           node_size=2500, width=0.8)
    for node, (x, y) in positions.items():
        ax.text(x, y, str(node), ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "#e8eef7", "edgecolor": "0.3"})
    ax.set_axis_off()
    ax.margins(0.08)
    figure.tight_layout()
    format = (os.path.splitext(filename)[1][1:].lower() if filename and filename.lower().endswith(_FORMATS)
              else "png")
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in an SVG: names can be searched
        figure.savefig(buffer, format="jpeg" if format == "jpg" else format, dpi=100)
    return buffer.getvalue(), format


def _display(data: bytes, format: str):
    try:
        from IPython.display import SVG, Image
    except ImportError:
        return None
    if format == "svg":
        return SVG(data=data)
    return Image(data=data) if format in ("png", "jpeg", "jpg") else None
