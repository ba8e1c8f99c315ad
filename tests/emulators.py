"""The cloud API emulators the object-store tests talk to, and a proxy that breaks requests on purpose.

``scripts/start-moto.sh`` and ``scripts/start-fake-gcs.sh`` start the
servers and print the variables that point the real SDKs at them
(``scripts/test.sh`` evaluates them).  A test that finds no server skips,
naming the script; it never talks to anything but loopback.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def endpoint_problem(variable: str, script: str, probe_path: str, needle: bytes, endpoint: str | None) -> str | None:
    """Why the emulator named by ``variable`` cannot be used, or None."""
    start = f'eval "$(scripts/{script})"'
    if not endpoint:
        return f"{variable} is not set: start the emulator with {start}"
    host = urllib.parse.urlsplit(endpoint).hostname
    if host not in _LOOPBACK:
        return f"{variable}={endpoint} is not on loopback: tests only talk to emulators here ({start})"
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + probe_path, timeout=5) as response:
            if needle not in response.read():
                return f"{endpoint} answers, but not as the emulator does ({start})"
    except OSError as exc:
        return f"no emulator answers at {endpoint} ({start}): {exc}"
    return None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up (a test's SDK closing its pool) is no news


class Fault:
    """Answer requests whose ``"METHOD /path?query"`` contains ``match`` with ``status`` and ``body``.

    ``times``: how many requests to answer so (then it lets them through).
    ``after_forwarding``: send the request on first, then lie about the
    answer (a write that happened although the client saw it fail).
    """

    def __init__(
        self, match: str, status: int, body: bytes, times: int, after_forwarding: bool,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.match = match
        self.headers = headers or {}
        self.status = status
        self.body = body
        self.left = times
        self.after_forwarding = after_forwarding


class FaultProxy:
    """A loopback HTTP proxy in front of an emulator: it counts requests and injects faults.

    Real requests and real answers go through it; only the requests a
    ``Fault`` matches are answered differently.  The SDK under test thus
    parses a genuine HTTP error, which is what it would get from the cloud.
    """

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.requests: list[str] = []
        self.faults: list[Fault] = []
        self.observers: list[Callable[[str, str, bytes], None]] = []
        """Told each request's method, path and body before it is answered (a played controller
        reads the manifests as the client sent them, before an old server drops fields)."""
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, match: str, status: int, body: bytes | dict[str, object] = b"", *, times: int = 1,
             after_forwarding: bool = False, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        with self._lock:
            self.faults.append(Fault(match, status, data, times, after_forwarding, headers))

    def count(self, match: str) -> int:
        with self._lock:
            return sum(match in line for line in self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _fault_for(self, line: str) -> Fault | None:
        with self._lock:
            self.requests.append(line)
            for fault in self.faults:
                if fault.left > 0 and fault.match in line:
                    fault.left -= 1
                    return fault
        return None

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault_for(f"{self.command} {self.path}")
                for observe in proxy.observers:
                    observe(self.command, self.path, body)
                if fault is None or fault.after_forwarding:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                    status, answer_headers, answer = proxy._forward(self.command, self.path, headers, body)
                if fault is not None:
                    status, answer = fault.status, fault.body
                    answer_headers = [("Content-Type", "application/json"), *fault.headers.items()]
                self.send_response(status)
                for name, value in answer_headers:
                    if name.lower() not in hop_by_hop:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _relay

        return Handler


def gcs_error(status: int, reason: str, message: str) -> dict[str, object]:
    """A JSON API error body, as GCS sends it."""
    return {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}}

