import json
import uuid

import pytest

from djust_resumable.errors import BadFrame, BadMessage, FrameTooLarge
from djust_resumable.protocol import HEADER_SIZE, decode_data, encode_data, parse_control

REF = uuid.uuid4().hex


def test_data_frame_roundtrip():
    frame = encode_data(REF, 2**40 + 3, b"hello")
    assert len(frame) == HEADER_SIZE + 5 and frame[0] == 1
    f = decode_data(frame, 1024)
    assert (f.ref, f.offset, bytes(f.payload)) == (REF, 2**40 + 3, b"hello")


@pytest.mark.parametrize("frame", [b"", b"\x01", encode_data(REF, 0, b"x")[:HEADER_SIZE],
                                   b"\x02" + encode_data(REF, 0, b"x")[1:]])
def test_bad_frames(frame):
    with pytest.raises(BadFrame):
        decode_data(frame, 1024)


def test_frame_too_large():
    with pytest.raises(FrameTooLarge) as e:
        decode_data(encode_data(REF, 0, b"x" * 1025), 1024)
    assert e.value.to_wire()["code"] == "frame_too_large"


def test_control_messages():
    m = parse_control(json.dumps({"type": "open", "id": 7, "token": "t", "name": "a.png",
                                  "size": 10}))
    assert m == {"type": "open", "id": "7", "token": "t", "name": "a.png", "size": 10,
                 "content_type": "application/octet-stream"}
    m = parse_control(json.dumps({"type": "finish", "ref": REF.upper(), "crc32c": 5}))
    assert m == {"type": "finish", "ref": REF, "crc32c": 5}


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"type": "nope"}', '{"type": "open", "token": "t", "name": "a"}',
    '{"type": "open", "token": "t", "name": "a", "size": -1}',
    '{"type": "open", "token": "t", "name": "a", "size": true}',
    '{"type": "resume", "token": "t", "ref": "zz"}',
    json.dumps({"type": "finish", "ref": REF, "crc32c": 4294967296}),
    '{"type": "cancel"}', "x" * 20000,
])
def test_bad_control(text):
    with pytest.raises(BadMessage):
        parse_control(text)
