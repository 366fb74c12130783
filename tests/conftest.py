"""Shared test set-up: torch on one thread, and a file server on the loopback for download tests.

Training tests on tiny models are dominated by thread start-up and contention when torch uses
every core of a small, shared machine (one MLP test took 93 s instead of 1 s); one thread makes
them fast and reproducible. Tests that need more threads set them themselves.
"""

import http.server
import sys
from pathlib import Path
import threading

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/_helpers.py


@pytest.fixture(autouse=True, scope="session")
def _torch_on_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Server:
    """http.server on 127.0.0.1 (port 0) in a thread, serving bytes with a chosen fault."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(self.path)
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if name in server.truncate:
                    self.wfile.write(data[: len(data) // 2])  # then the connection closes
                    self.close_connection = True
                else:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def local_http_server():
    """The ``Server`` class: ``with local_http_server({name: bytes}) as s:`` serves them under ``s.url``."""
    return Server
