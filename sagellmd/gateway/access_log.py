"""One structured line per request in the gateway's log, buffered and flushed twice a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class AccessLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lines: list[str] = []

    def write(
        self,
        request_id: bytes,
        model: str,
        engine: str,
        status: int,
        arrived: float,
        queued_s: float = 0.0,
        first_byte_at: float | None = None,
    ) -> None:
        now = time.monotonic()
        ttfb = f"{(first_byte_at - arrived) * 1000:.2f}" if first_byte_at else "-"
        self._lines.append(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S')} access request_id={request_id.decode('latin-1')}"
            f" model={model!r} engine={engine} status={status} queue_ms={queued_s * 1000:.2f}"
            f" ttfb_ms={ttfb} total_ms={(now - arrived) * 1000:.2f}\n"
        )
        if len(self._lines) >= 512:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        try:
            self._stream.write("".join(lines))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a log that cannot be written must not take requests down with it
