"""`sagellm history` and `sagellm rollback`: the generations of the desired state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from sagellmd.cli.changes import (
    DRY_RUN_OPTION,
    TIMEOUT_OPTION,
    WAIT_OPTION,
    ChangeOptions,
    run_change,
)
from sagellmd.cli.context import cli_context
from sagellmd.cli.render import cell, console, print_json
from sagellmd.engine_change import GENERATION_FAILED, GENERATION_HEALTHY, ROLLING_OUT, SUPERSEDED

GENERATION_STYLES = {
    GENERATION_HEALTHY: "green",
    GENERATION_FAILED: "red",
    ROLLING_OUT: "yellow",
    SUPERSEDED: "dim",
}


def generation_state(record: Mapping[str, Any], current: bool) -> str:
    """healthy / failed / superseded / rolling out, as the daemon's `state` says.

    A daemon older than per-engine verdicts gives no `state`: there, a generation without
    a verdict is rolling out if it is the newest, otherwise superseded.
    """
    state = record.get("state")
    if isinstance(state, str) and state in GENERATION_STYLES:
        return state
    healthy = record.get("healthy")
    if healthy is True:
        return GENERATION_HEALTHY
    if healthy is False:
        return GENERATION_FAILED
    return ROLLING_OUT if current else SUPERSEDED


def local_time(ts: Any) -> str:
    """The API's UTC ISO time as local `YYYY-MM-DD HH:MM:SS` (as given if it does not parse)."""
    try:
        moment = datetime.fromisoformat(str(ts))
    except ValueError:
        return str(ts or "-")
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def history_table(records: Iterable[Mapping[str, Any]], current: int) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("GEN", "TIME", "CAUSE", "STATE"):
        table.add_column(column, no_wrap=column != "CAUSE", overflow="fold")
    table.add_column("VERDICT", overflow="fold")
    table.add_column("ENGINES", no_wrap=True, justify="right")
    for record in records:
        is_current = record.get("id") == current
        state = generation_state(record, is_current)
        table.add_row(
            # `*` marks the generation the daemon is running now.
            Text(f"{'*' if is_current else ' '} {record.get('id')}"),
            cell(local_time(record.get("ts"))),
            cell(record.get("cause")),
            Text(state, style=GENERATION_STYLES.get(state, "")),
            cell(record.get("verdict")),
            cell(len(record.get("engines") or [])),
        )
    return table


def history(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON."),
    limit: int = typer.Option(
        20, "--limit", min=1, max=1000, metavar="N", help="How many generations, newest first."
    ),
) -> None:
    """The generations of the desired state: cause, verdict, engines; * marks the current."""
    client = cli_context(ctx).client()
    try:
        answer: dict[str, Any] = client.get("/v1/generations", {"limit": limit}) or {}
    finally:
        client.close()
    if as_json:
        print_json(answer)
        return
    records = answer.get("generations") or []
    if not records:
        typer.echo("no generations yet (nothing was ever declared)")
        return
    # Newest first, and every change makes a generation: the first is the current one.
    console().print(history_table(records, int(records[0].get("id") or 0)))


def rollback(
    ctx: typer.Context,
    to: int | None = typer.Argument(
        None,
        metavar="N",
        min=0,
        help="Generation to restore (0: nothing); default: the last healthy one before now.",
        show_default=False,
    ),
    dry_run: bool = DRY_RUN_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Make a new generation equal to generation N (default: the previous healthy one)."""
    client = cli_context(ctx).client()
    target = "the last healthy generation" if to is None else f"generation {to}"
    try:
        run_change(
            client,
            lambda params: client.post(
                "/v1/rollback", body=None if to is None else {"to": to}, params=params
            ),
            # The daemon never rolls a rollback back on its own (`auto_rollback` off).
            ChangeOptions(dry_run=dry_run),
            wait=wait,
            timeout=timeout,
            header=lambda answer: [f"restoring generation {answer.get('to', to)}"],
            failure=f"the rollback to {target} did not become healthy",
            kept_note="a rollback is not rolled back",
        )
    finally:
        client.close()
