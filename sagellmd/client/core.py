"""`Client`: inference through the gateway, management through the daemon's API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sagellmd.client.errors import DAEMON_UNREACHABLE, GATEWAY_UNREACHABLE, ClientError
from sagellmd.client.http import Endpoint
from sagellmd.client.inference import Inference, Messages
from sagellmd.client.locate import checked_url, daemon_token, daemon_url, gateway_key
from sagellmd.client.management import DEFAULT_WAIT_S, Management

DEFAULT_TIMEOUT_S = 300.0
# How long a wait for the daemon's verdict then waits for the gateway's routes at most.
ROUTE_GRACE_S = 10.0


class Client:
    """A sagellm installation seen from an application (docs/python.md).

    `url`: the daemon (default SAGELLM_URL, else http://127.0.0.1:8765); `token`: its
    management token (default SAGELLM_TOKEN, else `$SAGELLM_HOME/token`); `gateway_url`: the
    gateway (default: the URL the daemon gives in GET /v1/gateway); `api_key`: the gateway's
    key when it has `gateway.api_keys` (default SAGELLM_API_KEY); `timeout`: seconds one call
    may take. Every failure is a ClientError. Use it as a context manager, or call close().
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        gateway_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = daemon_url(url)
        self.timeout = timeout
        bearer, token_origin = daemon_token(token)
        self._daemon = Endpoint(
            self.url,
            name="sagellm daemon",
            unreachable_code=DAEMON_UNREACHABLE,
            start_hint="start it with `sagellmd` (or `systemctl start sagellmd`), or point"
            " SAGELLM_URL (Client(url=...), `sagellm --url`) at where it listens",
            bearer=bearer,
            timeout=timeout,
            auth_hint=f"the client sent {token_origin}; pass Client(token=...), or set"
            " SAGELLM_TOKEN to the daemon's token or SAGELLM_HOME to the daemon's home",
        )
        self._gateway_url = (
            checked_url(gateway_url, "gateway", "Client(gateway_url=...)") if gateway_url else None
        )
        self._api_key = gateway_key(api_key)
        self._gateway: Endpoint | None = None
        self._gateway_lock = threading.Lock()
        self._management = Management(self._daemon)
        self._inference = Inference(self._gateway_endpoint)

    # -- lifetime

    def close(self) -> None:
        self._daemon.close()
        if self._gateway is not None:
            self._gateway.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inference (the gateway)

    @property
    def gateway_url(self) -> str:
        """The gateway's URL: given, or asked of the daemon on first use."""
        return self._gateway_endpoint().base_url

    def models(self) -> list[dict[str, Any]]:
        """The gateway's GET /v1/models entries (id, kind, ready, engines, names)."""
        return self._inference.models()

    def model(self, name: str) -> dict[str, Any]:
        """The entry of the model `name` routes to; ClientError 404 listing the names if none."""
        return self._inference.model(name)

    def generate(
        self, prompts: str | Sequence[str], model: str | None = None, **options: Any
    ) -> list[dict[str, Any]]:
        """Completions, one `{"text", "finish_reason", "tokens_used"}` per prompt, in order.

        `options` go into the request body (max_tokens, temperature, stop, ...).
        """
        return self._inference.generate(prompts, model, options)

    def chat(self, messages: Messages, model: str | None = None, **options: Any) -> dict[str, Any]:
        """One chat answer `{"text", "finish_reason", "tokens_used"}`; a str is a user message."""
        return self._inference.chat(messages, model, options)

    def embed(self, texts: str | Sequence[str], model: str | None = None) -> dict[str, Any]:
        """`{"vectors": [[float, ...], ...], "dim": int, "model_id": str}`, one per text."""
        return self._inference.embed(texts, model)

    def stream_generate(
        self, prompt: str, model: str | None = None, **options: Any
    ) -> Iterator[str]:
        """The completion of one prompt, piece by piece as the engine makes it."""
        return self._inference.stream_generate(prompt, model, options)

    def stream_chat(
        self, messages: Messages, model: str | None = None, **options: Any
    ) -> Iterator[str]:
        """The chat answer, piece by piece as the engine makes it."""
        return self._inference.stream_chat(messages, model, options)

    # -- management (the daemon)

    def status(self) -> dict[str, Any]:
        """GET /v1/status: generation, daemon, GPUs, gateway and every engine."""
        return self._management.status()

    def engines(self) -> list[dict[str, Any]]:
        """Every engine's entry (desired spec and observed state), as in status."""
        return self._management.engines()

    def engine(self, engine_id: str) -> dict[str, Any]:
        """One engine's entry; ClientError with status 404 when there is none."""
        return self._management.engine(engine_id)

    def wait_ready(self, engine_id: str, timeout: float = DEFAULT_WAIT_S) -> dict[str, Any]:
        """Wait until the engine is ready on its desired spec (and the gateway routes to it,
        when there is a gateway); its entry."""
        entry = self._management.wait_ready(engine_id, timeout)
        self._await_routes([engine_id])
        return entry

    def apply_preset(
        self,
        preset: str | Mapping[str, Any],
        wait: bool = True,
        timeout: float = DEFAULT_WAIT_S,
        rollback: bool = True,
    ) -> dict[str, Any]:
        """Set a preset: a name (the daemon's built-in or file preset), a dict or YAML text.

        With `wait`, returns once the daemon judges the new generation healthy, or raises
        ClientError with the rollout's reason (and the rollback the daemon made). The answer
        is the daemon's (`generation`, `preset`, `plan`) plus `verdict` when waited.
        """
        answer = self._management.apply_preset(preset, wait, timeout, rollback)
        if wait:
            name = answer.get("preset")
            self._await_routes([e["id"] for e in self.engines() if e.get("preset") == name])
        return answer

    # -- internals

    def _gateway_endpoint(self) -> Endpoint:
        # Locked: threads sharing a Client must not each open a pool to the gateway.
        with self._gateway_lock:
            if self._gateway is None:
                url = self._gateway_url or self._gateway_from_daemon()
                self._gateway = Endpoint(
                    url,
                    name="sagellm gateway",
                    unreachable_code=GATEWAY_UNREACHABLE,
                    start_hint="the daemon runs it (`gateway.enabled` in config.yaml);"
                    " `sagellm gateway` shows its state",
                    bearer=self._api_key,
                    timeout=self.timeout,
                    auth_hint="pass the gateway's key as Client(api_key=...) or SAGELLM_API_KEY"
                    if self._api_key is None
                    else "the key given (Client(api_key=...) or SAGELLM_API_KEY) is not one of"
                    " the gateway's gateway.api_keys",
                )
            return self._gateway

    def _await_routes(self, engine_ids: list[str]) -> None:
        """Give the gateway a moment to route to engines the daemon just called ready.

        The daemon publishes the change at once and the gateway applies it within
        milliseconds; without this a request made right after a wait could beat it. A gateway
        the daemon has only just started may not listen yet; without a gateway there is
        nothing to wait for (management works without one).
        """
        deadline = time.monotonic() + ROUTE_GRACE_S
        while engine_ids:
            try:
                models = self.models()
            except ClientError as exc:
                if exc.code != GATEWAY_UNREACHABLE or time.monotonic() >= deadline:
                    return
                models = []
            routed = {
                str(engine.get("id"))
                for entry in models
                for engine in entry.get("engines") or []
                if isinstance(engine, dict) and engine.get("state") == "ready"
            }
            if set(engine_ids) <= routed or time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def _gateway_from_daemon(self) -> str:
        answer = self._daemon.call("GET", "/v1/gateway") or {}
        if not answer.get("enabled") or not answer.get("url"):
            raise ClientError(
                f"the sagellm daemon at {self.url} runs no gateway (gateway.enabled is false in"
                " its config.yaml); enable it, or pass Client(gateway_url=...)",
                code="no_gateway",
            )
        return checked_url(str(answer["url"]), "gateway", "the daemon's gateway.host/port")
