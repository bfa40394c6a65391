"""A moto S3 server on loopback that records every request it answers (method, path, query), so
tests can count what a push or a fetch costs in S3 requests, whichever process made them."""

from __future__ import annotations

import threading

from moto.server import DomainDispatcherApplication, ThreadedMotoServer, create_backend_app
from werkzeug.serving import make_server


class CountingMotoServer(ThreadedMotoServer):
    """``ThreadedMotoServer`` whose WSGI app appends ``(method, path, query, range)`` to ``requests``."""

    def __init__(self, port: int) -> None:
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        self.requests: list[tuple[str, str, str, str]] = []
        self._lock = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ, start_response):
            with self._lock:
                self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                      environ.get("QUERY_STRING", ""), environ.get("HTTP_RANGE", "")))
            return app(environ, start_response)

        self._server = make_server(self._ip_address, self._port, counting, True)
        self._server_ready_event.set()
        self._server.serve_forever()

    def take(self) -> list[tuple[str, str, str, str]]:
        """The requests recorded since the last call."""
        with self._lock:
            out, self.requests = self.requests, []
        return out
