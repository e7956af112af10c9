"""The `sagellm preset` commands: read presets locally, set and unset them through the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from sagellmd.cli.client import ApiClient, segment
from sagellmd.cli.context import cli_context
from sagellmd.cli.render import console, plan_lines, presets_table, print_json
from sagellmd.cli.waiting import Rollout, event_cursor, follow_rollout
from sagellmd.errors import (
    BadInputError,
    DaemonUnreachableError,
    NotFoundError,
    SagellmError,
)
from sagellmd.presets import catalogue, find_preset, load_preset_file, read_document
from sagellmd.spec import Preset

preset_app = typer.Typer(
    help="List, show and validate presets; set, unset or apply them on the daemon.",
    no_args_is_help=True,
)

DEFAULT_TIMEOUT_S = 900.0

NAME_ARG = typer.Argument(None, metavar="NAME", help="Preset name.", show_default=False)
FILE_OPTION = typer.Option(
    None, "--file", help="Preset YAML or JSON file.", dir_okay=False, show_default=False
)
JSON_OPTION = typer.Option(False, "--json", help="Print the raw JSON.")
TIMEOUT_OPTION = typer.Option(
    DEFAULT_TIMEOUT_S, "--timeout", min=1, metavar="S", help="Seconds to wait for ready."
)


def _echo(line: str) -> None:
    typer.echo(line)


def resolve_preset(name: str | None, file: Path | None, home: Path) -> tuple[Preset, Any]:
    """The preset from `file` (with its raw document) or from the catalogue (document None)."""
    if file is None:
        if not name:
            raise BadInputError("give a preset NAME or --file FILE")
        return find_preset(name, home).preset, None
    preset = load_preset_file(file)
    if name and name != preset.name:
        raise BadInputError(
            f"NAME {name!r} does not match the name {preset.name!r} in {file};"
            f" use {preset.name!r} or change the file's `name`"
        )
    return preset, read_document(file)


def _engines_word(count: int) -> str:
    return f"{count} engine" if count == 1 else f"{count} engines"


@preset_app.command("list")
def list_presets(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Built-in and file presets; marks the active ones when the daemon answers."""
    rows: dict[str, dict[str, Any]] = {
        name: {
            "name": name,
            "source": entry.source,
            "engines": [engine.name for engine in entry.preset.engines],
            "description": entry.preset.description,
            "active": None,
        }
        for name, entry in sorted(catalogue(cli_context(ctx).home).items())
    }
    client = cli_context(ctx).client()
    try:
        answer = client.get("/v1/presets") or {}
    except DaemonUnreachableError:
        # Listing the catalogue needs no daemon; only the ACTIVE column does.
        answer = None
    finally:
        client.close()
    if answer is not None:
        for row in rows.values():
            row["active"] = False
        for remote in answer.get("presets") or []:
            row = rows.setdefault(str(remote.get("name")), {
                "name": remote.get("name"),
                "source": remote.get("source"),
                "engines": list(remote.get("engines") or []),
                "description": remote.get("description") or "",
            })
            row["active"] = bool(remote.get("active"))
    if as_json:
        print_json({"presets": list(rows.values())})
        return
    console().print(presets_table(rows.values(), show_active=answer is not None))


@preset_app.command("show")
def show(
    ctx: typer.Context,
    name: str | None = NAME_ARG,
    file: Path | None = FILE_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print a preset with every default filled in (no daemon needed)."""
    preset, _ = resolve_preset(name, file, cli_context(ctx).home)
    if as_json:
        print_json(preset.to_dict())
    else:
        typer.echo(yaml.safe_dump(preset.to_dict(), sort_keys=False).rstrip("\n"))


@preset_app.command("validate")
def validate(ctx: typer.Context, name: str | None = NAME_ARG,
             file: Path | None = FILE_OPTION) -> None:
    """Check a preset file or a named preset (no daemon needed); exit 2 on errors."""
    preset, _ = resolve_preset(name, file, cli_context(ctx).home)
    typer.echo(f"ok: {preset.name} ({_engines_word(len(preset.engines))})")


def _put_preset(client: ApiClient, name: str, document: Any,
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = client.put(f"/v1/presets/{segment(name)}", body=document, params=params) or {}
    for line in plan_lines(answer):
        typer.echo(line)
    return answer


def _wait_or_fail(client: ApiClient, name: str, answer: dict[str, Any], cursor: int,
                  timeout: float) -> str | None:
    """Follow the rollout; None when ready, else the reason it failed."""
    typer.echo(f"waiting up to {timeout:g} s for the engines of {name} to be ready")
    verdict = follow_rollout(client, Rollout.from_answer(name, answer), cursor, timeout, _echo)
    if verdict.ok:
        typer.echo(f"ready: {verdict.reason}")
        return None
    return verdict.reason


@preset_app.command("set")
def set_preset(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Preset name."),
    file: Path | None = FILE_OPTION,
    wait: bool = typer.Option(False, "--wait", help="Wait until its engines are ready."),
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Add or replace a preset's engines on the daemon."""
    document = None
    if file is not None:
        _, document = resolve_preset(name, file, cli_context(ctx).home)
    client = cli_context(ctx).client()
    try:
        cursor = event_cursor(client) if wait else 0
        answer = _put_preset(client, name, document)
        if wait:
            reason = _wait_or_fail(client, name, answer, cursor, timeout)
            if reason:
                raise SagellmError(f"preset {name} did not become ready: {reason}")
    finally:
        client.close()


@preset_app.command("unset")
def unset_preset(ctx: typer.Context,
                 name: str = typer.Argument(..., metavar="NAME", help="Preset name.")) -> None:
    """Remove a preset's engines from the daemon."""
    client = cli_context(ctx).client()
    try:
        answer = client.delete(f"/v1/presets/{segment(name)}") or {}
    finally:
        client.close()
    for line in plan_lines(answer):
        typer.echo(line)


def _active_document(client: ApiClient, name: str) -> Any:
    """The preset's document if it is active on the daemon now, else None."""
    try:
        info = client.get(f"/v1/presets/{segment(name)}") or {}
    except NotFoundError:
        return None
    return info.get("document") if info.get("active") else None


def _undo(client: ApiClient, name: str, previous: Any) -> str:
    """Put the preset back as it was before `apply`; say what was done."""
    path = f"/v1/presets/{segment(name)}"
    if previous is None:
        try:
            answer = client.delete(path) or {}
        except NotFoundError:
            return f"nothing to undo: preset {name} is no longer active"
        summary = f"undone: unset preset {name}, which was not active before"
    else:
        answer = client.put(path, body=previous) or {}
        summary = f"undone: set preset {name} back to its previous document"
    typer.echo(summary)
    for line in plan_lines(answer):
        typer.echo(line)
    return summary


@preset_app.command("apply")
def apply_preset(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Preset name."),
    file: Path | None = FILE_OPTION,
    no_rollback: bool = typer.Option(
        False, "--no-rollback", help="Leave the preset set if it does not become ready."
    ),
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Set a preset and wait until it is ready; undo it if it is not."""
    document = None
    if file is not None:
        _, document = resolve_preset(name, file, cli_context(ctx).home)
    client = cli_context(ctx).client()
    try:
        previous = _active_document(client, name)
        cursor = event_cursor(client)
        # With --no-rollback the daemon must not revert it on its own either.
        answer = _put_preset(client, name, document,
                             {"rollback": "false"} if no_rollback else None)
        reason = _wait_or_fail(client, name, answer, cursor, timeout)
        if reason is None:
            return
        failure = f"preset {name} did not become ready: {reason}"
        if no_rollback:
            raise SagellmError(f"{failure}; left as set (--no-rollback)")
        try:
            summary = _undo(client, name, previous)
        except SagellmError as exc:
            raise SagellmError(f"{failure}; undoing it failed too: {exc.message}") from exc
        raise SagellmError(f"{failure}; {summary}")
    finally:
        client.close()
