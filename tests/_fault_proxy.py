"""A tiny real HTTP proxy on loopback in front of a real MLflow server, answering with injected
faults: what a loaded or failing tracking server sends, without mocking MLflow.

``FaultProxy(upstream).inject("runs/log-batch", Fault.pool_exhausted(), times=2)`` makes the
next two log-batch requests answer MLflow's pool-exhausted HTTP 400; every other request is
forwarded to the real server unchanged. ``seen`` counts requests per API path.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Fault:
    """An injected answer: HTTP ``status`` with ``body``; ``status=0`` closes the connection
    without any answer (a reset)."""

    status: int
    body: str = ""

    @staticmethod
    def mlflow(status: int, code: str, message: str) -> Fault:
        return Fault(status, json.dumps({"error_code": code, "message": message}))

    @staticmethod
    def pool_exhausted() -> Fault:
        """What an MLflow server with an exhausted SQLAlchemy pool answers (measured)."""
        return Fault.mlflow(400, "BAD_REQUEST", "(sqlalchemy.exc.TimeoutError) QueuePool limit "
                            "of size 5 overflow 10 reached, connection timed out, timeout 30.00 "
                            "(Background on this error at: https://sqlalche.me/e/20/3o7r)")

    @staticmethod
    def reset() -> Fault:
        return Fault(0)


class FaultProxy:
    """Forwards to ``upstream`` (``http://127.0.0.1:PORT``) except for injected faults."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._up_host, self._up_port = parts.hostname or "127.0.0.1", parts.port or 80
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                fault = proxy._take(path)
                if fault is not None and fault.status == 0:
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None:
                    data = fault.body.encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                status, headers, data = proxy._forward(self.command, self.path, self.headers,
                                                       body)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def inject(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Answer the next ``times`` requests whose path ends with ``endpoint`` with ``fault``."""
        with self._lock:
            self._faults.setdefault(endpoint, []).extend([fault] * times)

    def _take(self, path: str) -> Fault | None:
        with self._lock:
            self.seen[path] += 1
            for endpoint, queue in self._faults.items():
                if path.endswith(endpoint) and queue:
                    self.injected[path] += 1
                    return queue.pop(0)
        return None

    def _forward(self, method: str, path: str, headers: object,
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        try:
            out = {k: v for k, v in headers.items()  # type: ignore[attr-defined]
                   if k.lower() not in ("host", "connection", "content-length")}
            out["Host"] = f"{self._up_host}:{self._up_port}"
            conn.request(method, path, body=body or None, headers=out)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
