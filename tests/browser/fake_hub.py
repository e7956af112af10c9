"""A stand-in Hugging Face hub on loopback: one repo whose file is served slowly.

It answers what `huggingface_hub.snapshot_download` asks (the revision, the file tree, a
HEAD and a GET per file), so a daemon with `HF_ENDPOINT` pointed here downloads for real,
through its own code, without a network, and slowly enough to report progress.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "c0ffee" + "0" * 34


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, bytes]
    # How long the GET of each file takes, spread over its chunks (0 when not named).
    seconds: dict[str, float]

    def tree(self) -> list[dict[str, Any]]:
        return [
            {"type": "file", "path": name, "size": len(body), "oid": self.oid(name)}
            for name, body in self.files.items()
        ]

    def oid(self, name: str) -> str:
        return hashlib.sha1(self.files[name]).hexdigest()


def _handler(repo: FakeRepo) -> type[BaseHTTPRequestHandler]:
    api = f"/api/models/{repo.repo_id}/"
    resolve = f"/{repo.repo_id}/resolve/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def _json(self, value: Any) -> None:
            body = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self) -> str | None:
            path = self.path.split("?", 1)[0]
            if not path.startswith(resolve):
                return None
            _revision, _, name = path[len(resolve) :].partition("/")
            return name if name in repo.files else None

        def _file_headers(self, name: str) -> None:
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{repo.oid(name)}"')
            self.send_header("Content-Length", str(len(repo.files[name])))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            name = self._file()
            if name is None:
                self.send_response(200 if self.path in ("/", "") else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._file_headers(name)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path.startswith(api + "revision/"):
                siblings = [{"rfilename": name} for name in repo.files]
                self._json({"id": repo.repo_id, "sha": COMMIT, "siblings": siblings})
                return
            if path.startswith(api + "tree/"):
                self._json(repo.tree())
                return
            name = self._file()
            if name is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._file_headers(name)
            body = repo.files[name]
            chunks = 20
            size = -(-len(body) // chunks)
            for start in range(0, len(body), size):
                self.wfile.write(body[start : start + size])
                self.wfile.flush()
                time.sleep(repo.seconds.get(name, 0.0) / chunks)

    return Handler


@contextmanager
def fake_hub(repo: FakeRepo) -> Iterator[str]:
    """Serves `repo` until the block ends; yields the endpoint (for HF_ENDPOINT)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(repo))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
