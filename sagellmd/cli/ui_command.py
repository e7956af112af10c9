"""`sagellm ui`: a one-time sign-in URL for the dashboard, opened in a browser on a desktop."""

from __future__ import annotations

import os
import sys
import webbrowser
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import typer

from sagellmd.cli.context import cli_context
from sagellmd.cli.render import print_json


def has_desktop(environ: Mapping[str, str], platform: str) -> bool:
    """A browser can open here: an X11 or Wayland session, or macOS (always a desktop)."""
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")) or platform == "darwin"


def ui(
    ctx: typer.Context,
    no_open: bool = typer.Option(
        False, "--no-open", help="Only print the URL; do not open a browser."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print {code, url, expires_at, opened} as JSON."
    ),
) -> None:
    """Sign in to the dashboard: prints a one-time URL (valid 2 minutes, single use)."""
    client = cli_context(ctx).client()
    try:
        answer: dict[str, Any] = client.post("/v1/ui/codes") or {}
    finally:
        client.close()
    url = str(answer.get("url", ""))
    opened = False
    if not no_open and has_desktop(os.environ, sys.platform):
        try:
            opened = webbrowser.open(url)
        except webbrowser.Error:
            opened = False
    if as_json:
        print_json({**answer, "opened": opened})
        return
    typer.echo(url)
    port = urlsplit(url).port or 80
    where = "opened in your browser" if opened else "open it in a browser on this machine"
    typer.echo(
        f"single use, valid until {answer.get('expires_at', '?')}; {where}"
        f" (from another machine: `ssh -L {port}:127.0.0.1:{port} THIS-HOST` first)",
        err=True,
    )
