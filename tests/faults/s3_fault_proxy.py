"""A fault-injecting HTTP reverse proxy in front of an S3 API server (moto_server in tests).

    python tests/faults/s3_fault_proxy.py --upstream http://127.0.0.1:9000 --port 9100

Every request is forwarded unchanged (method, raw path and query, headers, body) except that
a configurable share of ``UploadPart`` requests (``PUT ...?partNumber=N&uploadId=...``) is
answered by the proxy itself with ``500 InternalError`` or ``503 SlowDown``, the way S3
answers under load; boto3's standard retry mode must absorb them.

Control (the proxy's own path, never forwarded):

* ``POST /__faults__?rate=0.3&codes=500,503`` sets the share (0..1) and the status codes;
* ``GET /__faults__`` answers JSON counters: ``forwarded``, ``upload_parts``, ``injected``
  (per status code).

``Expect: 100-continue`` (botocore sends it with part bodies) is honoured: a faulted request
gets its error instead of ``100 Continue``, so its body is never sent; a forwarded one gets
``100 Continue`` from the proxy and is sent upstream without the header. Chunked request
bodies are de-chunked and forwarded with a Content-Length. Test tool only: each request body
(at most one part) is held in memory while it is forwarded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "expect", "content-length"}


class FaultState:
    def __init__(self, rate: float = 0.0, codes: tuple[int, ...] = (500, 503),
                 seed: int | None = None) -> None:
        self.lock = threading.Lock()
        self.rate = rate
        self.codes = codes
        self.rng = random.Random(seed)
        self.forwarded = 0
        self.upload_parts = 0
        self.injected: dict[str, int] = {}

    def decide(self, is_part: bool) -> int | None:
        with self.lock:
            if not is_part:
                return None
            self.upload_parts += 1
            if self.rate > 0 and self.rng.random() < self.rate:
                code = self.rng.choice(self.codes)
                self.injected[str(code)] = self.injected.get(str(code), 0) + 1
                return code
            return None

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {"rate": self.rate, "codes": list(self.codes), "forwarded": self.forwarded,
                    "upload_parts": self.upload_parts, "injected": dict(self.injected)}


def make_handler(upstream: urllib.parse.SplitResult, state: FaultState
                 ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        _fault: int | None = None

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # moto keeps the access log

        def _is_part(self) -> bool:
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            return self.command == "PUT" and "partNumber" in q and "uploadId" in q

        def handle_expect_100(self) -> bool:
            # Decide before the body is sent: a refused part never uploads its bytes.
            self._fault = state.decide(self._is_part())
            self._decided = True
            if self._fault is not None:
                return True  # no 100 Continue; the error answers the request
            return super().handle_expect_100()

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _control(self) -> None:
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if self.command == "POST":
                with state.lock:
                    if "rate" in q:
                        state.rate = float(q["rate"][0])
                    if "codes" in q:
                        state.codes = tuple(int(c) for c in q["codes"][0].split(","))
            self._read_body()
            body = json.dumps(state.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _inject(self, code: int) -> None:
            err, message = _ERRORS.get(code, ("InternalError", "injected"))
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{err}</Code>'
                    f"<Message>{message}</Message><RequestId>fault-proxy</RequestId>"
                    "</Error>").encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            # The body of the request may be unread (100-continue): never reuse the socket.
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def _handle(self) -> None:
            if urllib.parse.urlsplit(self.path).path == "/__faults__":
                self._control()
                return
            if not getattr(self, "_decided", False):
                self._fault = state.decide(self._is_part())
            self._decided = False
            if self._fault is not None:
                self._inject(self._fault)
                return
            body = self._read_body()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                with state.lock:
                    state.forwarded += 1
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() not in ("server", "date"):
                        self.send_header(k, v)
                if self.command != "HEAD" or resp.getheader("Content-Length") is None:
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


def serve(upstream: str, port: int, host: str = "127.0.0.1", rate: float = 0.0,
          seed: int | None = None) -> None:
    """Run the proxy until the process is stopped."""
    state = FaultState(rate=rate, seed=seed)
    server = ThreadingHTTPServer((host, port), make_handler(urllib.parse.urlsplit(upstream),
                                                            state))
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="S3 endpoint URL, e.g. http://127.0.0.1:9000")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0, help="share of UploadPart requests to fail")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    serve(a.upstream, a.port, rate=a.rate, seed=a.seed)


if __name__ == "__main__":
    main()
