"""The exceptions of streamcrystal: one small hierarchy whose fields are attributes.

Every error that concerns a document names the run it belongs to, so a log line at the
beamline says which scan to look at.
"""
from __future__ import annotations

__all__ = [
    "StreamCrystalError",
    "DocumentError",
    "FrameError",
    "ShapeMismatchError",
    "GraphvizMissingError",
]


class StreamCrystalError(Exception):
    """Base class of every error raised by streamcrystal."""


class DocumentError(StreamCrystalError, ValueError):
    """A document of a run cannot be processed.

    Parameters
    ----------
    problem : str
        What is wrong, in words.
    run_uid : str, optional
        The uid of the raw run the document belongs to (``None`` if unknown).
    seq_num : int, optional
        The ``seq_num`` of the offending event, if it is one.
    key : str, optional
        The offending key (a data key, a document field).

    Examples
    --------
    >>> err = DocumentError("missing data key", run_uid="abc", seq_num=3, key="dexela_image")
    >>> str(err)
    "missing data key (run abc, seq_num 3, key 'dexela_image')"
    >>> err.key
    'dexela_image'
    """

    def __init__(
        self,
        problem: str,
        *,
        run_uid: str | None = None,
        seq_num: int | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.run_uid = run_uid
        self.seq_num = seq_num
        self.key = key
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.run_uid is not None:
            where.append(f"run {self.run_uid}")
        if self.seq_num is not None:
            where.append(f"seq_num {self.seq_num}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        return f"{self.problem} ({', '.join(where)})" if where else self.problem


class FrameError(StreamCrystalError, ValueError):
    """An image cannot be processed (NaN pixels, wrong dimensions, ...)."""


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


class GraphvizMissingError(StreamCrystalError, RuntimeError):
    """The graphviz ``dot`` program, needed to draw a pipeline, is not installed."""
