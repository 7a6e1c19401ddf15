"""Validation of resumable uploads, with typed errors (``errors.py``, docs/protocol.md).

Two moments:

* ``open`` (``UploadService.register`` calls :func:`validate_open`): the slot's ``accept``
  list (extensions and MIME patterns, as djust's ``allow_upload``), djust's active-content
  rule (SVG/HTML/XHTML/JS refused unless ``allow_active_content=True``; djust's own
  :func:`djust.uploads.is_active_content` decides, so both paths agree) and ``max_entries``
  (uploads of this owner in progress in the slot). ``max_file_size`` is checked by ``register``
  itself and, while bytes arrive, by the writer (``size_exceeded``).
* ``finish`` (``UploadWriter.finish`` calls :func:`enforce_content` before completing): the
  head bytes kept in the ledger (``HEAD_BYTES``, no re-download) are identified with
  python-magic and compared with the declared type and extension. A contradiction fails the
  upload with ``invalid_content`` and discards its parts.

The token has no field for ``allow_active_content``; the mixin adds :data:`ACTIVE_CONTENT_FLAG`
to the signed ``accept`` string instead (it can never be a real accept entry: those start with
``.`` or contain ``/``). Scripts minting tokens by hand can add it too
(``manage.py resumable_token --accept "+active-content"``).
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from djust.uploads import EXT_TO_MIME, MAGIC_BYTES, is_active_content, validate_magic_bytes

from . import metrics
from .errors import ActiveContent, InvalidContent, NotAccepted, TooManyEntries
from .ledger import ACTIVE_STATES, now_ms
from .worker import worker_id

if TYPE_CHECKING:
    from .ledger import Ledger, UploadRecord
    from .service import UploadWriter
    from .tokens import UploadGrant

log = logging.getLogger("djust_resumable")

#: Marker in a grant's ``accept`` meaning ``allow_active_content=True``.
ACTIVE_CONTENT_FLAG = "+active-content"

#: Declared types that say nothing about the content.
GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream",
                           "application/binary", "application/unknown",
                           "application/x-unknown"})

#: What libmagic answers for content it cannot identify (never a contradiction).
UNKNOWN_DETECTED = frozenset({"application/octet-stream", "application/x-empty",
                              "inode/x-empty"})

#: Spellings of the same type (browsers, OSes and libmagic versions differ).
ALIASES = {
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp", "image/vnd.microsoft.icon": "image/x-icon",
    "audio/mp3": "audio/mpeg", "audio/x-mpeg": "audio/mpeg", "audio/x-mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav",
    "application/x-zip-compressed": "application/zip", "application/x-zip": "application/zip",
    "application/x-pdf": "application/pdf", "text/xml": "application/xml",
    "application/x-javascript": "application/javascript",
    "text/javascript": "application/javascript",
}

#: Declared types whose content must be exactly that type (djust's signature list, plus two
#: formats libmagic identifies reliably).
STRICT_TYPES = frozenset(set(MAGIC_BYTES) | {"image/bmp", "image/tiff"})

#: Native executables as libmagic reports them.
EXECUTABLE_TYPES = frozenset({
    "application/x-dosexec", "application/x-msdownload",
    "application/vnd.microsoft.portable-executable", "application/x-executable",
    "application/x-sharedlib", "application/x-pie-executable", "application/x-mach-binary",
    "application/x-elf", "application/x-object", "application/x-coredump",
    "application/x-msdos-program", "application/x-ms-dos-executable", "application/exe",
    "application/x-exe", "application/x-mach-o-executable",
})

#: Browser-executable content as libmagic reports it (djust's list, normalised).
ACTIVE_TYPES = frozenset({"image/svg+xml", "text/html", "application/xhtml+xml",
                          "application/javascript"})

#: Detected types a declared ``text/*`` file may have.
TEXTUAL = frozenset({"application/json", "application/xml", "application/csv",
                     "application/x-ndjson", "application/x-yaml", "application/yaml"})


def normalize_type(mime: str | None) -> str:
    """Lower-case, parameters stripped, aliases resolved: ``"Image/JPG; q=1"`` ->
    ``"image/jpeg"``."""
    m = (mime or "").split(";", 1)[0].strip().lower()
    return ALIASES.get(m, m)


def type_from_name(name: str) -> str:
    """The MIME type a file name's extension implies ("" when unknown or generic)."""
    ext = Path(name or "").suffix.lower()
    guess = EXT_TO_MIME.get(ext) or mimetypes.guess_type("x" + ext)[0] or ""
    guess = normalize_type(guess)
    return "" if guess in GENERIC_TYPES else guess


# --------------------------------------------------------------------------- accept


@dataclass(frozen=True)
class AcceptPolicy:
    """A parsed accept string: ``extensions`` (".jpg"), ``patterns`` (explicit MIME entries,
    "image/*" allowed), ``implied`` (MIME types the listed extensions imply) and whether
    active content is allowed."""

    extensions: frozenset[str] = field(default_factory=frozenset)
    patterns: frozenset[str] = field(default_factory=frozenset)
    implied: frozenset[str] = field(default_factory=frozenset)
    allow_active_content: bool = False

    @property
    def unrestricted(self) -> bool:
        return not self.extensions and not self.patterns


def grant_accept(accept: str, allow_active_content: bool) -> str:
    """The accept string to sign into a token (djust's, plus the active-content flag)."""
    parts = [p.strip() for p in (accept or "").split(",") if p.strip()]
    parts = [p for p in parts if p != ACTIVE_CONTENT_FLAG]
    if allow_active_content:
        parts.append(ACTIVE_CONTENT_FLAG)
    return ",".join(parts)


def parse_accept(accept: str) -> AcceptPolicy:
    exts: set[str] = set()
    pats: set[str] = set()
    implied: set[str] = set()
    allow = False
    for raw in (accept or "").split(","):
        part = raw.strip().lower()
        if not part:
            continue
        if part == ACTIVE_CONTENT_FLAG:
            allow = True
        elif part.startswith("."):
            exts.add(part)
            t = type_from_name("x" + part)
            if t:
                implied.add(t)
        elif "/" in part:
            pats.add(normalize_type(part) if not part.endswith("/*") else part)
    return AcceptPolicy(frozenset(exts), frozenset(pats), frozenset(implied), allow)


def _matches(mime: str, patterns: frozenset[str]) -> bool:
    for p in patterns:
        if p == "*/*" or p == mime:
            return True
        if p.endswith("/*") and mime.startswith(p[:-1]):
            return True
    return False


def accepts(policy: AcceptPolicy, name: str, content_type: str) -> bool:
    """djust's rule, without its mixed-list quirk: a file passes when its extension is listed
    (and its declared type, if specific, fits the listed extensions or patterns), or when its
    type (declared, else implied by the extension) matches a listed MIME pattern. djust checks
    extensions and types separately, so ``".pdf,image/*"`` refuses ``photo.png``; here it
    accepts it."""
    if policy.unrestricted:
        return True
    declared = normalize_type(content_type)
    declared = "" if declared in GENERIC_TYPES else declared
    ext = Path(name or "").suffix.lower()
    if ext in policy.extensions:
        if not declared or _matches(declared, policy.implied | policy.patterns):
            return True
        if declared == type_from_name(name):
            return True
    mime = declared or type_from_name(name)
    return bool(mime) and _matches(mime, policy.patterns)


def check_accept(grant: UploadGrant, name: str, content_type: str) -> AcceptPolicy:
    """Raise NotAccepted / ActiveContent for a declaration the slot refuses."""
    policy = parse_accept(grant.accept)
    if not accepts(policy, name, content_type):
        shown = ",".join(sorted(policy.extensions | policy.patterns))
        raise NotAccepted(f"{Path(name or '').suffix or 'this file type'} is not accepted "
                          f"here (accepted: {shown})", accept=shown)
    if not policy.allow_active_content and is_active_content(name, content_type):
        raise ActiveContent()
    return policy


async def count_in_progress(ledger: Ledger, owner: str, slot: str) -> int:
    """Uploads of ``owner`` in ``slot`` that are in progress: not finished and either held by
    a live writer or registered less than a lease ago (about to be attached). An upload whose
    client went away does not count, so an abandoned upload never blocks the slot (djust
    resets its count with every page load; this is the closest durable equivalent)."""
    recs = await ledger.owner_records(owner, slot)
    active = [r for r in recs if r.state in ACTIVE_STATES]
    if not active:
        return 0
    live = await ledger.live_leases(owner)
    fresh = now_ms() - ledger.lease_ms
    return sum(1 for r in active if r.ref in live or r.created >= fresh)


async def validate_open(ledger: Ledger, grant: UploadGrant, name: str,
                        content_type: str) -> dict[str, Any]:
    """The ``open`` checks (accept list, active content, max_entries). Returns the policy to
    keep on the ledger record for the ``finish`` check. Raises NotAccepted, ActiveContent,
    TooManyEntries. ``max_entries <= 0`` means no limit (scripted tokens)."""
    policy = check_accept(grant, name, content_type)
    if grant.max_entries > 0:
        n = await count_in_progress(ledger, grant.owner, grant.slot)
        if n >= grant.max_entries:
            raise TooManyEntries(f"at most {grant.max_entries} file(s) at once in this slot",
                                 max_entries=grant.max_entries)
    return {"allow_active": int(policy.allow_active_content)}


# --------------------------------------------------------------------------- content


_magic_failed = False


def detect_type(head: bytes) -> str | None:
    """libmagic's MIME type for ``head`` (normalised), or None when python-magic/libmagic is
    unavailable (then only djust's signature table is checked)."""
    global _magic_failed
    if _magic_failed:
        return None
    try:
        import magic

        return normalize_type(magic.from_buffer(head, mime=True))
    except Exception as exc:  # ImportError, or libmagic missing / unreadable database
        _magic_failed = True
        log.warning("python-magic unavailable (%s): magic-byte checks use djust's signature "
                    "table only", exc)
        return None


def check_content(head: bytes, name: str, content_type: str,
                  allow_active_content: bool = False) -> str | None:
    """Compare the file's head with what its declared type and extension claim.

    Returns the detected type (None without libmagic). Raises InvalidContent (carrying
    ``detected``) when

    * the head is a native executable and the name or type claims something else;
    * the head is browser-executable (HTML, SVG, JS) and the slot does not allow it;
    * a claimed type with a known signature (JPEG, PNG, GIF, WebP, PDF, ZIP, MP4, MP3, SVG,
      BMP, TIFF) is not what the head is;
    * a claimed image/audio/video/text type meets content of another kind.

    Content libmagic cannot identify never contradicts a non-signature type.
    """
    detected = detect_type(head)
    claims = {t for t in (normalize_type(content_type), type_from_name(name))
              if t and t not in GENERIC_TYPES}
    shown = detected or "unknown"

    def bad(why: str) -> InvalidContent:
        return InvalidContent(f"the file's content ({shown}) does not match {why}",
                              detected=shown)

    if detected in ACTIVE_TYPES and not allow_active_content:
        raise bad("what this slot accepts (browser-executable content)")
    if not claims:
        return detected
    if detected in EXECUTABLE_TYPES and not claims & EXECUTABLE_TYPES:
        raise bad(f"its declared type {', '.join(sorted(claims))}")
    for claim in sorted(claims):
        if claim in STRICT_TYPES:
            ok = (detected == claim
                  or (claim in MAGIC_BYTES and validate_magic_bytes(head, claim)))
            if not ok:
                raise bad(f"its declared type {claim}")
            continue
        if detected is None or detected in UNKNOWN_DETECTED:
            continue
        major = claim.split("/", 1)[0]
        dmajor = detected.split("/", 1)[0]
        if major in ("image", "audio", "video") and dmajor != major:
            # MP4/MOV containers hold audio or video; libmagic does not know which.
            if not (major in ("audio", "video") and dmajor in ("audio", "video")):
                raise bad(f"its declared type {claim}")
        if major == "text" and dmajor != "text" and detected not in TEXTUAL:
            raise bad(f"its declared type {claim}")
    return detected


async def enforce_content(writer: UploadWriter, rec: UploadRecord) -> None:
    """The ``finish`` hook: check the head kept in the ledger; on a contradiction fail the
    upload (``failed``, ``error=invalid_content``), discard its parts, release the lease and
    raise InvalidContent."""
    head = rec.head or bytes(writer.head)
    allow = rec.extra.get("allow_active", "0") == "1"
    try:
        check_content(head, rec.client_name, rec.client_type, allow)
    except InvalidContent as exc:
        await writer.ledger.transition(rec.ref, "failed", ("uploading",), writer.epoch,
                                       error="invalid_content")
        await writer.sink.abort(rec.key, rec.upload_id)
        if rec.tail_key:
            await writer.sink.delete_tail(rec.tail_key)
        await writer.ledger.event(rec.ref, "failed", reason="invalid_content",
                                  detected=exc.details.get("detected", ""))
        log.info("failed ref=%s user=%s worker=%s reason=invalid_content: %s", rec.ref,
                 rec.user, worker_id(), exc.message)
        metrics.record_failed(writer.ledger)
        await writer.release()
        raise
