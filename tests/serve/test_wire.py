"""msgpack on the wire: arrays survive, pickle never runs."""
import pickle

import msgpack
import numpy as np
import pytest

from streamcrystal.errors import MessageError
from streamcrystal.serve.wire import deserializer, dumps, loads, serializer


def test_documents_round_trip_with_arrays_and_numpy_scalars():
    frames = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    doc = {"uid": "e", "seq_num": np.int64(3), "data": {"img": frames, "total": np.float32(1.5), "ok": np.bool_(True)},
           "shape": (2, 3), "nested": [{"a": None}]}
    back = loads(dumps(doc))
    np.testing.assert_array_equal(back["data"]["img"], frames)
    assert back["data"]["img"].dtype == np.uint16
    assert back["seq_num"] == 3 and back["data"]["total"] == 1.5 and back["data"]["ok"]
    assert back["shape"] == [2, 3] and back["nested"] == [{"a": None}]


def test_object_arrays_are_refused_on_both_ends(tmp_path):
    with pytest.raises(TypeError, match="object arrays"):
        dumps({"data": np.array([{"a": 1}], dtype=object)})
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = msgpack.packb({"x": {b"nd": True, b"kind": b"O", b"type": "|O", b"shape": [1], b"data": pickle.dumps(Trap())}},
                            use_bin_type=True)
    with pytest.raises(MessageError, match="object array"):
        loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize("payload, problem", [
    (b"", "undecodable msgpack"),
    (b"\xc1", "undecodable msgpack"),
    (msgpack.packb("a string"), "a msgpack string, expected a map"),
    (pickle.dumps({"uid": "x"}), "undecodable msgpack"),
])
def test_what_is_not_a_document_raises_message_error(payload, problem):
    with pytest.raises(MessageError, match=problem):
        loads(payload)


def test_pickle_only_when_asked():
    assert serializer() is dumps and deserializer() is loads
    assert deserializer("pickle")(serializer("pickle")({"uid": "x"})) == {"uid": "x"}
    with pytest.raises(MessageError, match="pickled list"):
        deserializer("pickle")(pickle.dumps([1]))
    with pytest.raises(ValueError, match="'json' is not one of"):
        serializer("json")
