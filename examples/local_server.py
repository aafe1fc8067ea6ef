"""A tiny HTTP server on 127.0.0.1 for the examples: nothing here reaches the internet.

``GET /delay/<ms>/<n>`` waits <ms> milliseconds, then answers ``<html><title>page n</title></html>``.
Stdlib only (``http.server``), run in a background thread by ``serve()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "delay":
            self.send_error(404)
            return
        time.sleep(int(parts[1]) / 1000)
        body = f"<html><title>page {parts[2]}</title></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


@contextmanager
def serve() -> Iterator[str]:
    """Run the server while the block runs; yields its base URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="example-http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
