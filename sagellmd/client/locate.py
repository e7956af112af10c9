"""Where the daemon is and its token, found the way the `sagellm` CLI finds them."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from sagellmd.client.errors import bad_input

DEFAULT_DAEMON_URL = "http://127.0.0.1:8765"


def daemon_home() -> Path:
    """SAGELLM_HOME, else systemd's STATE_DIRECTORY, else ~/.local/share/sagellm.

    The same order as sagellmd.config.default_home, repeated here so the client does not
    import the daemon's settings (and with them its GPU and runtime modules).
    """
    if os.environ.get("SAGELLM_HOME"):
        return Path(os.environ["SAGELLM_HOME"]).expanduser()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path.home() / ".local" / "share" / "sagellm"


def checked_url(url: str, what: str, setting: str) -> str:
    """`url` without its trailing slash, or a ClientError naming `setting` to fix."""
    chosen = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(chosen)
    except httpx.InvalidURL as exc:
        raise bad_input(f"{what} URL {chosen!r} is not valid: {exc} (check {setting})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise bad_input(f"{what} URL {chosen!r} must look like http://HOST:PORT (check {setting})")
    return chosen


def daemon_url(url: str | None) -> str:
    """The `url` argument, else SAGELLM_URL, else the daemon's default bind address."""
    chosen = url or os.environ.get("SAGELLM_URL") or DEFAULT_DAEMON_URL
    return checked_url(chosen, "daemon", "Client(url=...) or SAGELLM_URL")


def daemon_token(token: str | None) -> tuple[str | None, str]:
    """The management token and, in words, where it came from (for a 401's message)."""
    if token:
        return token, "the token given as Client(token=...)"
    if os.environ.get("SAGELLM_TOKEN", "").strip():
        return os.environ["SAGELLM_TOKEN"].strip(), "the token from SAGELLM_TOKEN"
    path = daemon_home() / "token"
    try:
        found = path.read_text().strip()
    except OSError as exc:
        # A system daemon's home is usually not readable by the user.
        reason = exc.strerror or type(exc).__name__
        return None, f"no token (SAGELLM_TOKEN is not set and {path} cannot be read: {reason})"
    if not found:
        return None, f"no token (SAGELLM_TOKEN is not set and {path} is empty)"
    return found, f"the token from {path}"


def gateway_key(api_key: str | None) -> str | None:
    """The gateway's API key: the argument, else SAGELLM_API_KEY (None: send none)."""
    return api_key or os.environ.get("SAGELLM_API_KEY", "").strip() or None
