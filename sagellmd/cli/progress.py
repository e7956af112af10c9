"""The progress view of a wait: a rich Live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sagellmd.cli.render import cell, console, state_text
from sagellmd.cli.waiting import EngineRow, ProgressView, changed_rows


def progress_table(title: str, rows: Sequence[EngineRow], note: str) -> Group:
    """Title, one row per engine, and what the wait is at (a line of its own, not a table
    caption, so a long note is not wrapped to the table's width)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ENGINE", "STATE", "PID", "PORT", "GPUS", "RESTARTS"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE", overflow="fold")
    for row in rows:
        table.add_row(
            cell(row.id),
            state_text(row.state),
            cell(row.pid),
            cell(row.port),
            cell(",".join(map(str, row.gpus))),
            cell(row.restarts),
            cell(row.message),
        )
    return Group(Text(title, style="bold"), table, Text(note, style="dim"))


class LiveView:
    """Redraws one table in place; what is left on screen at the end is the last state."""

    def __init__(self, title: str) -> None:
        self._title = title
        # auto_refresh off: the table only changes when the daemon reports something, so
        # redraw then instead of from a timer thread.
        self._live = Live(
            progress_table(title, [], "waiting for the daemon"),
            console=console(),
            auto_refresh=False,
            transient=False,
        )
        self._live.start()

    def update(self, rows: Sequence[EngineRow], note: str) -> None:
        self._live.update(progress_table(self._title, rows, note), refresh=True)

    def close(self) -> None:
        self._live.stop()


class PlainView:
    """One line per engine whenever its row changes: readable in logs and pipes."""

    def __init__(self, title: str, echo: Callable[[str], None]) -> None:
        self._echo = echo
        self._shown: dict[str, EngineRow] = {}
        echo(title)

    def update(self, rows: Sequence[EngineRow], note: str) -> None:
        for row in changed_rows(self._shown, rows):
            self._echo(f"  {row.line()}")
            self._shown[row.id] = row

    def close(self) -> None:
        return None


def progress_view(title: str, echo: Callable[[str], None]) -> ProgressView:
    """A live table when stdout is a terminal, else plain lines (scripts, CI logs)."""
    if sys.stdout.isatty():
        return LiveView(title)
    return PlainView(title, echo)
