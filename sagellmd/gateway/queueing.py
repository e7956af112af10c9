"""The per-model wait queue of the gateway: who runs next when every replica is at its cap.

Pure: the caller passes clock values; the queue never reads the time itself.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections import deque
from dataclasses import dataclass

POLICIES = ("fifo", "priority", "slo", "fair", "adaptive")

_INF = math.inf


@dataclass(slots=True, eq=False)
class Waiter:
    """One request waiting for a slot; `handle` is the gateway's (opaque to the queue)."""

    arrived: float  # clock seconds
    priority: int = 0  # lower runs first (vLLM's convention)
    deadline: float | None = None  # absolute clock time by which the first byte is due (slo)
    client: str = ""  # API key or client id (fair)
    handle: object = None
    seq: int = 0  # arrival order, set by push


class QueueFull(Exception):
    """The model's queue holds `max_waiting` requests already."""

    def __init__(self, max_waiting: int) -> None:
        super().__init__(f"the queue is full ({max_waiting} requests waiting, max_waiting)")
        self.max_waiting = max_waiting


class WaitQueue:
    """Waiters of one model, handed out in the order of a policy (see POLICIES).

    fifo, priority, slo and adaptive keep one list sorted by a key fixed at push time (aging
    included, see `_entry`), stored negated so that pop() takes from the end; an insert or a
    removal is one bisect and one memmove of at most `max_waiting` pointers, and removal is
    exact, so a queue whose requests time out while no engine is ready holds no dead entries.
    fair keeps a FIFO per client and a rotation of the clients that have waiters.
    """

    def __init__(self, policy: str, max_waiting: int, aging_s: float = 10.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown queue policy {policy!r}; known: {', '.join(POLICIES)}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {max_waiting}")
        if not aging_s > 0:
            raise ValueError(f"aging_s must be > 0 seconds (math.inf: no aging), got {aging_s}")
        self.policy = policy
        self.max_waiting = max_waiting
        self.aging_s = aging_s
        self._seq = 0
        self._sorted: list[tuple] = []  # negated keys, ascending: the next waiter is last
        self._entries: dict[Waiter, tuple] = {}
        self._per_client: dict[str, deque[Waiter]] = {}
        self._rotation: deque[str] = deque()  # clients with waiters; the next pop serves [0]
        self._fair_len = 0

    def __len__(self) -> int:
        return self._fair_len if self.policy == "fair" else len(self._sorted)

    def push(self, waiter: Waiter) -> None:
        """Queue `waiter` (it gets the next `seq`); QueueFull when `max_waiting` wait already."""
        if len(self) >= self.max_waiting:
            raise QueueFull(self.max_waiting)
        self._seq += 1
        waiter.seq = self._seq
        if self.policy == "fair":
            queue = self._per_client.get(waiter.client)
            if queue is None:
                queue = self._per_client[waiter.client] = deque()
                self._rotation.append(waiter.client)
            queue.append(waiter)
            self._fair_len += 1
            return
        if waiter in self._entries:
            raise ValueError("this waiter is queued already")
        entry = self._entry(waiter)
        self._entries[waiter] = entry
        insort(self._sorted, entry)

    def pop(self, now: float) -> Waiter | None:
        """The next waiter by the policy, or None when nobody waits.

        `now` is part of the interface so a policy may depend on the time; the present ones
        do not, because their aging is folded into a key fixed at push time.
        """
        if self.policy == "fair":
            return self._pop_fair()
        if not self._sorted:
            return None
        waiter = self._sorted.pop()[-1]
        del self._entries[waiter]
        return waiter

    def remove(self, waiter: Waiter) -> bool:
        """Take out a waiter that left (timeout, client gone); False when it was not queued."""
        if self.policy == "fair":
            queue = self._per_client.get(waiter.client)
            if queue is None:
                return False
            try:
                queue.remove(waiter)  # identity compare (eq=False): a C scan of one client
            except ValueError:
                return False
            self._fair_len -= 1
            if not queue:
                del self._per_client[waiter.client]
                self._rotation.remove(waiter.client)
            return True
        entry = self._entries.pop(waiter, None)
        if entry is None:
            return False
        index = bisect_left(self._sorted, entry)
        del self._sorted[index]
        return True

    def ahead_of(self, waiter: Waiter) -> int:
        """How many queued waiters pop() hands out before `waiter`, if nobody else arrives.

        For a waiter not queued yet, as if it were pushed now (the slo admission check).
        """
        if self.policy == "fair":
            return self._ahead_fair(waiter)
        entry = self._entries.get(waiter)
        if entry is None:
            entry = self._entry(waiter, seq=self._seq + 1)
        # Negated keys: those that run first are the larger ones, after `entry` in the list.
        return len(self._sorted) - bisect_right(self._sorted, entry)

    def _entry(self, waiter: Waiter, seq: int | None = None) -> tuple:
        """The waiter's sort key, negated (the next waiter sorts last), then the waiter."""
        neg_seq = -(waiter.seq if seq is None else seq)
        policy = self.policy
        if policy == "fifo":
            return (neg_seq, waiter)
        if policy == "priority":
            # Aging: effective = priority - (now - arrived) / aging_s orders the waiters the same
            # at every `now` as priority + arrived / aging_s, a constant per waiter.
            return (-(waiter.priority + waiter.arrived / self.aging_s), neg_seq, waiter)
        deadline = waiter.deadline
        if deadline is None:
            deadline = _INF
        elif deadline != deadline:
            raise ValueError("a waiter's deadline must be a number of clock seconds, got NaN")
        if policy == "slo":
            return (-deadline, neg_seq, waiter)
        # adaptive: the class ages one step per aging_s epoch, so a class keeps its members
        # together for the deadline order and still never starves behind newer urgent work.
        age_class = waiter.priority + math.floor(waiter.arrived / self.aging_s)
        return (-age_class, -deadline, neg_seq, waiter)

    def _pop_fair(self) -> Waiter | None:
        if not self._rotation:
            return None
        client = self._rotation.popleft()
        queue = self._per_client[client]
        waiter = queue.popleft()
        self._fair_len -= 1
        if queue:
            self._rotation.append(client)
        else:
            del self._per_client[client]
        return waiter

    def _ahead_fair(self, waiter: Waiter) -> int:
        # Round r serves the r-th waiter of each client in rotation order.
        own = self._per_client.get(waiter.client)
        if own is None:
            rounds, position = 0, len(self._rotation)
        else:
            try:
                rounds = own.index(waiter)
            except ValueError:
                rounds = len(own)
            position = self._rotation.index(waiter.client)
        ahead = rounds
        for index, client in enumerate(self._rotation):
            if client == waiter.client:
                continue
            served = rounds + 1 if index < position else rounds
            ahead += min(len(self._per_client[client]), served)
        return ahead
