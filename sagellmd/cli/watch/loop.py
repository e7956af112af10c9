"""The loop of `sagellm status --watch`: long-poll events, re-read status, wait out outages."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sagellmd.cli.client import ApiClient
from sagellmd.cli.interrupt import take_sigint
from sagellmd.cli.waiting import next_cursor
from sagellmd.cli.watch.snapshot import Snapshot, remember
from sagellmd.cli.watch.views import WatchView, watch_view
from sagellmd.errors import DaemonUnreachableError, SagellmError

# Longest long-poll; an empty answer only refreshes the uptime column (not a data poll).
UPTIME_REFRESH_S = 5.0
# Between attempts while the daemon is unreachable: quick enough to notice a restart
# within about a second, slow enough to be no load.
RECONNECT_S = 1.0
# Recent events read at (re)connect, so LAST EVENT is filled in before anything happens.
SEED_EVENTS = 1000


def connect(client: ApiClient) -> Snapshot:
    """Read the event cursor (and recent events), then the status.

    The cursor is read first: anything that happens between the two reads is after the
    cursor, so the next long-poll returns at once instead of the change being missed.
    """
    recent = client.get("/v1/events", {"limit": SEED_EVENTS}) or {}
    events = [e for e in recent.get("events") or [] if isinstance(e, Mapping)]
    cursor = next_cursor(0, recent)
    status = client.get("/v1/status") or {}
    return Snapshot(status, cursor, remember({}, events))


def transient(exc: SagellmError) -> bool:
    """Worth waiting out: the daemon is unreachable, or it answered 5xx.

    A daemon that is shutting down answers a long-poll still in flight with a 500 (see
    the report on the daemon's shutdown), so a 5xx is as much "restarting" as a refused
    connection. A 4xx (bad URL, token, request) is the user's to fix: it ends the watch.
    """
    return isinstance(exc, DaemonUnreachableError) or type(exc) is SagellmError


def run_watch(
    client: ApiClient,
    view: WatchView,
    refresh_s: float = UPTIME_REFRESH_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Follow the daemon until interrupted (KeyboardInterrupt is left to the caller)."""
    snapshot: Snapshot | None = None
    while True:
        try:
            if snapshot is None:
                snapshot = connect(client)
                view.show(snapshot)
            answer = client.events(after=snapshot.cursor, wait=refresh_s)
            events = [e for e in answer.get("events") or [] if isinstance(e, Mapping)]
            if not events:
                view.tick()
                continue
            cursor = next_cursor(snapshot.cursor, answer)
            status = client.get("/v1/status") or {}
            snapshot = Snapshot(status, cursor, remember(snapshot.last_events, events))
            view.show(snapshot)
        except SagellmError as exc:
            if not transient(exc):
                raise
            # Forget the cursor: the daemon that comes back may number events differently
            # (a restored or new database), and a stale cursor would never wake.
            snapshot = None
            view.reconnecting(exc.message)
            sleep(RECONNECT_S)


def watch_status(client: ApiClient, as_json: bool, echo: Callable[[str], None]) -> None:
    """`sagellm status --watch`: runs until Ctrl-C, which ends it normally (exit 0)."""
    take_sigint()
    view = watch_view(client.base_url, as_json, echo)
    try:
        run_watch(client, view)
    except KeyboardInterrupt:
        return
    finally:
        view.close()
