"""Mint an upload token for scripted uploads (``python -m djust_resumable upload``)."""

from __future__ import annotations

import re
import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from djust_resumable.tokens import UploadGrant, mint_token

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'500M', '10G', '1T', '12345' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text.upper())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


class Command(BaseCommand):
    help = "Print a signed upload token for the upload WebSocket (scripts, the CLI client)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slot", default="files", help="upload name (djust slot)")
        parser.add_argument("--max-file-size", default="10G",
                            help="largest file the token allows, e.g. 500M, 10G")
        parser.add_argument("--user", default="", help="user id to record as owner")
        parser.add_argument("--session", default="",
                            help="owner session id (default: a new random one)")
        parser.add_argument("--view", default="cli", help="view path recorded in the ledger")
        parser.add_argument("--accept", default="", help="accept list, as djust's allow_upload")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            max_size = parse_size(opts["max_file_size"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        grant = UploadGrant(session=opts["session"] or "cli-" + secrets.token_hex(12),
                            user=str(opts["user"]), view=opts["view"], slot=opts["slot"],
                            max_file_size=max_size, accept=opts["accept"])
        self.stdout.write(mint_token(grant))
