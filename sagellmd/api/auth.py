"""Bearer-token auth: mutations always need the token; reads too off loopback."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from pathlib import Path

from starlette.requests import Request

from sagellmd.errors import UnauthorizedError

log = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _write_token(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under another name and renamed, so no reader ever sees a half-written file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(temporary, path)


def ensure_token(path: Path) -> str:
    """Read the token, creating it (mode 0600) at first start."""
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    _write_token(path, token)
    return token


class TokenFile:
    """The daemon's token, kept in step with its file while the daemon runs.

    A deleted file is written again with the token the daemon holds, so the CLI finds it
    without a daemon restart; a new token written into the file replaces the old one
    (rotation without a restart).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token = ensure_token(path)
        self._seen = self._identity()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def current(self) -> str:
        """The token in force now; checks the file (one stat) and repairs or re-reads it."""
        identity = self._identity()
        if identity is not None and identity == self._seen:
            return self._token
        if identity is None:
            try:
                _write_token(self.path, self._token)
                log.warning("token file=%s was missing; wrote it again", self.path)
            except OSError as exc:
                log.warning("token file=%s could not be written again: %s", self.path, exc)
            self._seen = self._identity()
            return self._token
        try:
            text = self.path.read_text().strip()
        except OSError as exc:
            log.warning("token file=%s unreadable (%s); keeping the token", self.path, exc)
            text = ""
        # An empty file may be one being rewritten (`echo new > token` truncates first):
        # keep the token until the file holds one.
        if text and text != self._token:
            log.warning("token file=%s holds a new token; using it from now on", self.path)
            self._token = text
        self._seen = identity
        return self._token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def presents_token(request: Request, token: TokenFile) -> bool:
    """The request carries the right bearer token (reads on loopback need not)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return (
        scheme.lower() == "bearer"
        and bool(given)
        and hmac.compare_digest(given.strip().encode(), token.current().encode())
    )


def require_token(
    request: Request, token: TokenFile, bound_host: str, always: bool = False
) -> None:
    """Raise UnauthorizedError unless this request may go through (`always`: a read that
    needs the token on loopback too)."""
    if not always and request.method not in MUTATING_METHODS and is_loopback(bound_host):
        return
    expected = token.current()
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    where = {"token_path": str(token.path)}
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError(
            "this call needs `Authorization: Bearer <token>`;"
            f" the daemon's token is in {token.path}",
            where,
        )
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise UnauthorizedError(f"wrong token; the daemon's token is in {token.path}", where)
