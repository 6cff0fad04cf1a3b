"""Every exception of streamcrystal: one small hierarchy, whose fields are attributes.

Each message says what is wrong, where (the run uid, the ``seq_num``, the key, the file) and
how to fix it. Bad data inside a run is not raised: the pipeline logs it with its run uid and
``seq_num``, skips it and names it in the analysis stop's ``reason`` (see
:mod:`streamcrystal.graph.steps`); these exceptions are for callers who can fix something.
"""
from __future__ import annotations

__all__ = [
    "StreamCrystalError",
    "FrameError",
    "ShapeMismatchError",
    "ColumnError",
    "GraphvizMissingError",
    "PipelineFileError",
    "PipelineClosedError",
    "ClientClosedError",
    "MessageError",
]


class StreamCrystalError(Exception):
    """Base class of every error raised by streamcrystal."""


class FrameError(StreamCrystalError, ValueError):
    """An image cannot be processed (wrong dimensions, ...)."""


class ShapeMismatchError(FrameError):
    """An image and its background have different shapes.

    Examples
    --------
    >>> str(ShapeMismatchError((4, 5), (4, 6)))
    'image shape (4, 5) does not match background shape (4, 6); pass a subtrahend of the detector shape'
    """

    def __init__(self, image_shape: tuple, background_shape: tuple) -> None:
        self.image_shape = tuple(image_shape)
        self.background_shape = tuple(background_shape)
        super().__init__(
            f"image shape {self.image_shape} does not match background shape "
            f"{self.background_shape}; pass a subtrahend of the detector shape"
        )


class ColumnError(StreamCrystalError, KeyError, ValueError):
    """A table lacks a column: catchable as KeyError (like pandas) or ValueError; prints plainly.

    Examples
    --------
    >>> str(ColumnError("intensity column 'mas' is not in the tracks; valid choices: ['mass']"))
    "intensity column 'mas' is not in the tracks; valid choices: ['mass']"
    """

    def __str__(self) -> str:
        return str(self.args[0])


class GraphvizMissingError(StreamCrystalError, RuntimeError):
    """Drawing with graphviz was asked for, and its ``dot`` program is not installed."""


class PipelineFileError(StreamCrystalError, ValueError):
    """A pipeline file cannot be found or does not define ``make_pipeline``."""


class PipelineClosedError(StreamCrystalError, RuntimeError):
    """A parallel pipeline was closed (``Pipeline.close``): it takes no more documents."""

    def __init__(self) -> None:
        super().__init__("this pipeline was closed: its Dask segment stopped; build a new pipeline")


class ClientClosedError(StreamCrystalError, RuntimeError):
    """The Dask client of a parallel pipeline is closed: the pipeline cannot run any more.

    Parameters
    ----------
    status : str
        The client's status (``"closed"``, ...).
    """

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(f"the Dask client of this pipeline is {status!r}: its event loop, where the graph runs, "
                         "has stopped; build a new pipeline with a running client")


class MessageError(StreamCrystalError, ValueError):
    """A message from a socket that is not a document; it is dropped, the receiver goes on.

    Parameters
    ----------
    problem : str
        What is wrong with it.
    name : str, optional
        The document name the message claimed, if it got that far.

    Examples
    --------
    >>> str(MessageError("undecodable msgpack", name="start"))
    "undecodable msgpack (a message named 'start')"
    """

    def __init__(self, problem: str, *, name: str | None = None) -> None:
        self.problem = problem
        self.name = name
        super().__init__(problem if name is None else f"{problem} (a message named {name!r})")
