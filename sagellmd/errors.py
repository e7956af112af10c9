"""The exception hierarchy every part of sagellm raises to the user."""

from __future__ import annotations

from typing import Any


class SagellmError(Exception):
    """An error with a message a user can act on; API and CLI map it in one place each."""

    code = "error"
    http_status = 500
    exit_code = 1

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BadInputError(SagellmError):
    """The request or file is malformed; nothing was changed."""

    code = "invalid_request"
    http_status = 400
    exit_code = 2


class SpecError(BadInputError):
    """An engine spec or preset document does not validate."""

    code = "invalid_spec"

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors), {"errors": errors})
        self.errors = errors


class NotFoundError(SagellmError):
    code = "not_found"
    http_status = 404
    exit_code = 2


class ConflictError(SagellmError):
    code = "conflict"
    http_status = 409
    exit_code = 2


class UnauthorizedError(SagellmError):
    code = "unauthorized"
    http_status = 401
    exit_code = 2


class PayloadTooLargeError(BadInputError):
    code = "payload_too_large"
    http_status = 413


class ConfigError(BadInputError):
    """config.yaml, an environment variable or a flag has a bad value."""

    code = "invalid_config"


class DaemonUnreachableError(SagellmError):
    """The CLI could not reach sagellmd."""

    code = "unreachable"
    exit_code = 3


class AlreadyRunningError(SagellmError):
    """Another sagellmd holds the lock on this home."""

    code = "already_running"
    exit_code = 2


class DatabaseError(SagellmError):
    """The database file cannot be used as it is (corrupt, foreign, newer); it is left untouched."""

    code = "database"
    exit_code = 2
