"""HTTP health probes of engines: one GET of the kind's health path on loopback."""

from __future__ import annotations

from sagellmd.runtime.engine_calls import engine_status


async def probe_health(
    host: str, port: int, timeout_s: float, path: str = "/health", expected: int | None = None
) -> tuple[bool, str]:
    """(healthy, detail): healthy means an answer within the timeout of status `expected`.

    `expected` None accepts any 2xx status.
    """
    status, detail = await engine_status("GET", host, port, path, timeout_s)
    if status is None:
        return False, detail
    healthy = 200 <= status < 300 if expected is None else status == expected
    return healthy, detail
