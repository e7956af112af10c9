"""Admission and queueing: at most an engine's cap in flight, the rest wait in order by policy."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from sagellmd.gateway import errors
from sagellmd.gateway.admission import slo_rejection
from sagellmd.gateway.balance import KvLoad, Replica, choose
from sagellmd.gateway.queueing import QueueFull, Waiter, WaitQueue
from sagellmd.gateway.routes import ModelGroup, Route, RouteTable
from sagellmd.gateway.waiting import GroupQueue, Pending, Ticket

FIRST_BYTE_SMOOTHING = 0.2
# States of an engine that will be ready without anyone's help, or on demand (idle).
COMING_UP = frozenset({"idle", "starting", "pending", "absent"})


class Dispatcher:
    """Hands requests to engines; `release` of a slot dispatches the next waiter at once."""

    def __init__(
        self,
        policy: str,
        balance: str,
        max_waiting: int,
        timeout_s: float,
        suspect_s: float,
        aging_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.balance = balance
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self.suspect_s = suspect_s
        self.aging_s = aging_s
        self.clock = clock
        self.rng = rng or random.Random()
        self.table = RouteTable()
        self.inflight: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.last_request_at: dict[str, float] = {}
        self.suspect_until: dict[str, float] = {}
        self.kv_loads: dict[str, KvLoad] = {}
        self.queues: dict[tuple[str, ...], GroupQueue] = {}
        self._queues_of_engine: dict[str, list[GroupQueue]] = {}
        # Called when a request waits for a model none of whose engines is ready (demand).
        self.on_demand: Callable[[str], None] = lambda name: None
        # Called when an engine the daemon may stop when idle gets its first request.
        self.on_busy: Callable[[str], None] = lambda engine_id: None
        self.changes = 0
        # Requests that found an engine gone and wait for the daemon's next table.
        self.table_waiters: list[asyncio.Future[None]] = []

    # -- the route table -------------------------------------------------------------

    def set_table(self, table: RouteTable) -> None:
        previous = self.table.engines
        for engine_id, route in table.engines.items():
            if previous.get(engine_id) != route:
                # The daemon has news of it (a restart, a probe): its word beats suspicion.
                self.suspect_until.pop(engine_id, None)
        self.table = table
        self._queues_of_engine = {}
        for queue in self.queues.values():
            for engine_id in queue.group.engine_ids:
                self._queues_of_engine.setdefault(engine_id, []).append(queue)
        self.changes += 1
        for queue in list(self.queues.values()):
            self._follow_names(queue)
        for queue in list(self.queues.values()):
            self._dispatch(queue)
        waiters, self.table_waiters = self.table_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _follow_names(self, queue: GroupQueue) -> None:
        """Waiters whose name now routes to other engines (a replica added) move there."""
        if not len(queue.queue):
            queue.names.clear()
            return
        for name in sorted(queue.names):
            group = self.table.waits_in(name)
            if group is None or group.key == queue.group.key:
                continue
            target = self._queue_for(group, name)
            target.names.add(name)
            moved = []
            while (waiter := queue.queue.pop(self.clock())) is not None:
                moved.append(waiter)
            for waiter in moved:
                pending: Pending = waiter.handle  # type: ignore[assignment]
                try:
                    target.queue.push(waiter)
                    pending.home = target
                except QueueFull:
                    if not pending.future.done():
                        pending.future.set_exception(errors.queue_full(name, self.max_waiting))
            queue.names.clear()
            return

    def mark_suspect(self, engine_id: str) -> None:
        self.suspect_until[engine_id] = self.clock() + self.suspect_s

    # -- choosing ----------------------------------------------------------------------

    def _replicas(self, group: ModelGroup, tried: set[str] | None) -> list[Replica]:
        engines, now = self.table.engines, self.clock()
        ready, trusted = [], []
        for engine_id in group.engine_ids:
            route = engines.get(engine_id)
            if route is None or not route.ready:
                continue
            if tried and engine_id in tried:
                continue
            replica = Replica(
                engine_id,
                self.inflight.get(engine_id, 0),
                route.cap,
                route.cost,
                self.kv_loads.get(engine_id),
            )
            ready.append(replica)
            until = self.suspect_until.get(engine_id)
            if until is None or until <= now:
                trusted.append(replica)
        # When every ready engine is suspect, suspicion would only turn requests away.
        return trusted or ready

    def _take(self, group: ModelGroup, ticket: Ticket, key: bytes | None) -> Route | None:
        replicas = self._replicas(group, ticket.tried)
        if not replicas:
            return None
        chosen = choose(self.balance, replicas, self.clock(), key, self.rng)
        if chosen is None:
            return None
        engine_id = chosen.engine_id
        before = self.inflight.get(engine_id, 0)
        self.inflight[engine_id] = before + 1
        if before == 0 and self.table.engines[engine_id].idle_able:
            # The daemon may evict an idle-able engine it thinks unused: tell it now, not at
            # the next report, that this one serves a request.
            self.on_busy(engine_id)
        self.requests[engine_id] = self.requests.get(engine_id, 0) + 1
        self.last_request_at[engine_id] = time.time()
        self.changes += 1
        ticket.tried.add(engine_id)
        return self.table.engines[engine_id]

    def _queue_for(self, group: ModelGroup, name: str) -> GroupQueue:
        queue = self.queues.get(group.key)
        if queue is None:
            policy = self._policy_of(group)
            # Named for the model its engines serve, not for whichever name came first (an
            # alias, an engine id): the activity report and /metrics count queues per model.
            first = self.table.engines.get(group.engine_ids[0]) if group.engine_ids else None
            model = first.served_model if first is not None else name
            queue = GroupQueue(
                group, model, WaitQueue(policy, self.max_waiting, self.aging_s), policy
            )
            self.queues[group.key] = queue
            for engine_id in group.engine_ids:
                self._queues_of_engine.setdefault(engine_id, []).append(queue)
        return queue

    def _policy_of(self, group: ModelGroup) -> str:
        for engine_id in group.engine_ids:
            route = self.table.engines.get(engine_id)
            if route is not None and route.policy:
                return route.policy
        return self.policy

    def slo_default_ms(self, group: ModelGroup) -> float | None:
        for engine_id in group.engine_ids:
            route = self.table.engines.get(engine_id)
            if route is not None and route.slo_ttft_ms is not None:
                return route.slo_ttft_ms
        return None

    def any_ready(self, group: ModelGroup) -> bool:
        engines = self.table.engines
        return any(
            engines[engine_id].ready for engine_id in group.engine_ids if engine_id in engines
        )

    # -- acquiring and releasing -------------------------------------------------------

    async def acquire(
        self, group: ModelGroup, name: str, ticket: Ticket, key: bytes | None = None
    ) -> Route:
        """An engine with a free slot for this request, waiting in the queue when none has."""
        queue = self.queues.get(group.key) or self._queue_for(group, name)
        if not len(queue.queue):
            route = self._take(group, ticket, key)
            if route is None and ticket.tried:
                # A retry whose free engines it tried all: as in _dispatch, it may try them
                # again; queued, nothing would wake it (the only engine may have no request).
                ticket.tried.clear()
                route = self._take(group, ticket, key)
            if route is not None:
                queue.drain.record(self.clock())
                return route
        now = self.clock()
        if ticket.deadline is not None:
            # Every slot is busy: the one to free first is ahead of this request too.
            reason = slo_rejection(
                ticket.deadline - queue.first_byte_s,
                now,
                len(queue.queue) + 1,
                queue.drain.per_second(now),
                0,
            )
            if reason is not None:
                raise errors.slo_unreachable(reason)
        future: asyncio.Future[Route] = asyncio.get_running_loop().create_future()
        pending = Pending(future, ticket, key, queue)
        waiter = Waiter(ticket.arrived, ticket.priority, ticket.deadline, ticket.client, pending)
        try:
            queue.queue.push(waiter)
        except QueueFull:
            raise errors.queue_full(name, self.max_waiting) from None
        queue.names.add(name)
        self.changes += 1
        if not self.any_ready(group):
            self.on_demand(name)
        handed = False
        limit_s = self.wait_limit_s(group)
        try:
            route = await asyncio.wait_for(future, limit_s)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Python 3.11's wait_for returns a result that came as the task was cancelled,
                # swallowing the cancel: the client has left all the same.
                raise asyncio.CancelledError
            handed = True
            return route
        except TimeoutError:
            if future.done() and not future.cancelled():
                # Handed a slot just as the time ran out (3.12's wait_for raises): serve it.
                handed = True
                return future.result()
            raise errors.queue_timeout(name, limit_s, self._why_waiting(group)) from None
        finally:
            ticket.queued_s = self.clock() - now
            if not future.done() or future.cancelled() or future.exception() is not None:
                pending.home.queue.remove(waiter)
                self.changes += 1
            elif not handed and future.exception() is None:
                # Cancelled (the client left) just as it was handed a slot: give it back.
                self.release(future.result().id)

    def wait_limit_s(self, group: ModelGroup) -> float:
        """How long a request may wait: an engine that is coming up gets its startup timeout."""
        if self.any_ready(group):
            return self.timeout_s
        limit = self.timeout_s
        for engine_id in group.engine_ids:
            route = self.table.engines.get(engine_id)
            if route is not None and route.state in COMING_UP:
                limit = max(limit, route.startup_timeout_s)
        return limit

    def coming_up(self, group: ModelGroup) -> str | None:
        """The engine a request waits for when none is ready but one starts (or can start)."""
        if self.any_ready(group):
            return None
        for engine_id in group.engine_ids:
            route = self.table.engines.get(engine_id)
            if route is not None and route.state in COMING_UP:
                return engine_id
        return None

    def demand(self) -> dict[str, int]:
        """Requests waiting per engine for models none of whose engines is ready."""
        wanted: dict[str, int] = {}
        for queue in self.queues.values():
            waiting = len(queue.queue)
            if waiting and not self.any_ready(queue.group):
                for engine_id in queue.group.engine_ids:
                    wanted[engine_id] = wanted.get(engine_id, 0) + waiting
        return wanted

    def _why_waiting(self, group: ModelGroup) -> str:
        states = []
        for engine_id in group.engine_ids:
            route = self.table.engines.get(engine_id)
            if route is None:
                continue
            if route.ready:
                states.append(f"{engine_id} busy ({self.inflight.get(engine_id, 0)}/{route.cap})")
            else:
                detail = f": {route.message}" if route.message else ""
                states.append(f"{engine_id} {route.state}{detail}")
        return "; ".join(states) or "no engine"

    def observe_first_byte(self, group: ModelGroup, seconds: float) -> None:
        queue = self.queues.get(group.key)
        if queue is not None:
            queue.first_byte_s += (seconds - queue.first_byte_s) * FIRST_BYTE_SMOOTHING

    def release(self, engine_id: str) -> None:
        count = self.inflight.get(engine_id, 0) - 1
        self.inflight[engine_id] = max(0, count)
        self.changes += 1
        for queue in self._queues_of_engine.get(engine_id, ()):
            if len(queue.queue):
                self._dispatch(queue)

    def _dispatch(self, queue: GroupQueue) -> None:
        while len(queue.queue):
            if not any(r.inflight < r.cap for r in self._replicas(queue.group, None)):
                return
            waiter = queue.queue.pop(self.clock())
            if waiter is None:
                return
            pending: Pending = waiter.handle  # type: ignore[assignment]
            future, ticket = pending.future, pending.ticket
            if future.done():
                continue
            route = self._take(queue.group, ticket, pending.key)
            if route is None:
                # Every free engine was tried by this request already: let it try them again.
                ticket.tried.clear()
                route = self._take(queue.group, ticket, pending.key)
            if route is None:
                queue.queue.push(waiter)
                return
            queue.drain.record(self.clock())
            future.set_result(route)

    # -- what the daemon and /metrics are told -----------------------------------------

    def queued_for(self, engine_id: str) -> int:
        return sum(len(queue.queue) for queue in self._queues_of_engine.get(engine_id, ()))

    def queue_lengths(self) -> dict[str, int]:
        lengths: dict[str, int] = {}
        for queue in self.queues.values():
            # An engine id of one replica has its own queue: it waits for the same model.
            lengths[queue.name] = lengths.get(queue.name, 0) + len(queue.queue)
        return lengths
