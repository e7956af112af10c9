"""`sagellm gateway`: the gateway process's state, URL, pid and request totals."""

from __future__ import annotations

from typing import Any

import typer

from sagellmd.cli.context import cli_context
from sagellmd.cli.render import gateway_line, print_json


def gateway(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the raw JSON.")
) -> None:
    """The OpenAI-compatible gateway: state, URL, pid, restarts and request totals."""
    client = cli_context(ctx).client()
    try:
        answer: dict[str, Any] = client.get("/v1/gateway") or {}
    finally:
        client.close()
    if as_json:
        print_json(answer)
        return
    typer.echo(gateway_line(answer))
    if not answer.get("enabled"):
        return
    typer.echo(f"restarts: {answer.get('restarts', 0)}")
    if answer.get("message"):
        typer.echo(f"message: {answer['message']}")
    totals = answer.get("totals")
    if isinstance(totals, dict) and totals:
        typer.echo(
            "totals: "
            + ", ".join(f"{key} {value}" for key, value in sorted(totals.items()))
            + f" (reported {answer.get('reported_at')})"
        )
    else:
        typer.echo("totals: no report from the gateway yet")
