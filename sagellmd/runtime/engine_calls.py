"""One HTTP request to an engine on loopback, answered by its status line alone: the health
probe's GET and vLLM's POST /sleep and /wake_up."""

from __future__ import annotations

import asyncio


async def engine_status(
    method: str, host: str, port: int, path: str, timeout_s: float
) -> tuple[int | None, str]:
    """(status, detail): the answer's status within the timeout, or None and why not."""
    writer = None
    body_header = "Content-Length: 0\r\n" if method != "GET" else ""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{body_header}"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return None, f"{method} {path} timed out after {timeout_s:g}s"
    except OSError as exc:
        return None, f"{method} {path}: {exc.strerror or exc}"
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None, f"{method} {path}: not an HTTP answer"
    return int(parts[1]), f"{method} {path} -> {parts[1]}"


async def post_engine(host: str, port: int, path: str, timeout_s: float) -> tuple[bool, str]:
    """(ok, detail): ok means a 2xx answer within the timeout."""
    status, detail = await engine_status("POST", host, port, path, timeout_s)
    return status is not None and 200 <= status < 300, detail
