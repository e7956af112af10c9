"""The one place SagellmError becomes an HTTP error response."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from sagellmd.errors import SagellmError


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or {}}}, status_code=status
    )


async def sagellm_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SagellmError)
    return error_response(exc.http_status, exc.code, exc.message, exc.details)
