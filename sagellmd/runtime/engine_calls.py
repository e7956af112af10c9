"""Management calls to an engine on loopback (vLLM's POST /sleep and /wake_up): one request,
its status, no body sent."""

from __future__ import annotations

import asyncio


async def post_engine(host: str, port: int, path: str, timeout_s: float) -> tuple[bool, str]:
    """(ok, detail): ok means a 2xx answer within the timeout."""
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return False, f"POST {path} timed out after {timeout_s:g}s"
    except OSError as exc:
        return False, f"POST {path}: {exc.strerror or exc}"
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"POST {path}: not an HTTP answer"
    status = int(parts[1])
    return 200 <= status < 300, f"POST {path} -> {status}"
