"""tuspy client for bench/peers.py: runs under bench/peers/.venv (tuspy is not a project
dependency). Prints one JSON object with epoch-second marks.

    tus_client.py ENDPOINT FILE --chunk BYTES [--retries N]

The upload URL is created first (POST, not timed); ``first_sent`` is taken right before
the first PATCH. With ``--retries`` tuspy's own recovery is used: a failed PATCH is
followed by a HEAD for the server's offset and the upload continues from there
(``tusclient.uploader.Uploader._retry_or_cry``). Each HEAD answer is recorded.

With ``--count`` (the drop-at-50 % run only) each PATCH body is handed to requests as a
reader that counts what the HTTP stack pulled from it (urllib3 reads it in 16 KiB blocks and
writes each to the socket), so ``bytes_sent`` is, as for the other clients of the bench,
the payload handed to the connection, re-sends included. Without it tuspy runs unchanged.
"""

import argparse
import json
import sys
import time

import requests
from tusclient import client as tus_client
from tusclient import request as tus_request
from tusclient.exceptions import TusUploadFailed
from tusclient.uploader import Uploader

sent = [0]


class CountingReader:
    """A bytes body that counts the bytes read from it (requests sends Content-Length from
    ``__len__``)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def __len__(self) -> int:
        return len(self.data)

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n is None or n < 0 else min(len(self.data), self.pos + n)
        out = bytes(self.data[self.pos:end])
        self.pos = end
        sent[0] += len(out)
        return out


def counting_perform(self) -> None:  # type: ignore[no-untyped-def]
    """tusclient.request.TusRequest.perform (tuspy 1.1.0) with a counting body."""
    try:
        chunk = self.file.read(self._content_length)
        self.add_checksum(chunk)
        resp = requests.patch(self._url, data=CountingReader(chunk),
                              headers=self._request_headers, verify=self.verify_tls_cert,
                              stream=True, cert=self.client_cert)
        self.status_code = resp.status_code
        self.response_content = resp.content
        self.response_headers = {k.lower(): v for k, v in resp.headers.items()}
    except requests.exceptions.RequestException as error:
        raise TusUploadFailed(error) from error


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("file")
    ap.add_argument("--chunk", type=int, required=True)
    ap.add_argument("--retries", type=int, default=0)
    ap.add_argument("--count", action="store_true")
    args = ap.parse_args()
    if args.count:
        tus_request.TusRequest.perform = counting_perform

    offsets: list[int] = []
    patches: list[dict] = []

    class Tracked(Uploader):
        def get_offset(self):  # type: ignore[no-untyped-def]
            off = super().get_offset()
            offsets.append(off)
            return off

        def _do_request(self):  # type: ignore[no-untyped-def]
            patches.append({"offset": self.offset, "length": self.get_request_length(),
                            "t": time.time()})
            return super()._do_request()

    c = tus_client.TusClient(args.endpoint)
    up = Tracked(args.file, client=c, chunk_size=args.chunk, retries=args.retries,
                 retry_delay=0.2, metadata={"filename": "bench.bin"})
    marks = {"create": time.time()}
    up.set_url(up.create_url())
    up.offset = 0
    marks["first_sent"] = time.time()
    up.upload()
    marks["done"] = time.time()
    json.dump({"url": up.url, "offset": up.offset, "marks": marks, "head_offsets": offsets,
               "patches": patches,
               "bytes_sent": sent[0] if args.count else None}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
