"""Sending a desired-state change: dry run, rollback switch, plan output, and `--wait`.

Every command that changes the desired state (preset set/unset/apply, engine start/stop,
rollback) goes through `run_change`, so they all print the plan the same way and wait
for the daemon's verdict on the generation the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import typer

from sagellmd.cli.client import ApiClient
from sagellmd.cli.progress import progress_view
from sagellmd.cli.render import plan_lines
from sagellmd.cli.waiting import event_cursor, follow_generation, outcome_lines
from sagellmd.errors import SagellmError

DEFAULT_TIMEOUT_S = 900.0

DRY_RUN_OPTION = typer.Option(
    False, "--dry-run", help="Print the plan the change would produce; change nothing."
)
NO_ROLLBACK_OPTION = typer.Option(
    False,
    "--no-rollback",
    help="If the rollout fails, keep the failed state (for debugging) instead of the"
    " daemon restoring the last healthy generation.",
)
WAIT_OPTION = typer.Option(
    False, "--wait", help="Show the engines until the daemon judges the new generation."
)
TIMEOUT_OPTION = typer.Option(
    DEFAULT_TIMEOUT_S, "--timeout", min=1, metavar="S", help="Seconds to wait with --wait."
)


@dataclass(frozen=True)
class ChangeOptions:
    """The query parameters every desired-state change takes (docs/api.md)."""

    dry_run: bool = False
    rollback: bool = True

    def params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.dry_run:
            params["dry_run"] = "true"
        if not self.rollback:
            params["rollback"] = "false"
        return params


def run_change(
    client: ApiClient,
    send: Callable[[dict[str, str]], Any],
    options: ChangeOptions,
    *,
    wait: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    failure: str = "the change did not become healthy",
    header: Callable[[Mapping[str, Any]], Sequence[str]] | None = None,
    kept_note: str = "rollback off",
) -> dict[str, Any]:
    """Send the change with `send(params)`, print `header(answer)` and the plan, and with
    `wait` follow the generation it made.

    Raises SagellmError (exit 1) prefixed with `failure` when the generation fails, is
    superseded, or the timeout passes.
    """
    # Taken before the change so no event of its rollout can slip past the long-poll.
    cursor = event_cursor(client) if wait and not options.dry_run else 0
    answer = send(options.params()) or {}
    for line in [*(header(answer) if header else []), *plan_lines(answer)]:
        typer.echo(line)
    if wait and not options.dry_run:
        wait_for_generation(client, answer, cursor, timeout, failure, kept_note)
    return answer


def wait_for_generation(
    client: ApiClient,
    answer: Mapping[str, Any],
    cursor: int,
    timeout: float,
    failure: str,
    kept_note: str = "rollback off",
) -> None:
    """Follow the generation of a change's answer; return when healthy, else raise."""
    generation = int(answer.get("generation") or 0)
    view = progress_view(
        f"waiting up to {timeout:g} s for generation {generation} to be healthy", typer.echo
    )
    try:
        outcome = follow_generation(
            client, generation, answer.get("plan") or [], cursor, timeout, view
        )
    except KeyboardInterrupt:
        # The daemon carries on (and may still roll back); only the watching stops.
        raise SagellmError(
            f"stopped waiting; generation {generation} goes on rolling out in the daemon"
            " (`sagellm history` shows its verdict)"
        ) from None
    finally:
        view.close()
    if outcome.ok:
        # "ready" would be wrong for a change that only removed engines.
        typer.echo(f"{'done' if outcome.removal_only else 'ready'}: {outcome.reason}")
        return
    raise SagellmError(
        "; ".join([f"{failure}: {outcome.reason}", *outcome_lines(outcome, kept_note)])
    )
