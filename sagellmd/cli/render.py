"""How API answers look on a terminal: rich tables, state colours and one-line summaries."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sagellmd.cli.columns import Column, FittedTable
from sagellmd.instance import InstanceState

# The daemon's own enum: a state it adds shows unstyled until it gets a colour here.
STATE_STYLES = {
    InstanceState.READY: "green",
    InstanceState.STARTING: "yellow",
    InstanceState.PENDING: "yellow",
    InstanceState.BACKOFF: "red",
    InstanceState.UNHEALTHY: "red",
    InstanceState.FAILED: "red",
    InstanceState.IDLE: "cyan",
}


def console() -> Console:
    # highlight=False: rich would otherwise colour numbers and paths inside user text.
    return Console(highlight=False)


def print_json(data: Any) -> None:
    """The raw answer for scripts: plain JSON, never wrapped or coloured."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def cell(value: Any) -> Text:
    # Text, not str: labels and messages come from users and must not be read as rich markup.
    return Text("-" if value is None or value == "" else str(value))


def state_text(state: Any) -> Text:
    return Text(str(state or "-"), style=STATE_STYLES.get(str(state), ""))


def single_line(value: Any) -> str:
    """Free text with its newlines and runs of blanks as single spaces."""
    return " ".join(str(value).split())


def one_line_text(value: Any) -> Text:
    """A cell of free text (a message, a label) on one line: newlines and runs of blanks
    become single spaces, so a table row never spills onto the next line."""
    return cell(single_line(value) if value is not None else None)


# `sagellm status` and `engine list`: id, state, pid and port always whole; then the
# message (the rest of the width, cut with an ellipsis), restarts, model, label, kind.
ENGINE_COLUMNS = (
    Column("ID", 0, keep=True),
    Column("KIND", 5),
    Column("MODEL", 3, cut=True, min_width=10),
    Column("STATE", 0, keep=True),
    Column("PID", 0, keep=True, justify="right"),
    Column("PORT", 0, keep=True, justify="right"),
    Column("RESTARTS", 2, justify="right"),
    Column("LABEL", 4, cut=True, min_width=8),
    Column("MESSAGE", 1, cut=True, min_width=16),
)


# Shown after STATE on a cluster: the node each engine runs on.
NODE_COLUMN = Column("NODE", 1)
# Shown after PORT when the gateway reports its load (status answers carry it).
LOAD_COLUMN = Column("INFLIGHT/QUEUED", 2, justify="right")


def load_text(engine: Mapping[str, Any]) -> Text:
    inflight, queued = engine.get("inflight"), engine.get("queued")
    return cell(None if inflight is None else f"{inflight}/{queued if queued is not None else 0}")


def with_instances(engines: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], bool]]:
    """Each engine, then (indented under it) the instances of a disaggregated one."""
    rows: list[tuple[Mapping[str, Any], bool]] = []
    for engine in engines:
        rows.append((engine, False))
        rows.extend((member, True) for member in engine.get("instances") or [])
    return rows


def engines_table(
    engines: Iterable[Mapping[str, Any]], local_node: str | None = None
) -> FittedTable:
    """The engines; with `local_node` (the daemon's node on a cluster) a NODE column."""
    engines = list(engines)
    with_load = any(engine.get("inflight") is not None for engine in engines)
    rows = []
    for engine, member in with_instances(engines):
        row = [
            # An instance shows indented, its role where its engine shows the kind.
            cell(f"  {engine.get('id')}" if member else engine.get("id")),
            cell(engine.get("role") if member else engine.get("kind")),
            cell(engine.get("model")),
            state_text(engine.get("state")),
            cell(engine.get("pid")),
            cell(engine.get("port")),
            cell(engine.get("restarts")),
            one_line_text(engine.get("label")),
            one_line_text(engine.get("message")),
        ]
        if with_load:
            row.insert(6, load_text(engine))
        if local_node is not None:
            on = engine.get("node") or (local_node if engine.get("pid") else None)
            row.insert(4, cell(on))
        rows.append(row)
    columns = list(ENGINE_COLUMNS)
    if with_load:
        columns.insert(6, LOAD_COLUMN)
    if local_node is not None:
        columns.insert(4, NODE_COLUMN)
    return FittedTable(columns, rows)


def nodes_line(nodes: Any) -> str | None:
    """`nodes: head (this one), node-b, node-c dead`; None without a cluster."""
    if not isinstance(nodes, list) or not nodes:
        return None
    parts = []
    for node in nodes:
        if not isinstance(node, Mapping):
            continue
        text = str(node.get("name"))
        if node.get("local"):
            text += " (daemon)"
        elif not node.get("alive"):
            text += " dead"
        elif node.get("message"):
            text += " unusable"
        parts.append(text)
    return "nodes: " + ", ".join(parts)


def local_node_name(nodes: Any) -> str | None:
    if not isinstance(nodes, list):
        return None
    return next((str(n["name"]) for n in nodes if isinstance(n, Mapping) and n.get("local")), None)


def gateway_line(gateway: Mapping[str, Any]) -> str:
    """`gateway: ready http://127.0.0.1:8000 (pid 4242)`, or why there is none."""
    state = str(gateway.get("state") or "?")
    if not gateway.get("enabled"):
        return "gateway: disabled (gateway.enabled in config.yaml)"
    pid = gateway.get("pid")
    return f"gateway: {state} {gateway.get('url', '?')}" + (f" (pid {pid})" if pid else "")


def print_table(table: FittedTable) -> None:
    """A fitted table on stdout: at the terminal's width, or whole on a pipe.

    On a pipe (a script, `grep`, a log) no width is the right one, so nothing is dropped
    or cut and every row stays one line, without the padding of the last column.
    """
    if sys.stdout.isatty():
        console().print(table)
        return
    wide = Console(highlight=False, width=max(1, table.natural_width()), no_color=True)
    with wide.capture() as captured:
        wide.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def gpus_line(gpus: Any) -> str:
    """The status answer's GPU summary: its `message`, or a count if only devices are given."""
    if isinstance(gpus, Mapping):
        if gpus.get("message"):
            return str(gpus["message"])
        return f"{len(gpus.get('devices') or [])} GPU(s) ({gpus.get('mode', 'unknown mode')})"
    if isinstance(gpus, list):
        return f"{len(gpus)} GPU(s)"
    return "unknown"


def presets_table(rows: Iterable[Mapping[str, Any]], show_active: bool) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("NAME", no_wrap=True)
    table.add_column("SOURCE", no_wrap=True)
    if show_active:
        table.add_column("ACTIVE", no_wrap=True)
    table.add_column("ENGINES")
    table.add_column("DESCRIPTION", overflow="fold")
    for row in rows:
        cells = [cell(row.get("name")), cell(row.get("source"))]
        if show_active:
            cells.append(Text("yes", style="green") if row.get("active") else Text("no"))
        cells.append(cell(", ".join(row.get("engines") or [])))
        cells.append(cell(" ".join(str(row.get("description") or "").split())))
        table.add_row(*cells)
    return table


def event_line(event: Mapping[str, Any]) -> str:
    """`ts  engine  type  message`, the shape `events` and `--wait` print: one line per
    event, whatever the message (a crash's quoted output has newlines)."""
    return "  ".join(
        single_line(event.get(key)) if event.get(key) not in (None, "") else "-"
        for key in ("ts", "engine", "type", "message")
    )


def plan_engine(item: Mapping[str, Any]) -> str | None:
    """The engine id of a plan item (`engine` in docs/api.md, `engine_id` from the planner)."""
    value = item.get("engine") or item.get("engine_id")
    return str(value) if value else None


GIB = 1024**3
# Plan actions that take GPUs (spawn a process, or wake a sleeping one): the only ones with a
# GPU placement to show. The CLI cannot import the planner (it is an HTTP client);
# tests/unit/test_cli_vocabulary.py checks these against reconcile/actions.py.
SPAWNING_ACTIONS = ("start", "restart", "surge", "wake")


def placement_text(item: Mapping[str, Any]) -> str:
    """`GPU0+GPU1 x 6.9 GiB` for a start with GPUs, `no GPU` for one without, else ''."""
    gpus = item.get("gpus")
    if item.get("action") not in SPAWNING_ACTIONS or not isinstance(gpus, list):
        return ""
    if not gpus:
        return "no GPU"
    per_gpu = (item.get("gpu_bytes") or 0) / GIB
    return f"{'+'.join(f'GPU{gpu}' for gpu in gpus)} x {per_gpu:.1f} GiB"


def plan_item_line(item: Mapping[str, Any]) -> str:
    text = f"  {item.get('action', '?'):<9} {plan_engine(item) or '-'}"
    if item.get("reason"):
        text += f"  ({item['reason']})"
    placement = placement_text(item)
    return f"{text}  {placement}" if placement else text


def plan_lines(answer: Mapping[str, Any]) -> list[str]:
    """The generation a change made (or, dry run, that it left alone) and its plan."""
    if answer.get("dry_run"):
        header = (
            f"dry run: nothing was changed (the daemon stays at generation"
            f" {answer.get('generation', '?')}); the plan would be:"
        )
    else:
        header = f"generation {answer.get('generation', '?')}"
    lines = [header]
    plan = answer.get("plan") or []
    if not plan:
        lines.append("  nothing to do: the engines already match")
    lines.extend(plan_item_line(item) for item in plan)
    return lines


def gib(value: Any) -> str:
    """A GiB figure from the API (`total_gb` and the like) as table text."""
    return f"{value:.1f} GiB" if isinstance(value, int | float) else "-"
