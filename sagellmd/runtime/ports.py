"""Free-port selection from the configured range."""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on the port (a bind test; the engine binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Engines' servers set SO_REUSEADDR, so connections in TIME_WAIT from
        # our probes must not make a port look taken after an engine restarts.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(
    start: int, end: int, taken: Collection[int], preferred: int | None = None
) -> int | None:
    """The preferred port if still free, else the lowest free port of the range not taken."""
    if preferred is not None and preferred not in taken and port_is_free(preferred):
        return preferred
    for port in range(start, end + 1):
        if port not in taken and port_is_free(port):
            return port
    return None


def pick_port_block(
    start: int,
    end: int,
    taken: Collection[int],
    count: int,
    is_free: Callable[[int], bool] = port_is_free,
) -> int | None:
    """The lowest port of the range that begins `count` free ports not taken (KV side ports)."""
    for first in range(start, end - count + 2):
        block = range(first, first + count)
        if not any(port in taken for port in block) and all(map(is_free, block)):
            return first
    return None
