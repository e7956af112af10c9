"""The rich screen of `sagellm status --watch`: title, GPUs, the engine table, a footer."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from sagellmd.cli.columns import Column, FittedTable
from sagellmd.cli.render import cell, gpus_line, one_line_text, state_text
from sagellmd.cli.watch.snapshot import Snapshot, WatchRow, clock_text

# The columns in order, and which give way first when the terminal is narrow (see
# sagellmd/cli/columns.py): ENGINE, STATE, PID and PORT are always shown whole; then LAST
# EVENT (the rest of the width, cut with an ellipsis), MODEL, RESTARTS, UPTIME, KIND,
# MEMORY, GPUS.
COLUMNS = (
    Column("ENGINE", 0, keep=True),
    Column("KIND", 5),
    Column("MODEL", 2, cut=True, min_width=10),
    Column("STATE", 0, keep=True),
    Column("PID", 0, keep=True, justify="right"),
    Column("PORT", 0, keep=True, justify="right"),
    Column("GPUS", 7),
    Column("MEMORY", 6, justify="right"),
    Column("RESTARTS", 3, justify="right"),
    Column("UPTIME", 4, justify="right"),
    Column("LAST EVENT", 1, cut=True, min_width=16),
)


def watch_table(rows: Sequence[WatchRow], now: float, dim: bool = False) -> FittedTable:
    cells = [
        [
            cell(row.id),
            cell(row.kind),
            cell(row.model),
            state_text(row.state),
            cell(row.pid),
            cell(row.port),
            cell(row.gpus_text()),
            cell(row.memory_text()),
            cell(row.restarts),
            cell(row.uptime(now)),
            one_line_text(row.last_event),
        ]
        for row in rows
    ]
    return FittedTable(COLUMNS, cells, style="dim" if dim else "")


def watch_screen(
    url: str,
    snapshot: Snapshot | None,
    now: float,
    problem: str | None = None,
    down_since: float | None = None,
) -> RenderableType:
    """The whole Live screen: title with the generation, GPUs, the table and a footer."""
    if snapshot is None:
        title = Text(f"sagellm status --watch   {url}", style="bold")
        parts: list[RenderableType] = [title]
    else:
        title = Text(
            f"generation {snapshot.generation}   daemon pid {snapshot.daemon_pid}   {url}",
            style="bold",
        )
        parts = [title, Text(f"gpus: {gpus_line(snapshot.status.get('gpus'))}")]
        rows = snapshot.rows()
        if rows:
            parts.append(watch_table(rows, now, dim=problem is not None))
        else:
            parts.append(Text("no engines (start some with `sagellm preset set NAME`)"))
    if problem is not None or snapshot is None:
        verb = "connecting" if snapshot is None else "reconnecting"
        since = f" (since {clock_text(down_since)})" if down_since is not None else ""
        parts.append(Text(f"{verb} to {url}...{since}", style="bold yellow"))
        if problem:
            parts.append(Text(problem, style="dim"))
    else:
        parts.append(
            Text(
                f"status of {clock_text(snapshot.read_at)}, after event #{snapshot.cursor};"
                " redrawn on every event; Ctrl-C to exit",
                style="dim",
            )
        )
    return Group(*parts)
