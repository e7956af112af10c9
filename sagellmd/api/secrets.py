"""Engine `env` values (tokens, keys) go only to requests that carry the bearer token (or
the dashboard's session, which only the token could start)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from sagellmd.api.auth import presents_token
from sagellmd.api.ui_auth import request_session

# Keys stay visible (what is set is not secret, and it tells a user why an engine differs).
HIDDEN = "<hidden: send the token to read env values>"


def shows_secrets(request: Request) -> bool:
    """Unauthenticated reads are allowed on loopback, but any local user can make them."""
    if presents_token(request, request.app.state.ctx.token):
        return True
    return "authorization" not in request.headers and request_session(request) is not None


def hidden_env(env: Mapping[str, Any]) -> dict[str, Any]:
    return {key: HIDDEN for key in env}


def spec_for_reader(spec: Mapping[str, Any] | None, secrets: bool) -> dict[str, Any] | None:
    """A spec document as this reader may see it: env values hidden unless `secrets`."""
    if spec is None:
        return None
    if secrets or not isinstance(spec.get("env"), Mapping):
        return dict(spec)
    return {**spec, "env": hidden_env(spec["env"])}


def preset_for_reader(document: Mapping[str, Any], secrets: bool) -> dict[str, Any]:
    engines = document.get("engines")
    if secrets or not isinstance(engines, list):
        return dict(document)
    return {
        **document,
        "engines": [
            spec_for_reader(engine, False) if isinstance(engine, Mapping) else engine
            for engine in engines
        ],
    }


def generation_for_reader(record: Mapping[str, Any], secrets: bool) -> dict[str, Any]:
    """A generation's `engines` carry each engine's spec (its env included)."""
    engines = record.get("engines")
    if secrets or not isinstance(engines, list):
        return dict(record)
    return {
        **record,
        "engines": [
            {**engine, "spec": spec_for_reader(engine.get("spec"), False)}
            if isinstance(engine, Mapping)
            else engine
            for engine in engines
        ],
    }
