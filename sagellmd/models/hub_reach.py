"""Whether the Hugging Face hub answers: probed in a thread, the answer kept for a while."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sagellmd.models.download import DownloadError, probe_hub

# A reachable hub is asked again after this long, an unreachable one sooner.
REACHABLE_TTL_S = 300.0
UNREACHABLE_TTL_S = 15.0
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class HubAnswer:
    reachable: bool
    detail: str
    at: float


class HubReachability:
    """Answers from memory; a missing or stale answer starts a probe and says None for now."""

    def __init__(
        self,
        wake: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        probe: Callable[[str, float], None] = probe_hub,
    ) -> None:
        self._wake = wake
        self._clock = clock
        self._probe = probe
        self._answers: dict[str, HubAnswer] = {}
        self._checking: set[str] = set()
        self._lock = threading.Lock()

    def answer(self, endpoint: str) -> HubAnswer | None:
        with self._lock:
            found = self._answers.get(endpoint)
            if found is not None:
                ttl = REACHABLE_TTL_S if found.reachable else UNREACHABLE_TTL_S
                if self._clock() - found.at < ttl:
                    return found
            if endpoint in self._checking:
                return None
            self._checking.add(endpoint)
        loop = asyncio.get_running_loop()
        # A thread: DNS and a firewall that drops packets block for seconds, and the
        # reconcile loop shares the event loop with the API.
        threading.Thread(
            target=self._check, args=(endpoint, loop), name="sagellm-hub-check", daemon=True
        ).start()
        return None

    def _check(self, endpoint: str, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._probe(endpoint, PROBE_TIMEOUT_S)
            answer = HubAnswer(True, "answers", self._clock())
        except DownloadError as exc:
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause is not None else exc.message
            answer = HubAnswer(False, detail, self._clock())
        except Exception as exc:  # a probe bug must not leave the engine waiting forever
            answer = HubAnswer(False, f"{type(exc).__name__}: {exc}", self._clock())
        with self._lock:
            self._answers[endpoint] = answer
            self._checking.discard(endpoint)
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)
