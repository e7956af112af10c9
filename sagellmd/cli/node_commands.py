"""`sagellm node list`: the Ray cluster's nodes as the daemon sees them (docs/multi-node.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer

from sagellmd.cli.columns import Column, FittedTable
from sagellmd.cli.context import cli_context
from sagellmd.cli.help_format import SagellmGroup
from sagellmd.cli.render import cell, one_line_text, print_json, print_table

node_app = typer.Typer(
    cls=SagellmGroup,
    help="The cluster's nodes (with cluster: in config.yaml).",
    no_args_is_help=True,
)

NODE_COLUMNS = (
    Column("NAME", 0, keep=True),
    Column("ADDRESS", 0, keep=True),
    Column("ALIVE", 0, keep=True),
    Column("RAY NODE", 3),
    Column("GPUS", 1),
    Column("ENGINES", 2, cut=True, min_width=8),
    Column("AGENT", 4),
    Column("MESSAGE", 1, cut=True, min_width=12),
)


def gpus_text(node: Mapping[str, Any]) -> str:
    """`2 x 80 GiB simulated`, `none`; mixed sizes listed one by one."""
    gpus = [gpu for gpu in node.get("gpus") or [] if isinstance(gpu, Mapping)]
    if not gpus:
        return "none"
    sizes = sorted({round(float(gpu.get("total_gb") or 0)) for gpu in gpus})
    size = f"{sizes[0]} GiB" if len(sizes) == 1 else "/".join(f"{s}" for s in sizes) + " GiB"
    simulated = " simulated" if any(gpu.get("simulated") for gpu in gpus) else ""
    return f"{len(gpus)} x {size}{simulated}"


def alive_text(node: Mapping[str, Any]) -> str:
    if node.get("alive"):
        return "yes (daemon)" if node.get("local") else "yes"
    since = node.get("dead_since")
    return f"dead since {since}" if since else "dead"


def node_row(node: Mapping[str, Any]) -> list[Any]:
    agent = node.get("agent") or {}
    return [
        cell(node.get("name")),
        cell(node.get("address")),
        cell(alive_text(node)),
        cell(str(node.get("ray_node_id") or "")[:12]),
        cell(gpus_text(node)),
        one_line_text(", ".join(map(str, node.get("engines") or [])) or "-"),
        cell(f"sagellm {agent['version']} pid {agent.get('pid')}" if agent.get("version") else "-"),
        one_line_text(node.get("message") or ""),
    ]


@node_app.command("list")
def node_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the raw JSON.")
) -> None:
    """Name, address, alive (or dead since), Ray node id, GPUs, engines, agent version."""
    client = cli_context(ctx).client()
    try:
        answer: dict[str, Any] = client.get("/v1/nodes") or {}
    finally:
        client.close()
    if as_json:
        print_json(answer)
        return
    if answer.get("cluster") is None:
        typer.echo(
            "not on a cluster: this daemon runs engines on its own machine (add cluster:"
            " to config.yaml to use a Ray cluster, docs/multi-node.md)"
        )
        return
    print_table(FittedTable(list(NODE_COLUMNS), [node_row(node) for node in answer["nodes"]]))
