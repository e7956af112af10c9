"""The help screens' value column: a flag takes no value, so it shows no `<bool>`."""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup


def _hide_flag_types(params: list[Any]) -> None:
    for param in params:
        # Typer prints an option's type (`<bool>`) unless it has a metavar; a flag has none.
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class SagellmGroup(TyperGroup):
    """Every `sagellm` group: its own and its commands' flags show no value placeholder."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        _hide_flag_types(params)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _hide_flag_types(command.get_params(ctx))
        return command
