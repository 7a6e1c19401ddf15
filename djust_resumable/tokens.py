"""Signed, expiring upload tokens (``django.core.signing``).

A token grants one slot of one view to one owner: the session (as a digest, never the raw
session key) and the user id. The upload endpoint requires a token on ``open`` and
``resume``; a resume is allowed only when the token's owner equals the owner recorded in the
ledger, and anyone else gets the answer a missing upload gets (``not_found``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from django.core import signing

from .errors import BadToken, TokenExpired

SALT = "djust_resumable.upload-token.v1"


@dataclass(frozen=True)
class UploadGrant:
    """What a token allows. ``max_file_size`` in bytes; ``accept`` as djust's accept string."""

    session: str  # digest of the session key (or a random id for scripted uploads)
    user: str  # user id as a string, "" for anonymous
    view: str  # dotted path of the view, informational
    slot: str  # djust upload name
    max_file_size: int
    accept: str = ""
    max_entries: int = 1

    @property
    def owner(self) -> str:
        """The identity a ledger record is bound to: user and session together."""
        return f"{self.user}:{self.session}"


def session_digest(session_key: str) -> str:
    """A stable digest of a Django session key, so the raw key is never stored."""
    return hashlib.sha256(("djust_resumable:" + session_key).encode()).hexdigest()[:32]


def mint_token(grant: UploadGrant) -> str:
    """Sign ``grant``. The token is URL-safe text of a few hundred bytes."""
    data = {k: v for k, v in asdict(grant).items()}
    return signing.dumps(data, salt=SALT, compress=True)


def read_token(token: str, max_age: float) -> UploadGrant:
    """Verify and decode a token minted at most ``max_age`` seconds ago.

    Raises ``TokenExpired`` for a valid but old token and ``BadToken`` for anything forged,
    truncated or malformed.
    """
    if not isinstance(token, str) or len(token) > 4096 or not token.isascii():
        raise BadToken()
    try:
        data = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired as exc:
        raise TokenExpired() from exc
    except signing.BadSignature as exc:
        raise BadToken() from exc
    try:
        return UploadGrant(
            session=str(data["session"]), user=str(data["user"]), view=str(data["view"]),
            slot=str(data["slot"]), max_file_size=int(data["max_file_size"]),
            accept=str(data.get("accept", "")), max_entries=int(data.get("max_entries", 1)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadToken() from exc
