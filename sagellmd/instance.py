"""The observed state of one engine's process and every legal transition of it.

Over ~500 lines on purpose: the whole state machine (the table, the one check, and every
transition as one function) reads in one place, which is what makes an illegal one easy to see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sagellmd.backoff import backoff_delay


class InstanceState(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    # Nobody uses it (an on-demand engine before its first request, or idle_s passed): no
    # process, or (idle_action: sleep) a process asleep, its GPU memory released.
    IDLE = "idle"


LIVE_STATES = frozenset({InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY})
# A process may exist in these states (STOPPING: it is on its way out).
PROCESS_STATES = LIVE_STATES | {InstanceState.STOPPING}
# A crash-looping engine keeps its GPU memory so nothing else takes it between restarts.
RESERVING_STATES = PROCESS_STATES | {InstanceState.BACKOFF}


class StopIntent(StrEnum):
    """Why a stop was asked for; decides what the exit means."""

    # Asked for on purpose (no longer desired, replaced, restarted, the daemon stopping):
    # the exit is no crash, and the engine stays stopped until it is desired again.
    DELIBERATE = "deliberate"
    FAILURE = "failure"  # unhealthy or too slow: the exit counts as a crash
    # Nobody used it for idle_s, or it makes room for a demanded engine: the exit leaves it
    # idle, started again on the next request.
    IDLE = "idle"
    # Being put to sleep (POST /sleep): the process stays; it is idle once the call returns.
    SLEEP = "sleep"

    @classmethod
    def _missing_(cls, value: object) -> StopIntent | None:
        # Instance rows written before the rename say "remove".
        return cls.DELIBERATE if value == "remove" else None


@dataclass(frozen=True)
class Retiring:
    """The previous process of an engine, serving until its replacement is ready."""

    pid: int
    create_time: float
    port: int | None
    spec_hash: str
    gpus: tuple[int, ...] = ()
    gpu_bytes: int = 0
    # The cluster node it runs on (None: the daemon's own machine).
    node: str | None = None


@dataclass(frozen=True)
class Instance:
    """One engine's process slot as the daemon last observed it."""

    engine_id: str
    generation: int
    spec_hash: str
    state: InstanceState
    message: str = ""
    pid: int | None = None
    create_time: float | None = None
    port: int | None = None
    restarts: int = 0
    failures: int = 0
    last_exit_code: int | None = None
    last_exit_signal: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    exited_at: float | None = None
    stop_intent: StopIntent | None = None
    gpus: tuple[int, ...] = ()
    gpu_bytes: int = 0
    retiring: Retiring | None = None
    # The KV side-channel ports a prefill or decode instance binds beside its HTTP port.
    side_ports: tuple[int, ...] = ()
    # The cluster node its process runs on (None: the daemon's own machine); `gpus` are
    # that node's GPU indices.
    node: str | None = None
    # An engine spanning nodes (vLLM's Ray executor): each node's GPUs, the leader's first;
    # `node` and `gpus` are the leader's share.
    spans: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def asleep(self) -> bool:
        """Idle with its process kept (vLLM sleep mode): a wake, not a start, brings it back."""
        return self.state is InstanceState.IDLE and self.pid is not None

    @property
    def holds_gpus(self) -> bool:
        """Its GPU reservation stands (released once stopped, failed or pending)."""
        return bool(self.gpus) and self.state in RESERVING_STATES


@dataclass(frozen=True)
class Transition:
    """A new instance value and the event that records the change."""

    instance: Instance
    event_type: str
    message: str
    # The whole text behind a shortened message, kept with the event.
    details: Mapping[str, Any] | None = None


class IllegalTransitionError(Exception):
    pass


ALLOWED: dict[InstanceState | None, frozenset[InstanceState]] = {
    None: frozenset({InstanceState.STARTING, InstanceState.PENDING, InstanceState.IDLE}),
    InstanceState.PENDING: frozenset(
        {InstanceState.STARTING, InstanceState.PENDING, InstanceState.IDLE}
    ),
    InstanceState.STARTING: frozenset(
        {
            InstanceState.READY,
            InstanceState.UNHEALTHY,
            InstanceState.STOPPING,
            InstanceState.BACKOFF,
            InstanceState.STOPPED,
            InstanceState.FAILED,
        }
    ),
    InstanceState.READY: frozenset(
        {
            InstanceState.UNHEALTHY,
            InstanceState.STOPPING,
            InstanceState.BACKOFF,
            InstanceState.STOPPED,
            InstanceState.FAILED,
        }
    ),
    InstanceState.UNHEALTHY: frozenset(
        {
            InstanceState.READY,
            InstanceState.STOPPING,
            InstanceState.BACKOFF,
            InstanceState.STOPPED,
            InstanceState.FAILED,
        }
    ),
    InstanceState.STOPPING: frozenset(
        {InstanceState.STOPPED, InstanceState.BACKOFF, InstanceState.FAILED, InstanceState.IDLE}
    ),
    InstanceState.BACKOFF: frozenset({InstanceState.STARTING, InstanceState.PENDING}),
    InstanceState.STOPPED: frozenset(
        {InstanceState.STARTING, InstanceState.PENDING, InstanceState.IDLE}
    ),
    InstanceState.FAILED: frozenset({InstanceState.STARTING, InstanceState.PENDING}),
    # Started (or woken: STARTING with the asleep process), made room for (PENDING), its
    # spec or its sleeping process's end recorded (IDLE), or its sleeping process stopped.
    InstanceState.IDLE: frozenset(
        {
            InstanceState.STARTING,
            InstanceState.PENDING,
            InstanceState.IDLE,
            InstanceState.STOPPING,
        }
    ),
}


@dataclass(frozen=True)
class SideChange:
    """A change that is no move along ALLOWED: it keeps the state, or (a surge) starts a
    second process beside the running one. As moves they would be STARTING -> STARTING or
    READY -> STARTING, which would let `begin_start` run two processes for one engine."""

    states: frozenset[InstanceState]
    # None: the state stays what it is.
    target: InstanceState | None
    holds: Callable[[Instance], bool]
    needs: str


SIDE_CHANGES: dict[str, SideChange] = {
    "record the process": SideChange(
        frozenset({InstanceState.STARTING}),
        None,
        lambda current: current.pid is None,
        "a start in progress with no process yet",
    ),
    "surge": SideChange(
        frozenset({InstanceState.READY}),
        InstanceState.STARTING,
        lambda current: current.pid is not None and current.retiring is None,
        "a ready process and no surge under way",
    ),
    # The previous process of a surge may end whatever its replacement is doing.
    "retire the previous process": SideChange(
        frozenset(InstanceState),
        None,
        lambda current: current.retiring is not None,
        "one",
    ),
}


def _check(current: Instance | None, target: InstanceState, side: str | None = None) -> None:
    """The one transition check: a move along ALLOWED, or the named side change."""
    state = current.state if current else None
    if side is None:
        legal = target in ALLOWED[state]
        why = ""
    else:
        change = SIDE_CHANGES[side]
        legal = (
            current is not None
            and current.state in change.states
            and target is (change.target or current.state)
            and change.holds(current)
        )
        why = f" ({side}: needs {change.needs})"
    if not legal:
        engine = current.engine_id if current else "?"
        raise IllegalTransitionError(f"{engine}: {state} -> {target.value} is not allowed{why}")


def begin_start(
    current: Instance | None,
    engine_id: str,
    spec_hash: str,
    generation: int,
    port: int,
    now: float,
    counts_as_restart: bool,
    gpus: tuple[int, ...] = (),
    gpu_bytes: int = 0,
    waking: str | None = None,
    node: str | None = None,
    spans: tuple[tuple[str, tuple[int, ...]], ...] = (),
) -> Transition:
    """Intent to spawn, with the GPUs reserved for it: written before the process exists.

    `waking` says why an idle engine starts (`waking: 3 requests waiting`)."""
    _check(current, InstanceState.STARTING)
    if current is not None and current.asleep:
        # A second process beside the sleeping one: it must be woken (begin_wake) or stopped.
        raise IllegalTransitionError(
            f"{engine_id}: idle -> starting is not allowed (pid {current.pid} is asleep: wake it)"
        )
    replaced = current is not None and current.spec_hash != spec_hash
    base = current if current is not None and not replaced else None
    restarts = (base.restarts if base else 0) + (1 if counts_as_restart else 0)
    instance = Instance(
        engine_id=engine_id,
        generation=generation,
        spec_hash=spec_hash,
        state=InstanceState.STARTING,
        message="starting",
        port=port,
        restarts=restarts,
        failures=base.failures if base else 0,
        last_exit_code=base.last_exit_code if base else None,
        last_exit_signal=base.last_exit_signal if base else None,
        exited_at=base.exited_at if base else None,
        started_at=now,
        gpus=gpus,
        gpu_bytes=gpu_bytes,
        retiring=current.retiring if current is not None else None,
        node=node,
        spans=spans,
    )
    kind = "restarting" if counts_as_restart else "starting"
    note = f", restart #{restarts}" if counts_as_restart else ""
    if spans:
        note += ", across " + " + ".join(
            f"{name} {','.join(f'GPU{gpu}' for gpu in gpus)}" for name, gpus in spans
        )
    elif node is not None:
        note += f", on node {node}"
    if gpus and not spans:
        placed = ",".join(f"GPU{gpu}" for gpu in gpus)
        note += f", {placed} x {gpu_bytes / 1024**3:.1f} GiB"
    if waking:
        instance = replace(instance, message=waking)
        return Transition(instance, "waking", f"{waking}; port {port}{note}")
    return Transition(instance, kind, f"port {port}{note}")


def spawned(
    current: Instance, pid: int, create_time: float, health_path: str = "/health"
) -> Transition:
    _check(current, current.state, "record the process")
    instance = replace(
        current, pid=pid, create_time=create_time, message=f"waiting for {health_path}"
    )
    return Transition(instance, "started", f"pid {pid} on port {current.port}")


def spawn_failed(
    current: Instance, reason: str, now: float, next_state: InstanceState
) -> Transition:
    if next_state not in (InstanceState.BACKOFF, InstanceState.FAILED):
        raise IllegalTransitionError(f"{current.engine_id}: a failed spawn cannot be {next_state}")
    _check(current, next_state)
    instance = replace(
        current,
        state=next_state,
        failures=current.failures + 1,
        exited_at=now,
        message=f"cannot start: {reason}",
        pid=None,
        create_time=None,
    )
    return Transition(
        instance,
        "failed" if next_state is InstanceState.FAILED else "exited",
        f"cannot start: {reason}",
    )


def became_ready(current: Instance, now: float) -> Transition:
    _check(current, InstanceState.READY)
    took = now - current.started_at if current.started_at else 0.0
    instance = replace(current, state=InstanceState.READY, ready_at=now, message="healthy")
    if current.state is InstanceState.UNHEALTHY:
        return Transition(instance, "ready", "health check passes again")
    return Transition(instance, "ready", f"healthy after {took:.1f}s")


def became_unhealthy(current: Instance, reason: str) -> Transition:
    _check(current, InstanceState.UNHEALTHY)
    instance = replace(current, state=InstanceState.UNHEALTHY, message=reason)
    return Transition(instance, "unhealthy", reason)


def made_pending(
    current: Instance | None, engine_id: str, spec_hash: str, generation: int, reason: str
) -> Transition:
    _check(current, InstanceState.PENDING)
    if current is None:
        instance = Instance(
            engine_id=engine_id,
            generation=generation,
            spec_hash=spec_hash,
            state=InstanceState.PENDING,
            message=reason,
        )
    else:
        # A new spec starts its crash count afresh: the rollout judge reads `failures` as
        # exits of the spec it runs now.
        fresh = current.spec_hash != spec_hash
        instance = replace(
            current,
            state=InstanceState.PENDING,
            message=reason,
            spec_hash=spec_hash,
            generation=generation,
            pid=None,
            create_time=None,
            failures=0 if fresh else current.failures,
        )
    return Transition(instance, "pending", reason)


def begin_stop(current: Instance, intent: StopIntent, reason: str) -> Transition:
    _check(current, InstanceState.STOPPING)
    instance = replace(current, state=InstanceState.STOPPING, stop_intent=intent, message=reason)
    return Transition(instance, "stopping", reason)


def describe_exit(code: int | None, signal: int | None) -> str:
    if signal is not None:
        return f"signal {signal}"
    if code is None:
        return "exit status unknown (process was not our child)"
    return f"exit code {code}"


def exited(
    current: Instance,
    code: int | None,
    signal: int | None,
    now: float,
    restart_policy: str,
    reset_after_s: float,
    backoff_base_s: float,
    backoff_max_s: float,
    clean_signals: frozenset[int] = frozenset(),
) -> Transition:
    """The process is gone: decide stopped, failed or backoff from intent and policy.

    `clean_signals` are the signals the engine's kind dies of after a graceful shutdown.
    """
    how = describe_exit(code, signal)
    common = dict(
        pid=None,
        create_time=None,
        last_exit_code=code,
        last_exit_signal=signal,
        exited_at=now,
        stop_intent=None,
    )
    if current.state is InstanceState.IDLE or (
        current.state is InstanceState.STOPPING
        and current.stop_intent in (StopIntent.IDLE, StopIntent.SLEEP)
    ):
        # Stopped for being idle (or to make room), or a sleeping process that ended: idle,
        # as the message of its stop says; the next request starts it afresh.
        _check(current, InstanceState.IDLE)
        message = current.message if current.state is InstanceState.STOPPING else how
        if current.state is InstanceState.IDLE:
            message = f"{current.message}; its sleeping process ended ({how})"
        idle = replace(current, state=InstanceState.IDLE, message=message, **common)
        return Transition(idle, "idle", f"{how}; {message}")
    if current.state is InstanceState.STOPPING and current.stop_intent is StopIntent.DELIBERATE:
        _check(current, InstanceState.STOPPED)
        # The intent stays recorded: the planner starts a deliberately stopped engine
        # again if it is desired, but not one its restart policy left stopped.
        stopped = replace(current, state=InstanceState.STOPPED, message="stopped", **common)
        return Transition(replace(stopped, stop_intent=StopIntent.DELIBERATE), "stopped", how)
    clean = (code == 0 or signal in clean_signals) and current.stop_intent is not StopIntent.FAILURE
    stayed_up = current.ready_at is not None and now - current.ready_at >= reset_after_s
    # Every unexpected exit counts toward the backoff, clean ones too: an engine
    # that keeps exiting 0 must not be respawned in a tight loop.
    failures = 1 if stayed_up else current.failures + 1
    if restart_policy == "always" or (restart_policy == "on-failure" and not clean):
        delay = backoff_delay(failures, backoff_base_s, backoff_max_s)
        note = "restarting now" if delay == 0 else f"next start in {delay:g}s"
        target = InstanceState.BACKOFF
    elif clean:
        target, note = InstanceState.STOPPED, f"not restarted (restart: {restart_policy})"
    else:
        target, note = InstanceState.FAILED, f"not restarted (restart: {restart_policy})"
    _check(current, target)
    reason = current.message if current.stop_intent is StopIntent.FAILURE else how
    instance = replace(
        current, state=target, failures=failures, message=f"{reason}; {note}", **common
    )
    return Transition(
        instance, "exited", f"{how} ({reason}); {note}" if reason != how else f"{how}; {note}"
    )


def lost(current: Instance, node: str, now: float, restart_policy: str) -> Transition:
    """Its node is gone, and its process with it (or out of reach): placed again where it
    fits, as a restart. Not the engine's failure: neither its backoff nor a rollout's
    verdict counts it."""
    what = f"pid {current.pid}" if current.pid is not None else "its start"
    message = f"lost: node {node} is gone ({what} with it)"
    target = InstanceState.FAILED if restart_policy == "never" else InstanceState.BACKOFF
    _check(current, target)
    note = "not restarted (restart: never)" if restart_policy == "never" else "placing it again"
    instance = replace(
        current,
        state=target,
        message=f"{message}; {note}",
        pid=None,
        create_time=None,
        exited_at=now,
        stop_intent=None,
        last_exit_code=None,
        last_exit_signal=None,
    )
    return Transition(instance, "lost", f"{message}; {note}")


def made_idle(
    current: Instance | None, engine_id: str, spec_hash: str, generation: int, reason: str
) -> Transition:
    """Idle without a process: an on-demand engine before its first request (or one whose
    spec changed while idle, or whose wait for room ended without a request left)."""
    _check(current, InstanceState.IDLE)
    if current is not None and current.asleep and current.spec_hash != spec_hash:
        raise IllegalTransitionError(
            f"{engine_id}: a sleeping process keeps its spec; stop it before changing it"
        )
    if current is None:
        instance = Instance(
            engine_id=engine_id,
            generation=generation,
            spec_hash=spec_hash,
            state=InstanceState.IDLE,
            message=reason,
        )
    else:
        fresh = current.spec_hash != spec_hash
        instance = replace(
            current,
            state=InstanceState.IDLE,
            message=reason,
            spec_hash=spec_hash,
            generation=generation,
            stop_intent=None,
            failures=0 if fresh else current.failures,
        )
    return Transition(instance, "idle", reason)


def fell_asleep(current: Instance, reason: str) -> Transition:
    """POST /sleep returned: the process stays, its GPU memory (and reservation) is free."""
    _check(current, InstanceState.IDLE)
    if current.stop_intent is not StopIntent.SLEEP or current.pid is None:
        raise IllegalTransitionError(f"{current.engine_id}: asleep without a sleep asked for")
    instance = replace(current, state=InstanceState.IDLE, stop_intent=None, message=reason)
    return Transition(instance, "idle", f"pid {current.pid} asleep; {reason}")


def begin_wake(
    current: Instance,
    now: float,
    waiting: int,
    gpus: tuple[int, ...] = (),
    gpu_bytes: int = 0,
) -> Transition:
    """The sleeping process is asked to wake (POST /wake_up): starting again, with the GPUs
    reserved again; the health probe makes it ready."""
    _check(current, InstanceState.STARTING)
    if not current.asleep:
        raise IllegalTransitionError(f"{current.engine_id}: only a sleeping process wakes")
    message = f"waking: {waiting} requests waiting"
    instance = replace(
        current,
        state=InstanceState.STARTING,
        message=message,
        started_at=now,
        ready_at=None,
        stop_intent=None,
        gpus=gpus or current.gpus,
        gpu_bytes=gpu_bytes or current.gpu_bytes,
    )
    return Transition(instance, "waking", f"{message}; pid {current.pid}")


def begin_surge(
    current: Instance,
    spec_hash: str,
    generation: int,
    port: int,
    now: float,
    gpus: tuple[int, ...] = (),
    gpu_bytes: int = 0,
    node: str | None = None,
) -> Transition:
    """Start-then-stop: the running process retires, serving until the new one is ready."""
    _check(current, InstanceState.STARTING, "surge")
    assert current.pid is not None  # the check above
    retiring = Retiring(
        current.pid,
        current.create_time or 0.0,
        current.port,
        current.spec_hash,
        current.gpus,
        current.gpu_bytes,
        current.node,
    )
    instance = Instance(
        engine_id=current.engine_id,
        generation=generation,
        spec_hash=spec_hash,
        state=InstanceState.STARTING,
        message=f"starting; pid {current.pid} serves until this one is ready",
        port=port,
        started_at=now,
        gpus=gpus,
        gpu_bytes=gpu_bytes,
        retiring=retiring,
        node=node,
    )
    note = f"port {port}, replacing pid {current.pid} once ready"
    return Transition(instance, "starting", note)


def retired(current: Instance, how: str) -> Transition:
    """The previous process is gone."""
    _check(current, current.state, "retire the previous process")
    assert current.retiring is not None  # the check above
    instance = replace(current, retiring=None)
    return Transition(instance, "stopped", f"previous pid {current.retiring.pid}: {how}")


def retiring_key(engine_id: str) -> str:
    """The key the process watcher uses for an engine's retiring process."""
    return f"{engine_id}#retiring"
