"""Validation rules (djust_resumable/validation.py): accept list, active content, max_entries
(on fakeredis with the real Lua), magic bytes with python-magic."""

from __future__ import annotations

import os
import struct
import zlib

import fakeredis
import pytest

from djust_resumable.conf import MiB, get_settings
from djust_resumable.errors import ActiveContent, InvalidContent, NotAccepted, TooManyEntries
from djust_resumable.ledger import Ledger, UploadRecord, now_ms
from djust_resumable.tokens import UploadGrant
from djust_resumable.validation import (
    ACTIVE_CONTENT_FLAG,
    accepts,
    check_accept,
    check_content,
    grant_accept,
    parse_accept,
    validate_open,
)


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00\x00\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG = _png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 200
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 400
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
HTML = b"<!DOCTYPE html><html><head><script>alert(1)</script></head><body></body></html>"


def G(accept: str = "", max_entries: int = 1) -> UploadGrant:
    return UploadGrant(session="s", user="u", view="v", slot="files", max_file_size=1 << 30,
                       accept=accept, max_entries=max_entries)


# --------------------------------------------------------------------------- accept


@pytest.mark.parametrize("accept,name,ctype,ok", [
    ("", "anything.bin", "application/octet-stream", True),
    (".jpg,.png", "a.png", "image/png", True),
    (".jpg,.png", "a.PNG", "", True),
    (".jpg,.png", "a.gif", "image/gif", False),
    (".jpg,.png", "a.png", "application/x-msdownload", False),  # type contradicts the list
    ("image/*", "a.webp", "image/webp", True),
    ("image/*", "a.pdf", "application/pdf", False),
    ("image/*", "a.png", "", True),  # type implied by the extension
    ("image/png", "a.png", "image/png; charset=x", True),
    ("image/jpeg", "a.jpg", "image/jpg", True),  # alias
    (".pdf,image/*", "photo.png", "image/png", True),  # djust refuses this mixed case
    (".pdf,image/*", "doc.pdf", "application/pdf", True),
    (".pdf,image/*", "doc.txt", "text/plain", False),
])
def test_accept_list(accept, name, ctype, ok):
    assert accepts(parse_accept(accept), name, ctype) is ok
    if ok:
        check_accept(G(accept), name, ctype)
    else:
        with pytest.raises(NotAccepted) as e:
            check_accept(G(accept), name, ctype)
        assert e.value.code == "not_accepted"


@pytest.mark.parametrize("name,ctype", [
    ("a.svg", "image/svg+xml"), ("a.svg ", "image/png"), ("a.png", "image/svg+xml; charset=x"),
    ("page.html", "text/html"), ("x.js", "text/javascript"), ("a.svgz", ""),
])
def test_active_content_refused_unless_allowed(name, ctype):
    with pytest.raises(ActiveContent) as e:
        check_accept(G("image/*,.html,.js,.svgz"), name, ctype)
    assert e.value.code == "active_content"
    check_accept(G(grant_accept("image/*,.html,.js,.svgz", True)), name, ctype)


def test_active_flag_round_trip():
    assert grant_accept(".png", True) == f".png,{ACTIVE_CONTENT_FLAG}"
    assert grant_accept(f".png,{ACTIVE_CONTENT_FLAG}", False) == ".png"
    p = parse_accept(grant_accept("", True))
    assert p.allow_active_content and p.unrestricted


# --------------------------------------------------------------------------- magic bytes


def test_renamed_exe_is_invalid_content():
    with pytest.raises(InvalidContent) as e:
        check_content(EXE, "holiday.png", "image/png")
    assert e.value.code == "invalid_content"
    assert e.value.details["detected"] == "application/x-dosexec"
    with pytest.raises(InvalidContent):
        check_content(EXE, "notes.txt", "text/plain")
    # An honestly named executable in an unrestricted slot is what it says.
    assert check_content(EXE, "tool.exe", "application/octet-stream") == "application/x-dosexec"


def test_signature_types_must_match():
    assert check_content(PNG, "a.png", "image/png") == "image/png"
    assert check_content(JPEG, "a.jpg", "image/jpeg") == "image/jpeg"
    with pytest.raises(InvalidContent):
        check_content(JPEG, "a.png", "image/png")
    with pytest.raises(InvalidContent):  # the extension claims PNG too
        check_content(JPEG, "a.png", "application/octet-stream")
    with pytest.raises(InvalidContent):
        check_content(b"", "empty.png", "image/png")
    with pytest.raises(InvalidContent):
        check_content(os.urandom(4096), "a.pdf", "application/pdf")


def test_active_content_detected_in_the_bytes():
    with pytest.raises(InvalidContent):
        check_content(HTML, "notes.txt", "text/plain")
    with pytest.raises(InvalidContent):
        check_content(SVG, "data.bin", "")
    assert check_content(SVG, "a.svg", "image/svg+xml", allow_active_content=True)


def test_unknown_content_never_contradicts_loose_types():
    blob = os.urandom(4096)
    check_content(blob, "x.bin", "application/octet-stream")
    check_content(blob, "x.dat", "")
    check_content(b'{"a": 1}\n' * 10, "x.json", "application/json")
    check_content(b"a,b\n1,2\n", "x.csv", "text/csv")
    check_content(b"hello\n", "x.txt", "text/plain")
    with pytest.raises(InvalidContent):
        check_content(PNG, "x.txt", "text/plain")


# --------------------------------------------------------------------------- max_entries


@pytest.fixture
def ledger():
    return Ledger(fakeredis.FakeAsyncRedis(), get_settings({"LEASE_TTL": 2}))


async def _register(ledger: Ledger, grant: UploadGrant, age_ms: int = 0) -> UploadRecord:
    t = now_ms() - age_ms
    ref = os.urandom(16).hex()
    r = UploadRecord(ref=ref, state="registered", owner=grant.owner, user=grant.user,
                     slot=grant.slot, view=grant.view, size=MiB, key=f"k/{ref}",
                     upload_id="U", part_size=5 * MiB, created=t, updated=t)
    await ledger.register(r)
    await ledger.index_owner(r, allow_active=0)
    return r


async def test_max_entries_counts_uploads_in_progress(ledger):
    g = G(max_entries=2)
    assert await validate_open(ledger, g, "a.bin", "") == {"allow_active": 0}
    a = await _register(ledger, g)
    await _register(ledger, g)
    with pytest.raises(TooManyEntries) as e:
        await validate_open(ledger, g, "c.bin", "")
    assert e.value.code == "too_many_entries" and e.value.details["max_entries"] == 2
    # Other slots and other owners are not counted.
    await validate_open(ledger, UploadGrant("s", "u", "v", "other", 1 << 30), "c.bin", "")
    await validate_open(ledger, UploadGrant("s2", "u", "v", "files", 1 << 30, max_entries=1),
                        "c.bin", "")
    # A finished upload frees its place.
    e1 = (await ledger.acquire(a.ref, "c", "ch")).epoch
    await ledger.transition(a.ref, "completing", ("uploading",), e1)
    await ledger.transition(a.ref, "complete", ("completing",), e1)
    await validate_open(ledger, g, "c.bin", "")


async def test_abandoned_upload_does_not_block_the_slot(ledger):
    g = G(max_entries=1)
    old = await _register(ledger, g, age_ms=60_000)  # registered a minute ago, no writer
    await validate_open(ledger, g, "b.bin", "")
    await ledger.mark_active(g.owner, old.ref, True)  # a writer holds it: it counts
    with pytest.raises(TooManyEntries):
        await validate_open(ledger, g, "b.bin", "")
    await validate_open(ledger, G(max_entries=0), "b.bin", "")  # 0 = no limit


async def test_policy_is_kept_on_the_record(ledger):
    g = G(grant_accept("", True))
    policy = await validate_open(ledger, g, "a.svg", "image/svg+xml")
    r = await _register(ledger, g)
    await ledger.index_owner(r, **policy)
    assert (await ledger.get(r.ref)).extra["allow_active"] == "1"
