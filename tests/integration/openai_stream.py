"""Reading an OpenAI server-sent-events answer in tests: the chunks up to `data: [DONE]`."""

from __future__ import annotations

import json
from typing import Any

import httpx


def stream_chat(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a streaming chat completion; its chunks, or AssertionError without `[DONE]`."""
    chunks: list[dict[str, Any]] = []
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                return chunks
            chunks.append(json.loads(data))
    raise AssertionError(f"the stream did not end with data: [DONE]: {chunks}")
