"""Command line: ``python -m djust_resumable upload FILE --url URL --token TOKEN``.

Exit codes: 0 done, 2 the upload failed or the arguments are wrong (one line on stderr,
never a traceback), 130 interrupted (Ctrl-C; the printed ref resumes it)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TextIO

from tqdm import tqdm
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from .client import TOKEN_CODES, ResumableUploader, UploadFailed


def _echo(*parts: object, file: TextIO | None = None, end: str = "\n") -> None:
    """A line for the user on stdout (or ``file``). Not ``print``: djust's system check Q001
    flags every print() in an installed app, and this module is the CLI."""
    out = file or sys.stdout
    out.write(" ".join(str(p) for p in parts) + end)
    out.flush()


def _say(line: str) -> None:
    # Through tqdm so a live progress bar is redrawn below the line, not torn by it.
    tqdm.write(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m djust_resumable")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upload", help="upload a file, resuming after any drop")
    up.add_argument("file")
    up.add_argument("--url", action="append", required=True,
                    help="upload WebSocket URL (ws:// or wss://); repeat to rotate between "
                         "workers on reconnect")
    up.add_argument("--token", required=True, help="token from `manage.py resumable_token`")
    up.add_argument("--name", help="file name to record (default: the file's base name)")
    up.add_argument("--content-type")
    up.add_argument("--ref", help="resume this upload ref")
    up.add_argument("--give-up-after", type=float, default=300.0, metavar="SECONDS",
                    help="stop retrying after this long without a working connection "
                         "(default 300)")
    up.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    if not os.path.isfile(args.file):
        _echo(f"error: {args.file}: no such file", file=sys.stderr)
        return 2
    for url in args.url:
        try:
            parse_uri(url)
        except InvalidURI:
            _echo(f"error: --url {url!r} is not a WebSocket URL: it must start with ws:// or "
                  "wss://, e.g. ws://127.0.0.1:8000/ws/djust-resumable/", file=sys.stderr)
            return 2

    try:
        size = os.path.getsize(args.file)
    except OSError as exc:
        _echo(f"error: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
               disable=args.quiet, desc=os.path.basename(args.file))
    said: set[str] = set()

    def progress(sent: int, durable: int, total: int) -> None:
        bar.n = durable
        bar.set_postfix_str(f"sent {sent / 2**20:.0f} MiB", refresh=False)
        bar.refresh()

    def on_retry(reason: str, delay: float) -> None:
        if reason not in said:  # once per distinct reason: a refused port retries for minutes
            said.add(reason)
            _say(f"{reason}, retrying in {delay:.1f} s")

    def on_ready(ref: str, offset: int) -> None:
        if ref not in said:
            said.add(ref)
            # Printed at once so that a killed client (or machine) can still resume.
            _say(f"ref {ref} (resume with --ref {ref})")

    uploader = ResumableUploader(args.url, args.token, on_progress=progress,
                                 on_retry=on_retry, on_ready=on_ready,
                                 give_up_after=args.give_up_after)
    try:
        result = asyncio.run(uploader.upload(args.file, name=args.name,
                                             content_type=args.content_type, ref=args.ref))
    except UploadFailed as exc:
        bar.leave = False  # no stale 0 % bar above the error line
        bar.close()
        _echo(f"upload failed: {exc.code}: {exc.message}", file=sys.stderr)
        if exc.code in TOKEN_CODES:
            # Each minted token is its own owner: a new one cannot resume this ref.
            _echo("mint a new token (manage.py resumable_token) and upload again",
                  file=sys.stderr)
        elif uploader.ref and exc.retryable:
            _echo(f"resume later with --ref {uploader.ref}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        _echo("\ninterrupted" + (f"; resume with --ref {uploader.ref}" if uploader.ref else ""),
              file=sys.stderr)
        return 130
    except (OSError, InvalidURI) as exc:  # the file vanished or became unreadable mid-way
        bar.close()
        _echo(f"upload failed: {exc}", file=sys.stderr)
        return 2
    bar.n = size
    bar.close()
    _echo(f"done ref={result.ref} size={result.size} crc32c={result.crc32c:08x} "
          f"etag={result.etag} resent={result.bytes_resent} connections={result.connections}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
