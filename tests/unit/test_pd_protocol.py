"""The prefill and decode request bodies, P's answer, and the threshold rule."""

from __future__ import annotations

import copy
import re

import pytest

from sagellmd.gateway.errors import GatewayError
from sagellmd.gateway.pd_protocol import (
    decode_body,
    estimate_input_tokens,
    kv_transfer_params_of,
    p2p_nccl_request_id,
    prefill_body,
    wants_prefill,
)

CHAT = {
    "model": "chat",
    "messages": [{"role": "user", "content": "Tell me about the sea."}],
    "max_tokens": 200,
    "max_completion_tokens": 200,
    "min_tokens": 5,
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.2,
}
# What vLLM's NixlConnector answers on P (request_finished of its scheduler side).
P_PARAMS = {
    "do_remote_prefill": True,
    "do_remote_decode": False,
    "remote_block_ids": [3, 4, 5],
    "remote_engine_id": "0f3c",
    "remote_host": "127.0.0.1",
    "remote_port": 5600,
    "tp_size": 1,
}


def p_answer(params: object = P_PARAMS, finish: str = "length") -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"content": "The"}, "finish_reason": finish}],
        "kv_transfer_params": params,
    }


def test_prefill_body_is_toy_proxy_servers():
    """tests/v1/kv_connector/nixl_integration/toy_proxy_server.py, send_request_to_service."""
    original = copy.deepcopy(CHAT)
    body = prefill_body(CHAT)
    assert body == {
        "model": "chat",
        "messages": CHAT["messages"],
        "max_tokens": 1,
        "max_completion_tokens": 1,
        "stream": False,
        "temperature": 0.2,
        "kv_transfer_params": {
            "do_remote_decode": True,
            "do_remote_prefill": False,
            "remote_engine_id": None,
            "remote_block_ids": None,
            "remote_host": None,
            "remote_port": None,
        },
    }
    assert CHAT == original  # the client's body is left as it came


def test_prefill_body_adds_no_max_completion_tokens_of_its_own():
    body = prefill_body({"model": "m", "prompt": "hi", "stream": False})
    assert body["max_tokens"] == 1 and "max_completion_tokens" not in body
    assert "stream_options" not in body and body["stream"] is False


def test_a_client_kv_transfer_params_never_reaches_p():
    body = prefill_body({"prompt": "x", "kv_transfer_params": {"do_remote_decode": False}})
    assert body["kv_transfer_params"]["do_remote_decode"] is True


def test_decode_body_is_the_clients_body_plus_ps_params():
    body = decode_body(CHAT, kv_transfer_params_of(p_answer(), "lab.chat.prefill-0"))
    assert body == {**CHAT, "kv_transfer_params": P_PARAMS}
    assert body["stream"] is True and body["max_tokens"] == 200 and body["min_tokens"] == 5
    assert "kv_transfer_params" not in CHAT


def test_p_that_stopped_at_its_token_hands_over_nothing():
    """NixlConnector keeps blocks only for a request capped by max_tokens; D prefills itself."""
    assert kv_transfer_params_of(p_answer(None, finish="stop"), "p") is None
    assert decode_body(CHAT, None) == CHAT


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (p_answer(None), "its answer has no kv_transfer_params"),
        ({"choices": []}, "its answer has no kv_transfer_params"),
        (p_answer([1, 2]), "its kv_transfer_params is [1, 2], not a mapping"),
        (p_answer({}), "its kv_transfer_params is {}, not a mapping"),
        (
            p_answer({**P_PARAMS, "do_remote_prefill": False}),
            "its kv_transfer_params do not ask the decode side for a remote prefill",
        ),
        (["not", "an", "object"], "its answer is not a JSON object (list)"),
    ],
)
def test_an_unusable_p_answer_is_a_clear_502(answer: object, why: str):
    with pytest.raises(GatewayError) as caught:
        kv_transfer_params_of(answer, "lab.chat.prefill-1")
    error = caught.value
    assert (error.status, error.code, error.type) == (502, "prefill_failed", "server_error")
    assert error.message == (
        f"The prefill instance lab.chat.prefill-1 answered without what the decode instance"
        f" needs: {why}; is it started with --kv-transfer-config (a kv connector)?"
    )
    assert b'"code":"prefill_failed"' in error.body()


def test_estimate_counts_text_by_four_chars_and_token_ids_exactly():
    assert estimate_input_tokens({"prompt": "x" * 400}) == 100
    assert estimate_input_tokens({"prompt": "x" * 401}) == 101
    assert estimate_input_tokens({"prompt": list(range(700))}) == 700
    assert estimate_input_tokens({"prompt": ["a" * 40, "b" * 40]}) == 20
    assert estimate_input_tokens({"prompt": [[1, 2, 3], [4, 5]]}) == 5
    assert estimate_input_tokens({}) == 0


def test_estimate_of_chat_counts_every_message_and_text_parts():
    body = {
        "messages": [
            {"role": "system", "content": "s" * 80},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "u" * 40},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                ],
            },
            {"role": "assistant", "content": None},
        ]
    }
    assert estimate_input_tokens(body) == 3 * 4 + 30


def test_short_prompts_skip_prefill():
    short, long = {"prompt": "x" * 396}, {"prompt": "x" * 400}
    assert wants_prefill(short, 100) is False
    assert wants_prefill(long, 100) is True
    assert wants_prefill(short, None) is True  # no threshold: every prompt goes P then D
    assert wants_prefill({"prompt": ""}, 0) is True


def test_p2p_nccl_request_id_parses_as_vllm_parses_it():
    """P2pNcclConnector.parse_request_id's patterns, applied to what we build."""
    request_id = p2p_nccl_request_id("127.0.0.1:21001", "127.0.0.1:22001", "abc123")
    assert request_id == "___prefill_addr_127.0.0.1:21001___decode_addr_127.0.0.1:22001_abc123"
    # vLLM prefixes its own "cmpl-" and may add a suffix; the patterns search anywhere.
    internal = f"cmpl-{request_id}-0"
    decode = re.search(r"___decode_addr_(.*):(\d+)", internal)
    prefill = re.search(r"___prefill_addr_(.*):(\d+)___", internal)
    assert decode and (decode.group(1), int(decode.group(2))) == ("127.0.0.1", 22001)
    assert prefill and (prefill.group(1), int(prefill.group(2))) == ("127.0.0.1", 21001)
