"""Command line: ``python -m djust_resumable upload FILE --url URL --token TOKEN``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from tqdm import tqdm

from .client import ResumableUploader, UploadFailed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m djust_resumable")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("upload", help="upload a file, resuming after any drop")
    up.add_argument("file")
    up.add_argument("--url", action="append", required=True,
                    help="upload WebSocket URL; repeat to rotate between workers on reconnect")
    up.add_argument("--token", required=True, help="token from `manage.py resumable_token`")
    up.add_argument("--name", help="file name to record (default: the file's base name)")
    up.add_argument("--content-type")
    up.add_argument("--ref", help="resume this upload ref")
    up.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    size = os.path.getsize(args.file)
    bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
               disable=args.quiet, desc=os.path.basename(args.file))

    def progress(sent: int, durable: int, total: int) -> None:
        bar.n = durable
        bar.set_postfix_str(f"sent {sent / 2**20:.0f} MiB", refresh=False)
        bar.refresh()

    uploader = ResumableUploader(args.url, args.token, on_progress=progress)
    try:
        result = asyncio.run(uploader.upload(args.file, name=args.name,
                                             content_type=args.content_type, ref=args.ref))
    except UploadFailed as exc:
        bar.close()
        print(f"upload failed: {exc.code}: {exc.message}", file=sys.stderr)
        if uploader.ref and exc.code not in ("checksum_mismatch", "aborted", "failed"):
            print(f"resume later with --ref {uploader.ref}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted; resume with --ref {uploader.ref}", file=sys.stderr)
        return 130
    bar.n = size
    bar.close()
    print(f"done ref={result.ref} size={result.size} crc32c={result.crc32c:08x} "
          f"etag={result.etag} resent={result.bytes_resent} connections={result.connections}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
