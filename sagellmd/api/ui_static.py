"""The dashboard's static files: lookup confined to sagellmd/ui/, content types, ETags and
gzip, kept in memory per file version (the folder is small and read-only at run time)."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Explicit, so a host's /etc/mime.types cannot serve a module as text/plain (browsers refuse
# to run a module script without a JavaScript type).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
# Below this size gzip saves less than its header costs.
MIN_GZIP_BYTES = 512


def is_html_path(path: str) -> bool:
    """The paths a browser navigates to (they get the sign-in page without a session)."""
    return path in ("", "/") or path.endswith("/") or path.endswith(".html")


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    return (
        CONTENT_TYPES.get(suffix)
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream"
    )


def resolve(root: Path, relative: str) -> Path | None:
    """The file `relative` names under `root`, or None: missing, a folder without an
    index.html, or any path that would leave root (.., absolute, NUL, a symlink out)."""
    if "\x00" in relative or "\\" in relative:
        return None
    parts = PurePosixPath(relative).parts
    if any(part in ("..", "") or part.startswith("/") for part in parts):
        return None
    candidate = root.joinpath(*parts) if parts else root
    if relative == "" or relative.endswith("/"):
        candidate = candidate / "index.html"
    try:
        real = candidate.resolve(strict=True)
        base = root.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(base) or not real.is_file():
        return None
    return real


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str


@dataclass
class StaticFiles:
    root: Path
    _cache: dict[Path, tuple[tuple[int, int], StaticFile]] = field(default_factory=dict)

    def get(self, relative: str) -> StaticFile | None:
        path = resolve(self.root, relative)
        if path is None:
            return None
        try:
            stat = path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
            cached = self._cache.get(path)
            if cached is not None and cached[0] == version:
                return cached[1]
            body = path.read_bytes()
        except OSError:
            return None
        found = StaticFile(
            body,
            gzip.compress(body, mtime=0) if len(body) >= MIN_GZIP_BYTES else None,
            '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            content_type(path),
        )
        self._cache[path] = (version, found)
        return found


def accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            quality = params.strip().lower().removeprefix("q=")
            return not (params and quality.replace(".", "").strip("0") == "")
    return False
