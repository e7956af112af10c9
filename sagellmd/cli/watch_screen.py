"""What one `sagellm status --watch` screen shows: its rows, the table and the header lines,
built from the daemon's answers (sagellmd/cli/watch.py runs the loop and the views)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from sagellmd.cli.columns import Column, FittedTable
from sagellmd.cli.render import (
    cell,
    gpus_line,
    one_line_text,
    single_line,
    state_text,
    with_instances,
)
from sagellmd.instance import PROCESS_STATES

# States in which an engine has a process whose age is worth showing.
RUNNING_STATES = PROCESS_STATES
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


def parse_ts(text: Any) -> float | None:
    """Epoch seconds of a daemon timestamp (`2026-01-02T03:04:05.123456Z`); None if absent."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def duration_text(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`, `4d03h`: short enough for a table column."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock_text(epoch: float) -> str:
    """Local wall-clock time of day, how a person reads "when"."""
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def event_text(event: Mapping[str, Any] | None) -> str:
    if not event:
        return "-"
    when = parse_ts(event.get("ts"))
    parts = [clock_text(when)] if when is not None else []
    parts.append(str(event.get("type") or "?"))
    if event.get("message"):
        parts.append(single_line(event["message"]))
    return " ".join(parts)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class WatchRow:
    """One engine of the watch view, from its `/v1/status` entry and its newest event."""

    id: str
    kind: str
    model: str
    state: str
    pid: int | None
    port: int | None
    gpus: tuple[int, ...]
    memory_gb: float | None
    restarts: int
    started_at: float | None
    last_event: str
    # The cluster node it runs on (None: the daemon's machine, or no cluster).
    node: str | None = None

    def uptime(self, now: float) -> str:
        if self.state not in RUNNING_STATES or self.pid is None or self.started_at is None:
            return "-"
        return duration_text(now - self.started_at)

    def gpus_text(self) -> str:
        """`0,1`; on another cluster node `node-b:0,1` (indices are the node's own)."""
        text = ",".join(map(str, self.gpus)) if self.gpus else "-"
        return f"{self.node}:{text}" if self.node else text

    def memory_text(self) -> str:
        return "-" if self.memory_gb is None else f"{self.memory_gb:.1f} GiB"

    def key(self) -> tuple[Any, ...]:
        """Everything but the uptime: what makes a row "changed" for the plain view."""
        return (
            self.kind,
            self.model,
            self.state,
            self.pid,
            self.port,
            self.gpus,
            self.memory_gb,
            self.restarts,
            self.last_event,
            self.node,
        )

    def line(self, now: float) -> str:
        """The plain-text form: every column, labelled, on one line."""
        parts = [self.id, self.kind, self.model, self.state]
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.port is not None:
            parts.append(f"port {self.port}")
        if self.node and not self.gpus:
            parts.append(f"on {self.node}")
        if self.gpus:
            parts.append(f"gpus {self.gpus_text()}")
        if self.memory_gb is not None:
            parts.append(self.memory_text())
        parts.append(f"restarts {self.restarts}")
        uptime = self.uptime(now)
        if uptime != "-":
            parts.append(f"up {uptime}")
        parts.append(f"last: {self.last_event}")
        return "  ".join(parts)


def watch_row(entry: Mapping[str, Any], last_event: Mapping[str, Any] | None) -> WatchRow:
    gpus = entry.get("gpus") if isinstance(entry.get("gpus"), list) else []
    memory = entry.get("gpu_memory_gb")
    return WatchRow(
        id=str(entry.get("id")),
        kind=str(entry.get("kind") or "-"),
        model=str(entry.get("model") or "-"),
        state=str(entry.get("state") or "unknown"),
        pid=_int(entry.get("pid")),
        port=_int(entry.get("port")),
        gpus=tuple(g for g in gpus if isinstance(g, int)),
        memory_gb=float(memory) if isinstance(memory, int | float) else None,
        restarts=_int(entry.get("restarts")) or 0,
        started_at=parse_ts(entry.get("started_at")),
        last_event=event_text(last_event),
        node=str(entry["node"]) if entry.get("node") else None,
    )


def remember(
    last_events: Mapping[str, Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    """The newest event of each engine, after `events` (oldest first, as the API sends them)."""
    merged = dict(last_events)
    for event in events:
        if event.get("engine"):
            merged[str(event["engine"])] = event
    return merged


@dataclass(frozen=True)
class Snapshot:
    """What the view shows: a status answer, the newest event per engine, the cursor."""

    status: Mapping[str, Any]
    cursor: int
    last_events: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # When the status was read (epoch seconds); the uptime tick does not change it.
    read_at: float = field(default_factory=time.time)

    @property
    def generation(self) -> Any:
        return self.status.get("generation", "?")

    @property
    def daemon_pid(self) -> Any:
        return (self.status.get("daemon") or {}).get("pid", "?")

    def rows(self) -> list[WatchRow]:
        engines = [e for e in self.status.get("engines") or [] if isinstance(e, Mapping)]
        rows = []
        for entry, member in with_instances(engines):
            row = watch_row(entry, self.last_events.get(str(entry.get("id"))))
            if member:
                # An instance of a disaggregated engine: indented under it, its role as kind.
                row = replace(row, id=f"  {row.id}", kind=str(entry.get("role") or "-"))
            rows.append(row)
        return rows


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
