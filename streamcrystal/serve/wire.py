"""Documents on the wire: msgpack with numpy arrays (msgpack-numpy's format), never pickle by default.

bluesky's :class:`~bluesky.callbacks.zmq.Publisher` and
:class:`~bluesky.callbacks.zmq.RemoteDispatcher` pickle by default, and unpickling bytes from a
socket runs whatever code the sender chose. Here both ends use :func:`dumps` / :func:`loads`:

- arrays travel as msgpack-numpy's ``{"nd": True, "type", "kind", "shape", "data"}`` maps and
  numpy scalars as ``{"nd": False, ...}``, so any msgpack-numpy peer can read and write them;
- object arrays, which msgpack-numpy pickles, are refused on both ends;
- whatever cannot be decoded into a document (a mapping) raises :class:`MessageError`.

Pickle remains available, explicitly (:func:`serializer` with ``"pickle"``), for peers that
cannot be changed, on trusted networks only.

Examples
--------
>>> import numpy as np
>>> doc = {"uid": "abc", "data": {"img": np.arange(6, dtype=np.uint16).reshape(2, 3)}, "seq_num": np.int64(1)}
>>> back = loads(dumps(doc))
>>> back["data"]["img"].dtype, back["data"]["img"].shape, int(back["seq_num"])
(dtype('uint16'), (2, 3), 1)
>>> loads(b"\\x93\\x01\\x02\\x03")
Traceback (most recent call last):
...
streamcrystal.errors.MessageError: not a document: a msgpack list, expected a map
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import msgpack_numpy
import numpy as np

from ..errors import MessageError

__all__ = ["dumps", "loads", "serializer", "deserializer", "SERIALIZERS"]

#: The names :func:`serializer` and :func:`deserializer` accept.
SERIALIZERS = ("msgpack", "pickle")


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "O":
        raise TypeError("object arrays cannot be sent (msgpack-numpy would pickle them); convert them to lists")
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    encoded = msgpack_numpy.encode(obj)
    if encoded is obj:
        raise TypeError(f"cannot serialize a {type(obj).__name__} in a document")
    return encoded


def _decode(obj: dict) -> Any:
    if obj.get(b"nd") is True and obj.get(b"kind") == b"O":
        # msgpack-numpy would pickle.loads this: refuse it
        raise MessageError("an object array (pickled data) in a msgpack message; refused")
    return msgpack_numpy.decode(obj)


def dumps(doc: Mapping) -> bytes:
    """msgpack bytes of a document; numpy arrays and scalars included."""
    return msgpack.packb(doc, default=_encode, use_bin_type=True)


def loads(data: bytes) -> dict:
    """The document in msgpack ``data``; raises :class:`MessageError` if it is not one."""
    try:
        doc = msgpack.unpackb(data, object_hook=_decode, raw=False)
    except MessageError:
        raise
    except Exception as err:  # msgpack raises a zoo of exceptions on garbage
        raise MessageError(f"undecodable msgpack ({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict):
        raise MessageError(f"not a document: a msgpack {_kind(doc)}, expected a map")
    return doc


def _kind(obj: Any) -> str:
    return {list: "list", str: "string", bytes: "bin", int: "integer", float: "float", bool: "boolean"}.get(
        type(obj), type(obj).__name__
    )


def _pickle_loads(data: bytes) -> dict:
    try:
        doc = pickle.loads(data)  # noqa: S301 -- only with an explicit --pickle
    except Exception as err:
        raise MessageError(f"undecodable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict):
        raise MessageError(f"not a document: a pickled {type(doc).__name__}, expected a dict")
    return doc


def serializer(name: str = "msgpack") -> Callable[[Mapping], bytes]:
    """The document serializer called ``name`` (one of :data:`SERIALIZERS`)."""
    if name == "msgpack":
        return dumps
    if name == "pickle":
        return pickle.dumps
    raise ValueError(f"serializer {name!r} is not one of {SERIALIZERS}")


def deserializer(name: str = "msgpack") -> Callable[[bytes], dict]:
    """The document deserializer called ``name``; both raise :class:`MessageError` on garbage."""
    if name == "msgpack":
        return loads
    if name == "pickle":
        return _pickle_loads
    raise ValueError(f"deserializer {name!r} is not one of {SERIALIZERS}")
