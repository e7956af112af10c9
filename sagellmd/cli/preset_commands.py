"""The `sagellm preset` commands: read presets locally, set and unset them through the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from sagellmd.cli.changes import (
    DEFAULT_TIMEOUT_S,
    DRY_RUN_OPTION,
    NO_ROLLBACK_OPTION,
    TIMEOUT_OPTION,
    WAIT_OPTION,
    ChangeOptions,
    run_change,
)
from sagellmd.cli.client import segment
from sagellmd.cli.completion import complete_active_preset, complete_preset_name
from sagellmd.cli.context import cli_context
from sagellmd.cli.help_format import SagellmGroup
from sagellmd.cli.render import console, presets_table, print_json
from sagellmd.errors import BadInputError, DaemonUnreachableError
from sagellmd.presets import catalogue, find_preset, load_preset_file, read_document
from sagellmd.spec import Preset, is_valid_name

preset_app = typer.Typer(
    cls=SagellmGroup,
    help="List, show and validate presets; set, unset or apply them on the daemon.",
    no_args_is_help=True,
)

NAME_ARG = typer.Argument(
    None,
    metavar="NAME",
    help="Preset name.",
    show_default=False,
    autocompletion=complete_preset_name,
)
FILE_OPTION = typer.Option(
    None, "--file", help="Preset YAML or JSON file.", dir_okay=False, show_default=False
)
JSON_OPTION = typer.Option(False, "--json", help="Print the raw JSON.")


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


def check_preset_name(name: str, command: str) -> None:
    """A NAME that cannot be a preset (a path, say) fails here, before any URL is built."""
    if is_valid_name(name):
        return
    if command == "unset":
        hint = "unset takes the name of an active preset (see `sagellm status`)"
    else:
        hint = f"to {command} a file use --file: `sagellm preset {command} --file {name}`"
    raise BadInputError(f"no preset named {name!r}; {hint}")


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
            row = rows.setdefault(
                str(remote.get("name")),
                {
                    "name": remote.get("name"),
                    "source": remote.get("source"),
                    "engines": list(remote.get("engines") or []),
                    "description": remote.get("description") or "",
                },
            )
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
def validate(
    ctx: typer.Context, name: str | None = NAME_ARG, file: Path | None = FILE_OPTION
) -> None:
    """Check a preset file or a named preset (no daemon needed); exit 2 on errors."""
    preset, _ = resolve_preset(name, file, cli_context(ctx).home)
    typer.echo(f"ok: {preset.name} ({_engines_word(len(preset.engines))})")


def _preset_change(
    ctx: typer.Context,
    name: str | None,
    file: Path | None,
    options: ChangeOptions,
    *,
    command: str,
    wait: bool,
    timeout: float,
    kept_note: str = "rollback off",
) -> None:
    """PUT the preset (its file's document, or by name the daemon's catalogue entry)."""
    document = None
    if file is not None:
        # Validated here first: a malformed file fails before the daemon is contacted.
        preset, document = resolve_preset(name, file, cli_context(ctx).home)
        name = preset.name
    elif not name:
        raise BadInputError(f"give a preset NAME or --file FILE (`sagellm preset {command} NAME`)")
    else:
        check_preset_name(name, command)
    client = cli_context(ctx).client()
    try:
        run_change(
            client,
            lambda params: client.put(f"/v1/presets/{segment(name)}", body=document, params=params),
            options,
            wait=wait,
            timeout=timeout,
            failure=f"preset {name} did not become ready",
            kept_note=kept_note,
        )
    finally:
        client.close()


OPTIONAL_NAME_ARG = typer.Argument(
    None,
    metavar="NAME",
    help="Preset name (from the catalogue; with --file, defaults to the file's name).",
    show_default=False,
    autocompletion=complete_preset_name,
)


@preset_app.command("set")
def set_preset(
    ctx: typer.Context,
    name: str | None = OPTIONAL_NAME_ARG,
    file: Path | None = FILE_OPTION,
    dry_run: bool = DRY_RUN_OPTION,
    no_rollback: bool = NO_ROLLBACK_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Add or replace a preset's engines on the daemon."""
    options = ChangeOptions(dry_run=dry_run, rollback=not no_rollback)
    _preset_change(ctx, name, file, options, command="set", wait=wait, timeout=timeout)


@preset_app.command("unset")
def unset_preset(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., metavar="NAME", help="Active preset name.", autocompletion=complete_active_preset
    ),
    dry_run: bool = DRY_RUN_OPTION,
    no_rollback: bool = NO_ROLLBACK_OPTION,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Remove a preset's engines from the daemon."""
    check_preset_name(name, "unset")
    client = cli_context(ctx).client()
    try:
        run_change(
            client,
            lambda params: client.delete(f"/v1/presets/{segment(name)}", params=params),
            ChangeOptions(dry_run=dry_run, rollback=not no_rollback),
            wait=wait,
            timeout=timeout,
            failure=f"unsetting preset {name} did not settle",
        )
    finally:
        client.close()


@preset_app.command("apply")
def apply_preset(
    ctx: typer.Context,
    name: str | None = OPTIONAL_NAME_ARG,
    file: Path | None = FILE_OPTION,
    no_rollback: bool = typer.Option(
        False, "--no-rollback", help="If it does not become ready, keep the failed state."
    ),
    timeout: float = typer.Option(
        DEFAULT_TIMEOUT_S,
        "--timeout",
        min=1,
        metavar="S",
        help="Seconds to wait for the preset to become ready (apply always waits).",
    ),
) -> None:
    """Set a preset and wait until it is ready; if it is not, the daemon rolls it back."""
    # The daemon does the undo (a `rollback of N` generation), so apply is set + wait.
    _preset_change(
        ctx,
        name,
        file,
        ChangeOptions(rollback=not no_rollback),
        command="apply",
        wait=True,
        timeout=timeout,
        kept_note="--no-rollback",
    )
