"""Management through the daemon's API: status, engines, presets, and waiting for the daemon's
verdict on a change (the same verdict `sagellm preset set --wait` reads)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import yaml

from sagellmd.client.errors import ClientError, bad_input
from sagellmd.client.http import Endpoint

# A preset or engine name (docs/presets.md); anything else given as a str is a YAML document.
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)?")
# Longest single long-poll of the events: they wake it early; this bounds a silent daemon.
POLL_S = 10.0
# A failed generation's rollback generation follows it at once; give up looking after this.
ROLLBACK_GRACE_S = 5.0
# A long poll may take its `wait`; the answer gets this much slack on top.
LONG_POLL_SLACK_S = 15.0
DEFAULT_WAIT_S = 900.0


def segment(name: str) -> str:
    """A name as one URL path segment (so `a/../b` cannot walk the API)."""
    return quote(name, safe="")


def preset_document(preset: str | Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(name, document): a name (document None: the daemon's catalogue), a dict or YAML text."""
    if isinstance(preset, str) and NAME.fullmatch(preset.strip()):
        return preset.strip(), None
    if isinstance(preset, str):
        try:
            document = yaml.safe_load(preset)
        except yaml.YAMLError as exc:
            raise bad_input(f"the preset is neither a preset name nor valid YAML: {exc}") from exc
    else:
        document = preset
    if not isinstance(document, Mapping):
        raise bad_input(
            "a preset is a name or a document ({'version': 1, 'name': ..., 'engines': [...]}),"
            f" got {type(document).__name__}"
        )
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise bad_input("the preset document has no `name` (a string); add one")
    return name, dict(document)


def _pending(record: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """`p.chat starting (loading), ...` for the engines of a generation without a verdict."""
    by_id = {str(e.get("id")): e for e in status.get("engines") or [] if isinstance(e, Mapping)}
    parts = []
    for change in record.get("changes") or []:
        if not isinstance(change, Mapping) or change.get("verdict") != "pending":
            continue
        engine = str(change.get("engine"))
        entry = by_id.get(engine, {})
        message = entry.get("message")
        parts.append(
            f"{engine} {entry.get('state', 'absent')}" + (f" ({message})" if message else "")
        )
    return ", ".join(parts) or "the daemon's verdict"


class Management:
    """The daemon's management calls; `clock` is injectable so waits are testable."""

    def __init__(self, daemon: Endpoint, clock: Callable[[], float] = time.monotonic) -> None:
        self.daemon = daemon
        self.clock = clock

    def status(self) -> dict[str, Any]:
        return self.daemon.call("GET", "/v1/status") or {}

    def engines(self) -> list[dict[str, Any]]:
        answer = self.daemon.call("GET", "/v1/engines") or {}
        return list(answer.get("engines") or [])

    def engine(self, engine_id: str) -> dict[str, Any]:
        return self.daemon.call("GET", f"/v1/engines/{segment(engine_id)}") or {}

    def apply_preset(
        self,
        preset: str | Mapping[str, Any],
        wait: bool,
        timeout: float,
        rollback: bool,
    ) -> dict[str, Any]:
        name, document = preset_document(preset)
        cursor = self._event_cursor() if wait else 0
        answer = self.daemon.call(
            "PUT",
            f"/v1/presets/{segment(name)}",
            body=document,
            params={"rollback": None if rollback else "false"},
        )
        answer = dict(answer or {})
        if wait:
            generation = int(answer.get("generation") or 0)
            record = self._wait_generation(name, generation, cursor, timeout)
            answer["verdict"] = record.get("verdict")
        return answer

    def wait_ready(self, engine_id: str, timeout: float) -> dict[str, Any]:
        """The engine's entry once it is ready on its desired spec; ClientError otherwise."""
        deadline = self.clock() + timeout
        cursor = self._event_cursor()
        while True:
            entry = self.engine(engine_id)
            state = entry.get("state")
            wanted, running = entry.get("spec_hash"), entry.get("running_spec_hash")
            if state == "ready" and (wanted is None or running is None or wanted == running):
                return entry
            message = entry.get("message") or "no message"
            if state == "failed":
                raise ClientError(
                    f"engine {engine_id} failed: {message}; `sagellm engine logs {engine_id}`"
                    " shows its log",
                    code="engine_failed",
                )
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise ClientError(
                    f"engine {engine_id} was not ready within {timeout:g} s: it is {state}"
                    f" ({message})",
                    code="timeout",
                )
            cursor = self._wake(cursor, min(POLL_S, remaining), engine_id)

    def _wait_generation(
        self, preset: str, generation: int, cursor: int, timeout: float
    ) -> dict[str, Any]:
        """Follow the generation until the daemon judges it (see docs/api.md, rollouts)."""
        deadline = self.clock() + timeout
        failed_at: float | None = None
        failure = f"preset {preset} did not become ready: generation {generation}"
        while True:
            record = self.daemon.call("GET", f"/v1/generations/{generation}") or {}
            verdict = record.get("verdict") or "no verdict given"
            if record.get("healthy") is True:
                return record
            if record.get("healthy") is False:
                failed_at = self.clock() if failed_at is None else failed_at
                undo = self._rollback_of(generation)
                if undo is not None:
                    raise ClientError(
                        f"{failure} failed: {verdict}; the daemon rolled it back (generation"
                        f" {undo.get('id')} undoes it)",
                        code="rollout_failed",
                    )
                if record.get("auto_rollback") is False:
                    raise ClientError(
                        f"{failure} failed: {verdict}; the failed state is kept (rollback=False)",
                        code="rollout_failed",
                    )
                if self.clock() - failed_at >= ROLLBACK_GRACE_S:
                    raise ClientError(
                        f"{failure} failed: {verdict}; the daemon made no rollback generation",
                        code="rollout_failed",
                    )
            elif record.get("state") == "superseded":
                raise ClientError(f"{failure} was {verdict}", code="superseded")
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise ClientError(
                    f"{failure} had no verdict within {timeout:g} s; waiting for:"
                    f" {_pending(record, self.status())}. The rollout goes on in the daemon",
                    code="timeout",
                )
            wait = min(POLL_S, remaining, 1.0 if failed_at is not None else POLL_S)
            cursor = self._wake(cursor, wait)

    def _rollback_of(self, generation: int) -> dict[str, Any] | None:
        answer = self.daemon.call("GET", "/v1/generations", params={"limit": 100}) or {}
        for record in answer.get("generations") or []:
            if isinstance(record, dict) and record.get("reverts") == generation:
                return record
        return None

    def _event_cursor(self) -> int:
        """The newest event's id, so a wait wakes for exactly what happens after now."""
        answer = self.daemon.call("GET", "/v1/events", params={"limit": 1}) or {}
        ids = [int(e["id"]) for e in answer.get("events") or [] if e.get("id") is not None]
        return int(answer.get("last_id") or max(ids, default=0))

    def _wake(self, cursor: int, wait: float, engine: str | None = None) -> int:
        """Long-poll the events for up to `wait` seconds; the new cursor."""
        seconds = max(1, math.ceil(wait))
        answer = (
            self.daemon.call(
                "GET",
                "/v1/events",
                params={"after": cursor, "wait": seconds, "engine": engine},
                timeout=seconds + LONG_POLL_SLACK_S,
            )
            or {}
        )
        ids = [int(e["id"]) for e in answer.get("events") or [] if e.get("id") is not None]
        return max([cursor, int(answer.get("last_id") or 0), *ids])
