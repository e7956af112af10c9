"""The gateway's answers of its own, in the OpenAI error shape every OpenAI client reads."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(slots=True)
class GatewayError(Exception):
    """A request the gateway answers itself: status, OpenAI error code, words for the user."""

    status: int
    code: str
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    retry_after_s: float | None = None

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )

    def sse_event(self) -> bytes:
        """The error as the last event of a stream that cannot go on."""
        return b"data: " + self.body() + b"\n\ndata: [DONE]\n\n"


def model_not_found(name: object, names: list[str]) -> GatewayError:
    known = ", ".join(names) if names else "none (no engine is declared)"
    return GatewayError(
        404,
        "model_not_found",
        f"The model {name!r} does not exist here. Routable names: {known}",
        param="model",
    )


def bad_body(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param=param)


def unauthorized() -> GatewayError:
    return GatewayError(
        401,
        "invalid_api_key",
        "Missing or wrong API key: send 'Authorization: Bearer <key>' with one of gateway.api_keys",
        type="authentication_error",
    )


def queue_full(model: str, limit: int) -> GatewayError:
    return GatewayError(
        429,
        "queue_full",
        f"Too many requests waiting for {model!r} ({limit}, gateway.queue.max_waiting);"
        " retry later",
        type="rate_limit_error",
        retry_after_s=1.0,
    )


def slo_unreachable(reason: str) -> GatewayError:
    return GatewayError(429, "slo_unreachable", reason, type="rate_limit_error", retry_after_s=1.0)


def queue_timeout(model: str, waited_s: float, why: str) -> GatewayError:
    return GatewayError(
        503,
        "queue_timeout",
        f"No engine for {model!r} took the request within {waited_s:g} s"
        f" (gateway.queue.timeout_s): {why}",
        type="server_error",
        retry_after_s=max(1.0, waited_s / 10),
    )


def engine_unavailable(model: str, detail: str) -> GatewayError:
    return GatewayError(
        502,
        "engine_unavailable",
        f"Every engine tried for {model!r} failed: {detail}",
        type="server_error",
    )


def endpoint_not_served(model: str, path: str, served: list[str]) -> GatewayError:
    return GatewayError(
        404,
        "endpoint_not_served",
        f"The engines of {model!r} do not serve {path}; they serve:"
        f" {', '.join(served) or 'nothing'}",
        param="model",
    )
