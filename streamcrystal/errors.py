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
    "SharedFramesError",
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


class SharedFramesError(StreamCrystalError, RuntimeError):
    """A Dask worker cannot map the shared memory segment that holds an event's frames.

    The worker is on another host than the client, or in another container (another
    ``/dev/shm``), or the segment was released. The pipeline sends the event again by Dask's
    own transfer and stops using shared memory.

    Parameters
    ----------
    name : str
        The segment's name.
    host : str
        The worker's host name.
    reason : str
        Why it could not be mapped.

    Examples
    --------
    >>> str(SharedFramesError("sc_0123456789ab", "node7", "FileNotFoundError: no such file"))
    "worker on host 'node7' cannot map shared memory segment 'sc_0123456789ab' (FileNotFoundError: no such file): it does not share the client's /dev/shm (another machine or container); the frames are sent by Dask's transfer instead (DaskFrames(client, shared_memory=False) to always do so)"
    """

    def __init__(self, name: str, host: str, reason: str) -> None:
        self.name = name
        self.host = host
        self.reason = reason
        super().__init__(f"worker on host {host!r} cannot map shared memory segment {name!r} ({reason}): it does not "
                         "share the client's /dev/shm (another machine or container); the frames are sent by Dask's "
                         "transfer instead (DaskFrames(client, shared_memory=False) to always do so)")

    def __reduce__(self):  # raised on a worker, unpickled in the client
        return (type(self), (self.name, self.host, self.reason))
