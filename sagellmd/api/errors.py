"""The one place SagellmError becomes an HTTP error response."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.errors import SagellmError


class ErrorResponse(JSONResponse):
    """ASCII-escaped, so a message quoting bad input can always be sent."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), default=str).encode("ascii")


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    return ErrorResponse(
        {"error": {"code": code, "message": message, "details": details or {}}}, status_code=status
    )


async def sagellm_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SagellmError)
    return error_response(exc.http_status, exc.code, exc.message, exc.details)
