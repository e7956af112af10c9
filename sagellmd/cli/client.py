"""The HTTP client of the sagellmd API: where the daemon is, its token, and its errors."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from sagellmd.config import default_home
from sagellmd.errors import (
    BadInputError,
    ConflictError,
    DaemonUnreachableError,
    NotFoundError,
    PayloadTooLargeError,
    SagellmError,
    SpecError,
    UnauthorizedError,
)

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_TIMEOUT_S = 30.0
# A long poll may legitimately take `wait` seconds; allow the answer some slack on top.
LONG_POLL_SLACK_S = 15.0


def resolve_url(url: str | None) -> str:
    """The daemon's base URL: --url, else SAGELLM_URL, else the default bind address."""
    chosen = (url or os.environ.get("SAGELLM_URL") or DEFAULT_URL).strip().rstrip("/")
    try:
        parsed = httpx.URL(chosen)
    except httpx.InvalidURL as exc:
        raise BadInputError(
            f"daemon URL {chosen!r} is not valid: {exc} (check --url or SAGELLM_URL)"
        ) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadInputError(
            f"daemon URL {chosen!r} must look like http://HOST:PORT (check --url or SAGELLM_URL)"
        )
    return chosen


def segment(name: str) -> str:
    """A user-given name as one URL path segment (so `a/../b` cannot walk the API)."""
    return quote(name, safe="")


def read_token(home: Path | None = None) -> str | None:
    """SAGELLM_TOKEN, else `<home>/token`; None when neither is readable."""
    if os.environ.get("SAGELLM_TOKEN"):
        return os.environ["SAGELLM_TOKEN"].strip()
    path = (home or default_home()) / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        # A system daemon's home is usually not readable by the user; the daemon then
        # answers 401 and the error explains how to pass the token.
        return None


def error_from_response(response: httpx.Response) -> SagellmError:
    """Turn an API error answer `{"error": {code, message, details}}` into a SagellmError."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or code or "no message")
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    else:
        code = ""
        message = response.text.strip()[:500] or response.reason_phrase
        details = {}
    status = response.status_code
    if status == 400:
        errors = details.get("errors")
        if code == "invalid_spec" and isinstance(errors, list) and errors:
            return SpecError([str(item) for item in errors])
        return BadInputError(message, details)
    if status == 413:
        return PayloadTooLargeError(message, details)
    if status == 401:
        return UnauthorizedError(
            f"{message} (the CLI sends the token from SAGELLM_TOKEN or <SAGELLM_HOME>/token;"
            " set SAGELLM_TOKEN or SAGELLM_HOME to the daemon's home)",
            details,
        )
    if status == 404:
        return NotFoundError(message, details)
    if status == 409:
        return ConflictError(message, details)
    if 400 <= status < 500:
        return BadInputError(f"{message} (HTTP {status})", details)
    return SagellmError(f"the daemon failed: {message} (HTTP {status})", details)


class ApiClient:
    """Calls the daemon's JSON API; every failure becomes a SagellmError."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url
        self._token = token
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one call and return its decoded JSON answer (None for an empty one)."""
        headers = {"Accept": "application/json"}
        # Reads carry the token too: a daemon bound off loopback asks for it on every call.
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                path,
                params=clean_params,
                json=body,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise DaemonUnreachableError(
                f"the sagellm daemon at {self.base_url} is not reachable ({exc}). Start it with"
                " `sagellmd` (or `systemctl start sagellmd`), or point SAGELLM_URL / --url at it"
            ) from exc
        except httpx.TimeoutException as exc:
            raise DaemonUnreachableError(
                f"the sagellm daemon at {self.base_url} did not answer {method} {path} in time;"
                " a change may or may not have been made: check `sagellm status`"
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise BadInputError(f"daemon URL {self.base_url!r} is not usable: {exc}") from exc
        except httpx.TransportError as exc:
            raise DaemonUnreachableError(
                f"the connection to the sagellm daemon at {self.base_url} failed during"
                f" {method} {path}: {exc}; check `sagellm status`"
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise SagellmError(
                f"{self.base_url}{path} did not answer with JSON; is SAGELLM_URL pointing at"
                " sagellmd?"
            ) from exc

    def get(
        self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        return self.request("GET", path, params=params, timeout=timeout)

    def put(self, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("PUT", path, params=params, body=body)

    def post(self, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, params=params, body=body)

    def delete(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def events(
        self, after: int | None = None, wait: float | None = None, engine: str | None = None
    ) -> dict[str, Any]:
        """One `GET /v1/events` call, long-polling up to `wait` seconds."""
        seconds = max(1, math.ceil(wait)) if wait else None
        timeout = (seconds + LONG_POLL_SLACK_S) if seconds else None
        answer = self.get(
            "/v1/events", {"after": after, "wait": seconds, "engine": engine}, timeout=timeout
        )
        return answer if isinstance(answer, dict) else {"events": [], "last_id": after}
