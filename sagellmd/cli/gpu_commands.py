"""`sagellm gpu`: the daemon's GPU inventory with its reservations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from sagellmd.cli.context import cli_context
from sagellmd.cli.render import cell, console, gib, print_json


def device_name(device: Mapping[str, Any]) -> str:
    """The GPU's name, labelled `(simulated)` unless the name already says so."""
    name = str(device.get("name") or "-")
    if device.get("simulated") and "simulated" not in name.lower():
        return f"{name} (simulated)"
    return name


def reservations_text(device: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{r.get('engine')} {gib(r.get('gb'))}"
        for r in device.get("reservations") or []
        if isinstance(r, Mapping)
    )


def gpu_title(answer: Mapping[str, Any]) -> str:
    """The inventory's own message, which says where it comes from (NVML or simulated)."""
    title = str(answer.get("message") or f"GPUs ({answer.get('mode', 'unknown mode')})")
    if answer.get("simulated") and "simulated" not in title.lower():
        # Simulated figures must never pass for real hardware.
        title = f"{title} (simulated)"
    return title


def gpu_table(answer: Mapping[str, Any]) -> Table:
    table = Table(title=gpu_title(answer), box=None, pad_edge=False, header_style="bold")
    for column in ("GPU", "NAME", "TOTAL", "USED", "FREE", "RESERVED"):
        table.add_column(column, no_wrap=True, justify="left" if column == "NAME" else "right")
    table.add_column("RESERVED BY", overflow="fold")
    for column in ("FOREIGN", "AVAILABLE"):
        table.add_column(column, no_wrap=True, justify="right")
    for device in answer.get("devices") or []:
        table.add_row(
            cell(device.get("index")),
            cell(device_name(device)),
            Text(gib(device.get("total_gb"))),
            Text(gib(device.get("used_gb"))),
            Text(gib(device.get("free_gb"))),
            Text(gib(device.get("reserved_gb"))),
            cell(reservations_text(device)),
            Text(gib(device.get("foreign_gb"))),
            Text(gib(device.get("available_gb")), style="bold"),
        )
    return table


def gpu(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print the raw JSON.")
) -> None:
    """GPUs: memory total, used, free, reserved (and by which engines), foreign, available."""
    client = cli_context(ctx).client()
    try:
        answer: dict[str, Any] = client.get("/v1/gpus") or {}
    finally:
        client.close()
    if as_json:
        print_json(answer)
        return
    if not answer.get("devices"):
        # e.g. "no GPUs (NVML unavailable: ...)": the daemon says why there are none.
        typer.echo(str(answer.get("message") or "no GPUs"))
    else:
        console().print(gpu_table(answer))
        headroom = answer.get("headroom")
        if isinstance(headroom, int | float):
            typer.echo(
                f"AVAILABLE: what new engines may still reserve ({headroom:.0%} of the total,"
                " minus reservations and foreign use)"
            )
    for error in answer.get("errors") or []:
        typer.echo(f"warning: {error}", err=True)
