"""Bearer-token auth: mutations always need the token; reads too off loopback."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from starlette.requests import Request

from sagellmd.errors import UnauthorizedError

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def ensure_token(path: Path) -> str:
    """Read the token, creating it (mode 0600) at first start."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def presents_token(request: Request, token: str) -> bool:
    """The request carries the right bearer token (reads on loopback need not)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return (
        scheme.lower() == "bearer"
        and bool(given)
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


def require_token(request: Request, token: str, bound_host: str) -> None:
    """Raise UnauthorizedError unless this request may go through."""
    if request.method not in MUTATING_METHODS and is_loopback(bound_host):
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError(
            "this call needs `Authorization: Bearer <token>`; the token is in"
            " $SAGELLM_HOME/token (the sagellm CLI reads it from there or from SAGELLM_TOKEN)"
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise UnauthorizedError("wrong token: use the one in $SAGELLM_HOME/token")
