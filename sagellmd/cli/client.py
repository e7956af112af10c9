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


class TokenLookup:
    """Where the CLI finds the daemon's token: SAGELLM_TOKEN, else `<home>/token`."""

    def __init__(self, home: Path | None = None) -> None:
        self.path = (home or default_home()) / "token"
        self.origin = ""  # how the last `find` went, in words for an error message

    def find(self) -> str | None:
        """The token, or None; `origin` then says where it came from or why there is none."""
        if os.environ.get("SAGELLM_TOKEN", "").strip():
            self.origin = "the CLI sent the token from SAGELLM_TOKEN"
            return os.environ["SAGELLM_TOKEN"].strip()
        try:
            token = self.path.read_text().strip()
            problem = "is empty"
        except FileNotFoundError:
            token, problem = "", "does not exist"
        except OSError as exc:
            # A system daemon's home is usually not readable by the user.
            token, problem = "", f"cannot be read ({exc.strerror or type(exc).__name__})"
        if not token:
            self.origin = (
                f"the CLI found no token: SAGELLM_TOKEN is not set and {self.path} {problem}"
            )
            return None
        self.origin = f"the CLI sent the token from {self.path}"
        return token


def _is_api_error(response: httpx.Response) -> bool:
    """Whether the answer has the daemon's error shape `{"error": {...}}`."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def _looks_like_sagellmd(answer: Any) -> bool:
    return (
        isinstance(answer, dict)
        and answer.get("ok") is True
        and isinstance(answer.get("pid"), int)
        and "version" in answer
    )


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
        return UnauthorizedError(message, details)
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
        token: str | TokenLookup | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url
        self._lookup = token if isinstance(token, TokenLookup) else None
        self._token = self._lookup.find() if self._lookup else token
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
        response = self._send(method, path, params=params, body=body, timeout=timeout)
        if response.status_code == 401 and self._token is None and self._lookup is not None:
            # The daemon writes a deleted token file again when it answers 401 (see
            # docs/configuration.md); a 401 changed nothing, so one retry is safe.
            self._token = self._lookup.find()
            if self._token is not None:
                response = self._send(method, path, params=params, body=body, timeout=timeout)
        if response.status_code >= 400:
            if not _is_api_error(response) and not self._is_sagellmd():
                raise self._not_sagellmd(f"{method} {path} answered HTTP {response.status_code}")
            error = error_from_response(response)
            if isinstance(error, UnauthorizedError) and self._lookup is not None:
                error = UnauthorizedError(
                    f"{error.message}; {self._lookup.origin}. Set SAGELLM_TOKEN to the daemon's"
                    " token, or SAGELLM_HOME to the daemon's home",
                    error.details,
                )
            raise error
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise self._not_sagellmd(f"{method} {path} did not answer with JSON") from None

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None,
        body: Any,
        timeout: float | None,
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        # Reads carry the token too: a daemon bound off loopback asks for it on every call.
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            return self._http.request(
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

    def _is_sagellmd(self) -> bool:
        """Whether /healthz answers like sagellmd's (asked only after an odd answer)."""
        try:
            response = self._http.get("/healthz", timeout=5.0)
            return response.status_code == 200 and _looks_like_sagellmd(response.json())
        except (httpx.HTTPError, ValueError):
            return False

    def _not_sagellmd(self, what: str) -> DaemonUnreachableError:
        return DaemonUnreachableError(
            f"{self.base_url} is not a sagellm daemon ({what}, and its /healthz does not answer"
            f" like sagellmd's); point --url or SAGELLM_URL at sagellmd (by default {DEFAULT_URL})"
        )

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
