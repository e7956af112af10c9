"""One HTTP endpoint (the daemon's API or the gateway): JSON calls and server-sent events,
every failure turned into a ClientError that says who failed and what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from sagellmd.client.errors import ClientError, error_fields, from_response

CONNECT_TIMEOUT_S = 5.0


class Endpoint:
    """JSON over HTTP to one base URL, with fixed headers (the token or the API key)."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        unreachable_code: str,
        start_hint: str,
        bearer: str | None,
        timeout: float,
        auth_hint: str = "",
    ) -> None:
        self.base_url = base_url
        # Appended to a 401's message: where the credentials came from and how to fix them.
        self._auth_hint = auth_hint
        self.where = f"the {name} at {base_url}"
        self._unreachable_code = unreachable_code
        self._start_hint = start_hint
        headers = {"Accept": "application/json"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
        )

    def close(self) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one call; its decoded JSON answer (None for an empty one)."""
        clean = {key: value for key, value in (params or {}).items() if value is not None}
        with self._transport(method, path):
            response = self._http.request(
                method,
                path,
                json=body,
                params=clean,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        if response.status_code >= 400:
            raise self._refused(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.where} did not answer {method} {path} with JSON"
                f" ({response.text.strip()[:200]!r}); is the URL right?",
                response.status_code,
            ) from None

    def events(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST `body` and yield each `data:` event of the server-sent stream until [DONE]."""
        with self._transport("POST", path):
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refused(response)
                for line in response.iter_lines():
                    # Blank lines end events; `:` lines are comments (keep-alives while an
                    # engine loads); only data lines carry anything.
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    yield self._event(data)

    def _refused(self, response: httpx.Response) -> ClientError:
        error = from_response(response, self.where)
        if response.status_code == 401 and self._auth_hint:
            error = ClientError(f"{error.message}; {self._auth_hint}", error.status, error.code)
        return error

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise ClientError(
                f"{self.where} sent a stream event that is not JSON: {data[:200]!r}"
            ) from None
        message, code = error_fields(event)
        if message is not None:
            # An engine that failed mid-stream: the gateway ends the stream with an error event.
            raise ClientError(f"{self.where} ended the stream: {message}", None, code)
        if not isinstance(event, dict):
            raise ClientError(f"{self.where} sent a stream event that is not an object: {data!r}")
        return event

    @contextmanager
    def _transport(self, method: str, path: str) -> Iterator[None]:
        """Turn httpx's transport failures inside the block into ClientErrors."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ClientError(
                f"{self.where} is not reachable ({exc}); {self._start_hint}",
                None,
                self._unreachable_code,
            ) from exc
        except httpx.TimeoutException as exc:
            raise ClientError(f"{self.where} did not answer {method} {path} in time") from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ClientError(f"{self.where} is not a usable URL: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ClientError(
                f"the connection to {self.where} failed during {method} {path}: {exc}"
            ) from exc
