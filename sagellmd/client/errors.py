"""The one exception the Python client raises, built from the daemon's or the gateway's answer."""

from __future__ import annotations

from typing import Any

import httpx

# `code` of the errors raised before any answer came back: nothing listens at the URL.
DAEMON_UNREACHABLE = "daemon_unreachable"
GATEWAY_UNREACHABLE = "gateway_unreachable"
UNREACHABLE_CODES = frozenset({DAEMON_UNREACHABLE, GATEWAY_UNREACHABLE})
# `code` of a call the client refused before sending it: an argument to fix.
INVALID_INPUT = "invalid_input"


class ClientError(Exception):
    """A call that failed: the server's own message, its HTTP status and error code.

    `status` is None when no answer came (unreachable, timed out, a broken stream) or the
    client itself refused the call (no model to pick, a rollout that failed).
    """

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def unreachable(self) -> bool:
        """Whether the daemon or the gateway could not be reached at all."""
        return self.code in UNREACHABLE_CODES

    def __repr__(self) -> str:
        return f"ClientError({self.message!r}, status={self.status!r}, code={self.code!r})"


def bad_input(message: str) -> ClientError:
    """An argument the caller must fix; nothing was sent."""
    return ClientError(message, None, INVALID_INPUT)


def error_fields(body: Any) -> tuple[str | None, str | None]:
    """(message, code) of `{"error": {...}}`: the daemon's and OpenAI's shape alike."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        return (
            str(message) if message else None,
            str(code) if code is not None and code != "" else None,
        )
    if isinstance(error, str) and error:
        return error, None
    return None, None


def from_response(response: httpx.Response, where: str) -> ClientError:
    """The ClientError of a 4xx/5xx answer; `where` says who answered (`the gateway at ...`)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message, code = error_fields(body)
    if message is None:
        message = response.text.strip()[:500] or response.reason_phrase
    return ClientError(
        f"{where} answered HTTP {response.status_code}: {message}", response.status_code, code
    )
