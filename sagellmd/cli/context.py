"""The per-invocation options of `sagellm`, handed from the root command to its subcommands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from sagellmd.cli.client import ApiClient, TokenLookup, resolve_url
from sagellmd.config import default_home


@dataclass
class CliContext:
    """Where the daemon and the home are."""

    url: str | None = None

    @property
    def home(self) -> Path:
        return default_home()

    def client(self) -> ApiClient:
        return ApiClient(resolve_url(self.url), TokenLookup(self.home))


def cli_context(ctx: typer.Context) -> CliContext:
    """The CliContext the root callback stored (a default one outside the full app)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliContext):
        root.obj = CliContext()
    return root.obj
