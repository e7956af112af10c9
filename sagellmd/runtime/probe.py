"""HTTP health probes of engines: one GET of the kind's health path on loopback."""

from __future__ import annotations

import asyncio


async def probe_health(
    host: str, port: int, timeout_s: float, path: str = "/health", expected: int | None = None
) -> tuple[bool, str]:
    """(healthy, detail): healthy means an answer within the timeout of status `expected`.

    `expected` None accepts any 2xx status.
    """
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return False, f"GET {path} timed out after {timeout_s:g}s"
    except OSError as exc:
        return False, f"GET {path}: {exc.strerror or exc}"
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"GET {path}: not an HTTP answer"
    status = int(parts[1])
    healthy = 200 <= status < 300 if expected is None else status == expected
    return healthy, f"GET {path} -> {status}"
