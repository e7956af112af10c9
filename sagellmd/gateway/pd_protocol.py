"""The two-step prefill/decode protocol's request bodies, as vLLM's NIXL proxy sends them.

Pure: OpenAI bodies (dicts) in, bodies out. The reference is vLLM's
tests/v1/kv_connector/nixl_integration/toy_proxy_server.py: P gets the client's body with
`max_tokens: 1` (and `max_completion_tokens: 1` if present), `stream: false`, no
`stream_options`, no `min_tokens` / `min_completion_tokens` ("not supported for P") and
`kv_transfer_params` asking for a remote decode; D gets the client's body as sent plus the
`kv_transfer_params` of P's answer. Both carry the same X-Request-Id. P2pNcclConnector
needs no parameters in the body but the P and D addresses in that request id
(examples/online_serving/disaggregated_serving_p2p_nccl_xpyd/disagg_proxy_p2p_nccl_xpyd.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sagellmd.gateway.errors import GatewayError

KV_TRANSFER_PARAMS = "kv_transfer_params"
# What P's request carries: do the prefill here, keep the blocks for a remote decode.
PREFILL_KV_TRANSFER_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
# Sampling limits vLLM's prefill instance does not take (toy_proxy_server.py pops them).
NOT_FOR_PREFILL = ("min_tokens", "min_completion_tokens", "stream_options")
# English text averages about four characters a token (OpenAI's rule of thumb); the
# threshold only needs the order of magnitude, and a tokenizer call would cost a round trip.
CHARS_PER_TOKEN = 4
# A chat template wraps every message in a few tokens of role markers.
TOKENS_PER_MESSAGE = 4


def prefill_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """P's request: the prompt alone, one token, no stream, asking for a remote decode."""
    request = {key: value for key, value in body.items() if key not in NOT_FOR_PREFILL}
    request[KV_TRANSFER_PARAMS] = dict(PREFILL_KV_TRANSFER_PARAMS)
    request["stream"] = False
    request["max_tokens"] = 1
    if "max_completion_tokens" in body:
        request["max_completion_tokens"] = 1
    return request


def decode_body(
    body: Mapping[str, Any], kv_transfer_params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """D's request: the client's body as sent, with the parameters P answered (None: none)."""
    request = dict(body)
    if kv_transfer_params is not None:
        request[KV_TRANSFER_PARAMS] = dict(kv_transfer_params)
    return request


def prefill_failed(engine_id: str, why: str) -> GatewayError:
    return GatewayError(
        502,
        "prefill_failed",
        f"The prefill instance {engine_id} answered without what the decode instance needs:"
        f" {why}; is it started with --kv-transfer-config (a kv connector)?",
        type="server_error",
    )


def _finish_reasons(answer: Mapping[str, Any]) -> set[Any]:
    choices = answer.get("choices")
    if not isinstance(choices, list):
        return set()
    return {choice.get("finish_reason") for choice in choices if isinstance(choice, Mapping)}


def kv_transfer_params_of(answer: Any, engine_id: str) -> dict[str, Any] | None:
    """The `kv_transfer_params` of P's parsed JSON answer; GatewayError 502 when unusable.

    None when P stopped at its one token (finish_reason "stop"): vLLM's NixlConnector keeps
    blocks for a remote decode only when the request hit max_tokens, so there is nothing to
    hand over and D prefills itself, as toy_proxy_server.py then does.
    """
    if not isinstance(answer, Mapping):
        raise prefill_failed(
            engine_id, f"its answer is not a JSON object ({type(answer).__name__})"
        )
    params = answer.get(KV_TRANSFER_PARAMS)
    if params is None:
        if _finish_reasons(answer) == {"stop"}:
            return None
        raise prefill_failed(engine_id, "its answer has no kv_transfer_params")
    if not isinstance(params, Mapping) or not params:
        raise prefill_failed(engine_id, f"its kv_transfer_params is {params!r}, not a mapping")
    if params.get("do_remote_prefill") is not True:
        raise prefill_failed(
            engine_id, "its kv_transfer_params do not ask the decode side for a remote prefill"
        )
    return dict(params)


@dataclass(slots=True, frozen=True)
class PrefillVerdict:
    """What P's answer means for the request: go on to D, relay P's answer, or try another P."""

    params: dict[str, Any] | None = None
    relay: bool = False  # a 4xx: the request itself is wrong; the client gets P's words
    retry: str = ""  # why this P failed (a 5xx, an answer D cannot use, no answer)
    unreachable: bool = False  # no HTTP answer at all: the process may be gone


def judge_prefill(status: int, data: bytes, engine_id: str) -> PrefillVerdict:
    """P's status and body to the next step."""
    if 400 <= status < 500:
        return PrefillVerdict(relay=True)
    if status != 200:
        return PrefillVerdict(retry=f"HTTP {status}")
    try:
        answer: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        answer = data
    try:
        return PrefillVerdict(params=kv_transfer_params_of(answer, engine_id))
    except GatewayError as error:
        return PrefillVerdict(retry=error.message)


def prefill_step_failed(name: str, failures: list[str]) -> GatewayError:
    """The client's answer when every prefill instance tried failed (`id: why` each)."""
    return GatewayError(
        502,
        "prefill_failed",
        f"The prefill step for {name!r} failed on every prefill instance tried:"
        f" {'; '.join(failures)}",
        type="server_error",
    )


def without_accept_encoding(headers: bytes) -> bytes:
    """The client's header lines for P, whose JSON the gateway parses: never compressed."""
    if b"accept-encoding" not in headers:
        return headers
    lines = headers.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.startswith(b"accept-encoding:"))


def _text_chars(value: Any) -> tuple[int, int]:
    """(characters of text, token ids) in a prompt, a content or a batch of them."""
    if isinstance(value, str):
        return len(value), 0
    if not isinstance(value, list):
        return 0, 0
    if value and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return 0, len(value)
    chars = tokens = 0
    for item in value:
        if isinstance(item, Mapping):  # an OpenAI content part
            text = item.get("text")
            chars += len(text) if isinstance(text, str) else 0
        else:
            more_chars, more_tokens = _text_chars(item)
            chars, tokens = chars + more_chars, tokens + more_tokens
    return chars, tokens


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Roughly how many tokens the prompt is: token ids counted, text by CHARS_PER_TOKEN."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = tokens = 0
        for message in messages:
            if isinstance(message, Mapping):
                more_chars, more_tokens = _text_chars(message.get("content"))
                chars, tokens = chars + more_chars, tokens + more_tokens + TOKENS_PER_MESSAGE
        return tokens + math.ceil(chars / CHARS_PER_TOKEN)
    chars, tokens = _text_chars(body.get("prompt"))
    return tokens + math.ceil(chars / CHARS_PER_TOKEN)


def wants_prefill(body: Mapping[str, Any], threshold_input_tokens: int | None) -> bool:
    """Whether the request goes P then D; a prompt under the threshold goes to D alone."""
    if threshold_input_tokens is None:
        return True
    return estimate_input_tokens(body) >= threshold_input_tokens


def p2p_nccl_request_id(prefill_address: str, decode_address: str, unique: str) -> str:
    """The X-Request-Id P2pNcclConnector reads both peers' `host:kv_port` from."""
    return f"___prefill_addr_{prefill_address}___decode_addr_{decode_address}_{unique}"
