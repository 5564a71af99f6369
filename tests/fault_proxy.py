"""A fault-injecting HTTP proxy between boto3 and moto's S3 server, on a free localhost port.

Point boto3 at :attr:`FaultProxy.endpoint` instead of the S3 server: every request is
forwarded, and a deterministic *schedule* decides, per request, whether the client gets the
real response or a fault:

- ``"slowdown"``: ``503 SlowDown`` (S3's throttling answer), ``"internal"``: ``500
  InternalError``: the request is answered with an S3 error document;
- ``"reset"``: the connection is reset (TCP RST) before any byte of the response;
- ``"reset_body"``: the status line, the headers (with the full ``Content-Length``) and the
  first half of the body are sent (and received), then the connection is reset: what a flaky
  network does to an object's body, which boto3's request retries do not cover.

The schedule is keyed by (method, target: the path and query, unquoted) and the request's
ordinal for that pair, so it is the same whatever the order in which threads send their
requests. ``on_request`` runs before a
request is answered (a hook to observe the client's side while it waits on S3) and ``delay``
holds every response back, like a slow S3.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import socket
import socketserver
import struct
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

#: Faults a schedule may name.
FAULTS = ("slowdown", "internal", "reset", "reset_body")
_ERROR_BODIES = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}

#: (method, target, ordinal of this request for the pair, 1-based) -> a fault or None
Schedule = Callable[[str, str, int], str | None]


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        schedule: Schedule | None = None,
        on_request: Callable[[str, str], None] | None = None,
        delay: float = 0.0,
    ):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.schedule = schedule or (lambda method, path, n: None)
        self.on_request = on_request
        self.delay = delay
        self.seen: Counter[tuple[str, str]] = Counter()
        #: (method, target, headers) of every request, in the order they came.
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._serve_connection(self.connection, self.rfile)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -----------------------------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket, rfile) -> None:
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            while True:
                request = _read_request(rfile)
                if request is None:
                    return
                method, target, headers, body = request
                path = unquote(target)
                with self._lock:
                    self.seen[(method, path)] += 1
                    self.requests.append((method, path, headers))
                    ordinal = self.seen[(method, path)]
                fault = self.schedule(method, path, ordinal)
                if self.on_request is not None:
                    self.on_request(method, path)
                if self.delay:
                    time.sleep(self.delay)
                if fault is not None:
                    with self._lock:
                        self.injected[fault] += 1
                if fault == "reset":
                    _reset(sock)
                    return
                if fault in _ERROR_BODIES:
                    sock.sendall(_error_response(fault, path))
                    continue
                upstream.request(method, target, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                head = _response_head(response, len(payload))
                if fault == "reset_body":
                    sock.sendall(head + payload[: len(payload) // 2])
                    _drain(sock)
                    _reset(sock)
                    return
                sock.sendall(head + payload)
        except (ConnectionError, OSError):
            return
        finally:
            upstream.close()


def _read_request(rfile) -> tuple[str, str, dict[str, str], bytes] | None:
    line = rfile.readline(65537)
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip()] = value.strip()
    length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), 0))
    body = rfile.read(length) if length else b""
    return method, target, headers, body


def _response_head(response: http.client.HTTPResponse, length: int) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
    lines += [f"{k}: {v}" for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
    lines += [f"Content-Length: {length}", "Connection: keep-alive", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _error_response(fault: str, path: str) -> bytes:
    status, code, message = _ERROR_BODIES[fault]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{path}</Resource><RequestId>fault-proxy</RequestId></Error>"
    ).encode()
    reason = "Slow Down" if status == 503 else "Internal Server Error"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


def _drain(sock: socket.socket, timeout: float = 5.0) -> None:
    """Wait until the peer has every byte sent (Linux: the send queue is empty), so that the
    reset which follows cuts the body where it says, not wherever the kernel had got to."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            unsent = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            if struct.unpack("i", unsent)[0] == 0:
                return
            time.sleep(0.001)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not an orderly end of stream."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
