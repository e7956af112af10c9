"""The `sagellm` Typer app: its command tree, and the one place errors become exit codes."""

from __future__ import annotations

import sys
from typing import Any

import typer

from sagellmd import __version__
from sagellmd.cli.context import CliContext, cli_context
from sagellmd.cli.engine_commands import engine_app
from sagellmd.cli.event_commands import events
from sagellmd.cli.gateway_commands import gateway
from sagellmd.cli.generation_commands import history, rollback
from sagellmd.cli.gpu_commands import gpu
from sagellmd.cli.help_format import SagellmGroup
from sagellmd.cli.inference_commands import chat, embed
from sagellmd.cli.interrupt import take_sigint
from sagellmd.cli.model_commands import model_app
from sagellmd.cli.node_commands import node_app
from sagellmd.cli.preset_commands import preset_app
from sagellmd.cli.render import (
    engines_table,
    gateway_line,
    gpus_line,
    local_node_name,
    nodes_line,
    print_json,
    print_table,
)
from sagellmd.cli.run_command import run
from sagellmd.cli.ui_command import ui
from sagellmd.cli.watch import watch_status
from sagellmd.errors import SagellmError, SpecError

app = typer.Typer(
    cls=SagellmGroup,
    name="sagellm",
    help="Control sagellmd, the daemon that keeps LLM and embedding engines running.",
    no_args_is_help=True,
    # `--install-completion` / `--show-completion` for bash, zsh, fish and PowerShell.
    add_completion=True,
    # Locals in a traceback could show the API token.
    pretty_exceptions_show_locals=False,
)
app.add_typer(preset_app, name="preset")
app.add_typer(engine_app, name="engine")
app.add_typer(model_app, name="model")
app.add_typer(node_app, name="node")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sagellm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: str | None = typer.Option(
        None,
        "--url",
        metavar="URL",
        help="Daemon URL (default: SAGELLM_URL or http://127.0.0.1:8765).",
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version of sagellm and exit.",
    ),
) -> None:
    """Control sagellmd, the daemon that keeps LLM and embedding engines running."""
    state = ctx.obj if isinstance(ctx.obj, CliContext) else CliContext()
    if url:
        state.url = url
    ctx.obj = state


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False, "--json", help="Print the raw JSON (one status per line with --watch)."
    ),
    watch: bool = typer.Option(
        False,
        "--watch",
        "-w",
        help="Keep the view open, redrawn on every daemon event; survives daemon restarts."
        " Ctrl-C to exit.",
    ),
) -> None:
    """Generation, daemon, GPUs and every engine's state."""
    client = cli_context(ctx).client()
    if watch:
        try:
            watch_status(client, as_json, typer.echo)
        finally:
            client.close()
        return
    try:
        answer: dict[str, Any] = client.get("/v1/status") or {}
    finally:
        client.close()
    if as_json:
        print_json(answer)
        return
    daemon = answer.get("daemon") or {}
    typer.echo(
        f"generation {answer.get('generation', '?')}   daemon pid {daemon.get('pid', '?')}"
        + (f"   version {daemon['version']}" if daemon.get("version") else "")
    )
    typer.echo(f"gpus: {gpus_line(answer.get('gpus'))}")
    nodes = nodes_line(answer.get("nodes"))
    if nodes is not None:
        typer.echo(nodes)
    presets = answer.get("presets")
    if isinstance(presets, list):
        typer.echo(f"presets: {', '.join(map(str, presets)) or 'none'}")
    if isinstance(answer.get("gateway"), dict):
        typer.echo(gateway_line(answer["gateway"]))
    engines = answer.get("engines") or []
    if not engines:
        typer.echo("no engines (start some with `sagellm preset set NAME`)")
        return
    print_table(engines_table(engines, local_node_name(answer.get("nodes"))))


# Registered here, after status and events, so `--help` lists the commands in that order.
app.command("events")(events)
app.command("history")(history)
app.command("rollback")(rollback)
app.command("gpu")(gpu)
app.command("gateway")(gateway)
app.command("run")(run)
app.command("chat")(chat)
app.command("embed")(embed)
app.command("ui")(ui)


def main() -> None:
    """Entry point of `sagellm`: run the app and turn a SagellmError into its exit code."""
    # Every command may wait (--wait, downloads, followers): Ctrl-C must end any of them,
    # whatever SIGINT disposition this process inherited.
    take_sigint()
    try:
        app(prog_name="sagellm")
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except SagellmError as exc:
        lines = exc.errors if isinstance(exc, SpecError) else [exc.message]
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
