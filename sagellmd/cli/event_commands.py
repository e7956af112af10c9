"""`sagellm events`: the daemon's event log, its last N entries, and `-f` to follow it.

`-f` long-polls `GET /v1/events?after=<cursor>`. Like `status --watch` it outlives a
daemon restart: while the daemon cannot be reached it says so once on stderr and tries
again every `RECONNECT_S`; once it answers, it carries on after the last event printed,
so the events of the restart itself are printed too. A daemon whose event log ends before
that cursor has a different database: the follower then starts again at its first event.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import typer

from sagellmd.cli.client import ApiClient
from sagellmd.cli.completion import complete_engine_id
from sagellmd.cli.context import cli_context
from sagellmd.cli.interrupt import take_sigint
from sagellmd.cli.render import event_line, print_json
from sagellmd.cli.waiting import next_cursor
from sagellmd.cli.watch import RECONNECT_S, transient
from sagellmd.errors import SagellmError

# Longest single long-poll of `-f`; events wake it at once.
FOLLOW_WAIT_S = 30
# The API's own default and bound for `limit` (docs/api.md).
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def event_texts(events: list[Mapping[str, Any]], as_json: bool) -> list[str]:
    return [json.dumps(event, default=str) if as_json else event_line(event) for event in events]


def batch(answer: Any) -> list[Mapping[str, Any]]:
    if not isinstance(answer, Mapping):
        return []
    return [event for event in answer.get("events") or [] if isinstance(event, Mapping)]


def last_event_id(client: ApiClient, engine: str | None) -> int:
    """The id of the daemon's newest event (of `engine`, if given); 0 if it has none."""
    answer = client.get("/v1/events", {"limit": 1, "engine": engine}) or {}
    return next_cursor(0, answer)


def follow_events(
    client: ApiClient,
    cursor: int,
    engine: str | None,
    echo: Callable[[str], None],
    notify: Callable[[str], None],
    as_json: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print every event after `cursor` as it is recorded, until interrupted."""
    down = False
    while True:
        try:
            if down:
                newest = last_event_id(client, engine)
                if newest < cursor:
                    notify(
                        f"the daemon at {client.base_url} has a new event log (its last event"
                        f" is #{newest}, before #{cursor}); following it from its start"
                    )
                    cursor = 0
                notify(f"reconnected to {client.base_url}")
                down = False
            answer = client.events(after=cursor, wait=FOLLOW_WAIT_S, engine=engine)
            for text in event_texts(batch(answer), as_json):
                echo(text)
            cursor = next_cursor(cursor, answer)
        except SagellmError as exc:
            if not transient(exc):
                raise
            if not down:
                # Once per outage: a log should not get a line per retry.
                notify(f"reconnecting to {client.base_url}... ({exc.message})")
                down = True
            sleep(RECONNECT_S)


def events(
    ctx: typer.Context,
    after: int | None = typer.Option(None, "--after", metavar="ID", help="Only events after ID."),
    engine: str | None = typer.Option(
        None,
        "--engine",
        metavar="ID",
        help="Only this engine.",
        autocompletion=complete_engine_id,
    ),
    limit: int = typer.Option(
        DEFAULT_LIMIT,
        "--limit",
        "-n",
        min=1,
        max=MAX_LIMIT,
        metavar="N",
        help="How many: the last N events, or with --after the first N after ID.",
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing new events; survives daemon restarts. Ctrl-C to exit.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the raw JSON (one event per line with -f)."
    ),
) -> None:
    """Recent events: ts, engine, type, message."""
    if follow:
        take_sigint()
    client = cli_context(ctx).client()
    try:
        answer = client.get("/v1/events", {"after": after, "limit": limit, "engine": engine})
        if as_json and not follow:
            print_json(answer)
            return
        for text in event_texts(batch(answer), as_json):
            typer.echo(text)
        if follow:
            cursor = next_cursor(after or 0, answer or {})
            follow_events(
                client,
                cursor,
                engine,
                typer.echo,
                lambda text: print(text, file=sys.stderr, flush=True),
                as_json,
            )
    except KeyboardInterrupt:
        # Ctrl-C is how a user ends -f; it is not a failure.
        return
    finally:
        client.close()
