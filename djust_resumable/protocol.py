"""Wire format of the upload WebSocket (docs/protocol.md is the reference).

Two kinds of WebSocket messages travel on one connection:

* **Control messages** are JSON text frames with a ``type`` key (``open``, ``resume``,
  ``finish``, ``cancel`` from the client; ``ready``, ``progress``, ``ack``, ``done``,
  ``cancelled``, ``error`` from the server).
* **Data frames** are binary frames::

      offset  size  field
      0       1     frame type, 0x01 = DATA
      1       16    upload ref (the 16 bytes of its UUID)
      17      8     byte offset of the payload in the file, unsigned big-endian
      25      n     payload (0 < n <= the ``max_frame`` the server announced in ``ready``)

Parsing never trusts the client: every malformed input raises a typed ``ResumableError``.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import BadFrame, BadMessage, FrameTooLarge

FRAME_DATA = 0x01
HEADER = struct.Struct(">B16sQ")
HEADER_SIZE = HEADER.size  # 25 bytes

CLIENT_TYPES = frozenset({"open", "resume", "finish", "cancel"})
MAX_CONTROL_BYTES = 16 * 1024
MAX_NAME_CHARS = 255
MAX_FINGERPRINT_CHARS = 128
#: Largest ``head`` a ``resume`` may carry (bytes, before base64): the server keeps the
#: file's first HEAD_BYTES (4 KiB by default) and compares what both have.
MAX_HEAD_CHECK_BYTES = 8192
MAX_ID_CHARS = 64
# A MIME type as S3 will put it in a header: printable ASCII, no CR/LF (header injection).
_MIME = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(?:\s*;[ -~]*)?")


@dataclass(frozen=True, slots=True)
class DataFrame:
    ref: str  # 32-hex UUID
    offset: int  # bytes
    payload: memoryview


def ref_to_bytes(ref: str) -> bytes:
    """16 raw bytes of a ref given as 32 hex digits (``uuid4().hex``); raises BadMessage."""
    try:
        return uuid.UUID(hex=ref).bytes
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadMessage("ref must be 32 hex digits") from exc


def encode_data(ref: str, offset: int, payload: bytes | memoryview) -> bytes:
    """Build a DATA frame. ``offset`` in bytes, must fit an unsigned 64-bit integer."""
    return HEADER.pack(FRAME_DATA, ref_to_bytes(ref), offset) + bytes(payload)


def decode_data(frame: bytes, max_payload: int) -> DataFrame:
    """Parse a binary frame.

    Raises ``BadFrame`` for a short frame, an unknown type or an empty payload, and
    ``FrameTooLarge`` when the payload exceeds ``max_payload`` bytes.
    """
    if len(frame) <= HEADER_SIZE:
        raise BadFrame(f"frame of {len(frame)} bytes is shorter than its {HEADER_SIZE}-byte "
                       "header plus one payload byte")
    kind, raw_ref, offset = HEADER.unpack_from(frame)
    if kind != FRAME_DATA:
        raise BadFrame(f"unknown frame type 0x{kind:02x}")
    size = len(frame) - HEADER_SIZE
    if size > max_payload:
        raise FrameTooLarge(f"frame payload of {size} bytes exceeds the {max_payload}-byte limit",
                            max_frame=max_payload)
    return DataFrame(uuid.UUID(bytes=raw_ref).hex, offset, memoryview(frame)[HEADER_SIZE:])


def _need(msg: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = msg.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BadMessage(f"'{msg.get('type')}' needs '{key}'")
    if isinstance(value, str):
        _utf8(key, value)
    return value


def _utf8(key: str, value: str) -> None:
    # JSON can carry lone surrogates ("\ud800"), which no store can encode.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadMessage(f"'{key}' is not valid Unicode text") from exc


def _token(msg: dict[str, Any]) -> str:
    # Only the type is checked here: tokens.read_token answers bad_token for anything else.
    token = msg.get("token")
    if not isinstance(token, str):
        raise BadMessage(f"'{msg.get('type')}' needs 'token'")
    return token


def _ref(msg: dict[str, Any]) -> str:
    ref = _need(msg, "ref", str)
    ref_to_bytes(ref)
    return ref.lower()


def _head(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > (MAX_HEAD_CHECK_BYTES + 2) // 3 * 4:
        raise BadMessage(f"head must be base64 of at most {MAX_HEAD_CHECK_BYTES} bytes")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise BadMessage("head is not valid base64") from exc


def parse_control(text: str) -> dict[str, Any]:
    """Validate a client control message and return it normalised.

    Shapes (extra keys are ignored)::

        {"type": "open", "id"?: str, "token": str, "name": str, "size": int,
         "content_type"?: str, "fingerprint"?: str}
        {"type": "resume", "id"?: str, "token": str, "ref": str, "fingerprint"?: str,
         "head"?: str}      # base64 of the file's first <= MAX_HEAD_CHECK_BYTES bytes
        {"type": "finish", "ref": str, "crc32c"?: int}      # CRC32C of the whole file
        {"type": "cancel", "ref": str, "token"?: str}

    Raises ``BadMessage`` for anything else.
    """
    if len(text) > MAX_CONTROL_BYTES:
        raise BadMessage("control message too long")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadMessage("control message is not JSON") from exc
    if not isinstance(msg, dict) or msg.get("type") not in CLIENT_TYPES:
        raise BadMessage("unknown control message type")
    kind = msg["type"]
    out: dict[str, Any] = {"type": kind}
    if "id" in msg:
        out["id"] = str(_need(msg, "id", (str, int)))[:MAX_ID_CHARS]
    if kind in ("open", "resume"):
        out["token"] = _token(msg)
        fp = msg.get("fingerprint")
        if fp is not None:
            if not isinstance(fp, str) or len(fp) > MAX_FINGERPRINT_CHARS:
                raise BadMessage("fingerprint must be a string of at most 128 characters")
            _utf8("fingerprint", fp)
            out["fingerprint"] = fp
    if kind == "resume" and msg.get("head") is not None:
        out["head"] = _head(msg["head"])
    elif kind == "cancel" and msg.get("token") is not None:
        # Lets the owner cancel an upload that is not open on this connection.
        out["token"] = _token(msg)
    if kind == "open":
        name = _need(msg, "name", str)
        size = _need(msg, "size", int)
        if size < 0:
            raise BadMessage("size must be >= 0")
        ctype = msg.get("content_type") or "application/octet-stream"
        if not isinstance(ctype, str) or len(ctype) > 255 or not _MIME.fullmatch(ctype):
            raise BadMessage("content_type must be a MIME type such as 'image/png'")
        out.update(name=name[:MAX_NAME_CHARS * 4], size=size, content_type=ctype)
    else:
        out["ref"] = _ref(msg)
    if kind == "finish" and msg.get("crc32c") is not None:
        crc = _need(msg, "crc32c", int)
        if not 0 <= crc <= 0xFFFFFFFF:
            raise BadMessage("crc32c must be an unsigned 32-bit integer")
        out["crc32c"] = crc
    return out


def dumps(msg: dict[str, Any]) -> str:
    """Serialise a server message compactly."""
    return json.dumps(msg, separators=(",", ":"))
