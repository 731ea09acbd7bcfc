"""A small fault-injecting HTTP proxy for S3 tests: it sits before moto's server and misbehaves on purpose.

Each request draws, from a seeded generator, whether it fails and how:

- ``500`` / ``503``: an S3 error document (``InternalError`` / ``SlowDown``) instead of forwarding;
- ``reset``: the connection is reset (TCP RST) without any answer;
- ``stall``: the request waits `stall` seconds, then is forwarded;
- ``lost``: the request **is** forwarded and applied, but the client gets a 500 instead of the answer (the
  cruellest case: a write that happened while the client believes it failed);
- ``cut`` (only when asked for): the answer's status and headers arrive, then half its body, then the
  connection closes (a download that breaks off mid-body).

Only the proxy is fake: the S3 server behind it and every client are real.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("500", "503", "reset", "stall", "lost")
ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>fault-proxy</RequestId></Error>"
)


class FaultProxy:
    """Forward HTTP to `upstream` ("host:port"), injecting faults into a `rate` share of requests."""

    def __init__(self, upstream: str, rate: float, seed: int, kinds: tuple[str, ...] = KINDS, stall: float = 1.0):
        self.upstream = upstream
        self.rate = rate
        self.kinds = kinds
        self.stall = stall
        self.injected: Counter[str] = Counter()
        self.requests = 0
        #: The most requests the proxy was answering at one time (a client's concurrency, seen from outside).
        self.most_at_once = 0
        self._in_flight = 0
        self._rng = random.Random(seed)
        self._guard = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                with proxy._guard:
                    proxy._in_flight += 1
                    proxy.most_at_once = max(proxy.most_at_once, proxy._in_flight)
                try:
                    self._answer()
                finally:
                    with proxy._guard:
                        proxy._in_flight -= 1

            def _answer(self) -> None:
                body = self._body()
                fault = proxy._draw()
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault in ("500", "503"):
                    code = "InternalError" if fault == "500" else "SlowDown"
                    error = ERROR_XML.format(code=code, message="injected").encode()
                    self._reply(int(fault), {"Content-Type": "application/xml"}, error)
                    return
                if fault == "stall":
                    time.sleep(proxy.stall)
                status, headers, payload = proxy._forward(self.command, self.path, dict(self.headers), body)
                if fault == "cut" and self.command != "HEAD" and len(payload) > 1:
                    self._reply(status, headers, payload, cut=True)
                    return
                if fault == "lost":
                    error = ERROR_XML.format(code="InternalError", message="injected after applying").encode()
                    self._reply(500, {"Content-Type": "application/xml"}, error)
                    return
                self._reply(status, headers, payload)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, status: int, headers: dict[str, str], payload: bytes, cut: bool = False) -> None:
                self.send_response(status)
                length = str(len(payload))
                for key, value in headers.items():
                    if key.lower() == "content-length" and self.command == "HEAD":
                        length = value  # a HEAD answer states the object's size, with no body
                    elif key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload[: len(payload) // 2] if cut else payload)
                if cut:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # http.server's names

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _draw(self) -> str | None:
        with self._guard:
            self.requests += 1
            if self._rng.random() >= self.rate:
                return None
            fault = self._rng.choice(self.kinds)
            self.injected[fault] += 1
            return fault

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        host, port = self.upstream.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in ("transfer-encoding", "connection")}
            headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
