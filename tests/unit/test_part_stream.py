"""PartStream: the body of a part upload fed by the event loop and read by a storage thread
(djust_resumable/sinks/base.py). Pure threads, no store."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time

import google_crc32c
import pytest

from djust_resumable.sinks.base import PartStream, crc32c_b64


def _read_all(s: PartStream, n: int = 3) -> bytes:
    out = bytearray()
    while chunk := s.read(n):
        out += chunk
    return bytes(out)


def test_reader_waits_for_bytes_and_stops_at_the_length():
    s = PartStream(10, algorithm="CRC32C")
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(_read_all(s)))
    t.start()
    for piece in (b"abc", b"defg", b"hij"):
        time.sleep(0.02)
        assert t.is_alive(), "the reader must wait for bytes not yet fed"
        s.feed(piece)
    t.join(5)
    assert got == [b"abcdefghij"]
    assert s.checksum() == crc32c_b64(google_crc32c.value(b"abcdefghij"))


def test_whole_frames_are_handed_over_without_a_copy():
    frame = b"x" * 1000
    s = PartStream(2000)
    s.feed(frame)
    s.feed(b"y" * 1000)
    assert s.read(1000) is frame


def test_bytes_are_kept_for_a_retry_until_released():
    s = PartStream(6)
    s.feed(b"abc")
    assert s.read(2) == b"ab"
    s.seek(0)  # a retry rewinds over the kept bytes
    assert s.retained() == b"abc"
    s.feed(b"def")
    assert _read_all(s) == b"abcdef"
    s.seek(0)  # still kept after a complete read: the store has not answered yet
    assert _read_all(s) == b"abcdef"
    s.release()
    with pytest.raises(io.UnsupportedOperation):
        s.seek(0)
    with pytest.raises(io.UnsupportedOperation):
        s.retained()


def test_retry_reads_the_same_bytes_and_the_checksum_covers_them_once():
    data = bytes(range(256)) * 40
    s = PartStream(len(data), algorithm="SHA256")
    for i in range(0, len(data), 1000):
        s.feed(data[i:i + 1000])
    assert s.read(2500) and s.read(2500)
    s.seek(0)
    assert _read_all(s, 777) == data
    assert s.checksum() == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_reads_wait_for_the_bytes_they_ask_for():
    s = PartStream(2500)
    got: list[int] = []

    def reader() -> None:
        while chunk := s.read(1000):
            got.append(len(chunk))

    t = threading.Thread(target=reader)
    t.start()
    for piece in (b"a" * 300, b"b" * 900, b"c" * 1300):
        time.sleep(0.02)
        s.feed(piece)
    t.join(5)
    assert got == [1000, 1000, 500]


def test_feeding_past_the_length_is_refused():
    s = PartStream(4)
    s.feed(b"abc")
    with pytest.raises(ValueError):
        s.feed(b"de")


def test_len_is_the_part_length_for_the_request_size():
    assert len(PartStream(123)) == 123
