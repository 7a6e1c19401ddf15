"""Typed errors. Each carries a stable ``code`` that the protocol sends to clients
(docs/protocol.md lists them all); ``message`` is for humans. Never send a traceback."""

from __future__ import annotations

from typing import Any


class ResumableError(Exception):
    """Base class; ``code`` is the wire error code."""

    code = "internal"
    default_message = "internal error"
    #: True when the client may retry the same operation later (after reconnecting).
    retryable = False

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def to_wire(self, ref: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if ref is not None:
            out["ref"] = ref
        out["retryable"] = self.retryable
        out.update(self.details)
        return out


def _err(name: str, code: str, message: str, retryable: bool = False) -> type[ResumableError]:
    return type(name, (ResumableError,), {"code": code, "default_message": message,
                                          "retryable": retryable})


BadFrame = _err("BadFrame", "bad_frame", "malformed binary frame")
BadMessage = _err("BadMessage", "bad_message", "malformed control message")
FrameTooLarge = _err("FrameTooLarge", "frame_too_large", "frame payload above the limit")
BadToken = _err("BadToken", "bad_token", "invalid upload token")
TokenExpired = _err("TokenExpired", "token_expired", "upload token expired", retryable=True)
NotFound = _err("NotFound", "not_found", "no such upload")
NotOpen = _err("NotOpen", "not_open", "upload is not open on this connection; resume it",
               retryable=True)
OffsetMismatch = _err("OffsetMismatch", "offset_mismatch", "frame at an unexpected offset",
                      retryable=True)
SizeExceeded = _err("SizeExceeded", "size_exceeded", "bytes past the declared size")
TooLarge = _err("TooLarge", "too_large", "declared size above the slot's max_file_size")
InvalidState = _err("InvalidState", "invalid_state", "operation not allowed in this state")
Busy = _err("Busy", "busy", "another connection is writing this upload", retryable=True)
LeaseLost = _err("LeaseLost", "lease_lost", "this connection no longer holds the upload",
                 retryable=True)
Superseded = _err("Superseded", "superseded", "another connection took over this upload",
                  retryable=True)
ChecksumMismatch = _err("ChecksumMismatch", "checksum_mismatch",
                        "whole-file CRC32C does not match the bytes received")
Incomplete = _err("Incomplete", "incomplete", "finish before every byte arrived", retryable=True)
TooManyUploads = _err("TooManyUploads", "too_many_uploads",
                      "too many concurrent uploads for this user", retryable=True)
StorageError = _err("StorageError", "storage_error", "object storage failed", retryable=True)
LedgerUnavailable = _err("LedgerUnavailable", "ledger_unavailable",
                         "the upload ledger is unreachable", retryable=True)
Aborted = _err("Aborted", "aborted", "the upload was aborted")
Failed = _err("Failed", "failed", "the upload failed")
Internal = _err("Internal", "internal", "internal error", retryable=True)
# Validation (djust_resumable/validation.py): at ``open`` and, for the content, at ``finish``.
NotAccepted = _err("NotAccepted", "not_accepted", "file type not accepted by this upload slot")
TooManyEntries = _err("TooManyEntries", "too_many_entries",
                      "this upload slot already has its maximum number of files in progress",
                      retryable=True)
ActiveContent = _err("ActiveContent", "active_content",
                     "browser-executable files (SVG, HTML, JS) are not accepted by this slot")
InvalidContent = _err("InvalidContent", "invalid_content",
                      "the file's content does not match its declared type")

ALL_ERRORS: tuple[type[ResumableError], ...] = (
    BadFrame, BadMessage, FrameTooLarge, BadToken, TokenExpired, NotFound, NotOpen, OffsetMismatch,
    SizeExceeded, TooLarge, InvalidState, Busy, LeaseLost, Superseded, ChecksumMismatch,
    Incomplete, TooManyUploads, StorageError, LedgerUnavailable, Aborted, Failed, Internal,
    NotAccepted, TooManyEntries, ActiveContent, InvalidContent,
)
