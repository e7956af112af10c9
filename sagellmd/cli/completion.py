"""Shell completion of engine ids and preset names, asked of the daemon.

Completion runs on every Tab press, so each lookup is short (a one-second timeout) and
quiet: an unreachable daemon, a refused token or any other failure offers nothing
rather than printing into the user's command line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import typer

from sagellmd.cli.client import ApiClient, TokenLookup, resolve_url
from sagellmd.config import default_home

log = logging.getLogger(__name__)

COMPLETION_TIMEOUT_S = 1.0


def _ask(ctx: typer.Context, path: str) -> dict[str, Any]:
    """One GET to the daemon the command line points at; {} on any failure."""
    try:
        # Completion parses without running callbacks, so --url is read from the params.
        url = ctx.find_root().params.get("url")
        client = ApiClient(resolve_url(url), TokenLookup(default_home()), COMPLETION_TIMEOUT_S)
        try:
            answer = client.get(path)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - a Tab press must never print a traceback
        log.debug("completion: %s failed: %s", path, exc)
        return {}
    return answer if isinstance(answer, dict) else {}


def _matching(names: Iterable[Any], incomplete: str) -> list[str]:
    return sorted({str(n) for n in names if isinstance(n, str) and n.startswith(incomplete)})


def _engines(ctx: typer.Context) -> list[dict[str, Any]]:
    engines = _ask(ctx, "/v1/engines").get("engines")
    return [e for e in engines if isinstance(e, dict)] if isinstance(engines, list) else []


def complete_engine_id(ctx: typer.Context, incomplete: str) -> list[str]:
    """Every engine the daemon knows."""
    return _matching((e.get("id") for e in _engines(ctx)), incomplete)


def complete_adhoc_engine_id(ctx: typer.Context, incomplete: str) -> list[str]:
    """Engines that belong to no preset (`engine stop` refuses the others)."""
    return _matching((e.get("id") for e in _engines(ctx) if not e.get("preset")), incomplete)


def _daemon_presets(ctx: typer.Context) -> list[dict[str, Any]]:
    presets = _ask(ctx, "/v1/presets").get("presets")
    return [p for p in presets if isinstance(p, dict)] if isinstance(presets, list) else []


def complete_preset_name(ctx: typer.Context, incomplete: str) -> list[str]:
    """The local catalogue (no daemon needed) and whatever the daemon knows besides."""
    from sagellmd.presets import catalogue

    try:
        local: list[str] = list(catalogue(default_home()))
    except Exception as exc:  # noqa: BLE001 - see _ask
        log.debug("completion: catalogue failed: %s", exc)
        local = []
    return _matching([*local, *(p.get("name") for p in _daemon_presets(ctx))], incomplete)


def complete_active_preset(ctx: typer.Context, incomplete: str) -> list[str]:
    """Presets that are set on the daemon (what `preset unset` can remove)."""
    names = (p.get("name") for p in _daemon_presets(ctx) if p.get("active"))
    return _matching(names, incomplete)
