"""Owns the tests of the gateway's prefill/decode routing: the pools routes.py builds from `pd`
entries, the verdict on P's answer (pd_protocol.judge_prefill), and the pools' queues in the
dispatcher on a fake clock (D first, then P of D's group; least-outstanding in each pool).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson

from sagellmd.gateway.dispatch import Dispatcher, Ticket
from sagellmd.gateway.pd_protocol import (
    PrefillVerdict,
    judge_prefill,
    prefill_step_failed,
    without_accept_encoding,
)
from sagellmd.gateway.routes import PdMember, PdRouting, RouteTable

P_PARAMS = {
    "do_remote_prefill": True,
    "do_remote_decode": False,
    "remote_block_ids": [1, 2],
    "remote_engine_id": "e",
    "remote_host": "127.0.0.1",
    "remote_port": 5600,
}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _instance(
    group: str,
    role: str,
    index: int,
    ready: bool = True,
    cap: int = 4,
    threshold: int | None = None,
    names: tuple[str, ...] = ("M",),
) -> dict[str, Any]:
    instance_id = f"{group}.{role}-{index}"
    return {
        "id": instance_id,
        "state": "ready" if ready else "starting",
        "ready": ready,
        "url": f"http://127.0.0.1:{20000 + index + (100 if role == 'decode' else 0)}",
        "served_model": names[0],
        "names": [*names, group, instance_id],
        "runtime": "vllm",
        "max_concurrent_requests": cap,
        "startup_timeout_s": 30,
        "pd": {
            "group": group,
            "role": role,
            "index": index,
            "connector": "nixl",
            "threshold_input_tokens": threshold,
        },
    }


def _plain(engine_id: str, names: tuple[str, ...] = ("M",)) -> dict[str, Any]:
    return {
        "id": engine_id,
        "state": "ready",
        "ready": True,
        "url": "http://127.0.0.1:21000",
        "served_model": names[0],
        "names": [*names, engine_id],
        "pd": None,
    }


def _table(*entries: dict[str, Any], version: int = 1) -> RouteTable:
    return RouteTable.from_json({"version": version, "engines": list(entries)})


def _routing(table: RouteTable, name: str = "M") -> PdRouting:
    group = table.resolve(name)
    assert group is not None and group.pd is not None
    return group.pd


# -- routes.py ---------------------------------------------------------------------------


def test_pd_entries_make_one_name_with_a_prefill_and_a_decode_pool():
    table = _table(
        _instance("p.chat", "prefill", 0, threshold=512),
        _instance("p.chat", "prefill", 1, threshold=512),
        _instance("p.chat", "decode", 0, threshold=512),
    )
    assert table.engines["p.chat.prefill-1"].pd == PdMember("p.chat", "prefill", 1, "nixl", 512)
    for name in ("M", "p.chat"):
        routing = _routing(table, name)
        assert routing.decode.engine_ids == ("p.chat.decode-0",)
        (group,) = routing.groups
        assert group.id == "p.chat" and group.threshold_input_tokens == 512
        assert group.prefill.engine_ids == ("p.chat.prefill-0", "p.chat.prefill-1")
        assert group.decode.key == routing.decode.key  # one group: one decode queue
    assert table.waits_in("p.chat (prefill)") == _routing(table).groups[0].prefill
    assert table.waits_in("M (decode)") == _routing(table).decode
    assert table.waits_in("M") == table.resolve("M")
    # The pools' names are not names a client can ask for.
    assert "M (decode)" not in table.routable_names()


def test_an_instance_id_is_served_by_that_instance_alone():
    table = _table(_instance("p.chat", "prefill", 0), _instance("p.chat", "decode", 0))
    for instance_id in ("p.chat.prefill-0", "p.chat.decode-0"):
        group = table.resolve(instance_id)
        assert group is not None and group.pd is None
        assert group.engine_ids == (instance_id,)


def test_a_name_with_one_role_only_or_no_pd_is_ordinary():
    only_decode = _table(_instance("p.chat", "decode", 0), _instance("p.chat", "decode", 1))
    group = only_decode.resolve("M")
    assert group is not None and group.pd is None
    plain = _table(_plain("a"), _plain("b"))
    group = plain.resolve("M")
    assert group is not None and group.pd is None and plain.engines["a"].pd is None


def test_a_name_shared_by_two_pd_groups_keeps_each_groups_prefill_apart():
    table = _table(
        _instance("p.one", "prefill", 0),
        _instance("p.one", "decode", 0),
        _instance("p.two", "prefill", 0),
        _instance("p.two", "decode", 0),
        _plain("p.plain"),
    )
    routing = _routing(table)
    assert routing.decode.engine_ids == ("p.one.decode-0", "p.two.decode-0")
    two = routing.group_of(table.engines["p.two.decode-0"])
    assert two.prefill.engine_ids == ("p.two.prefill-0",)
    assert two.decode.engine_ids == ("p.two.decode-0",)
    # The ordinary engine sharing the name takes no part: its answer carries no KV hand-over.
    assert "p.plain" not in routing.decode.engine_ids


def test_a_pd_model_is_ready_only_with_a_ready_prefill_and_a_ready_decode():
    def ready(*entries: dict[str, Any]) -> bool:
        table = _table(*entries)
        (entry,) = [m for m in table.model_list() if m["id"] == "M"]
        assert entry["ready"] is table.pd_routable(_routing(table))
        return entry["ready"]

    assert ready(_instance("g", "prefill", 0), _instance("g", "decode", 0))
    assert not ready(_instance("g", "prefill", 0, ready=False), _instance("g", "decode", 0))
    assert not ready(_instance("g", "prefill", 0), _instance("g", "decode", 0, ready=False))
    assert ready(
        _instance("g", "prefill", 0, ready=False),
        _instance("g", "prefill", 1),
        _instance("g", "decode", 0),
    )
    # A ready P of one group and a ready D of another cannot serve together.
    assert not ready(
        _instance("a", "prefill", 0),
        _instance("a", "decode", 0, ready=False),
        _instance("b", "prefill", 0, ready=False),
        _instance("b", "decode", 0),
    )


# -- judge_prefill -----------------------------------------------------------------------


def _answer(params: Any = P_PARAMS, finish: str = "length") -> bytes:
    choice = {"index": 0, "message": {"content": "x"}, "finish_reason": finish}
    return orjson.dumps({"choices": [choice], "kv_transfer_params": params})


def test_a_usable_p_answer_goes_on_to_d_with_its_params():
    assert judge_prefill(200, _answer(), "g.prefill-0") == PrefillVerdict(params=P_PARAMS)
    # P stopped at its token: nothing to hand over, D prefills itself.
    assert judge_prefill(200, _answer(None, "stop"), "g.prefill-0") == PrefillVerdict()


def test_a_4xx_of_p_is_the_requests_fault_and_is_relayed():
    assert judge_prefill(400, b'{"error": {}}', "g.prefill-0") == PrefillVerdict(relay=True)


def test_a_5xx_or_unusable_answer_of_p_tries_the_next_p():
    assert judge_prefill(503, b"", "g.prefill-0") == PrefillVerdict(retry="HTTP 503")
    for data in (b"not json", _answer(None), b"[1]", _answer({"do_remote_prefill": False})):
        verdict = judge_prefill(200, data, "g.prefill-0")
        assert verdict.params is None and not verdict.relay
        assert verdict.retry.startswith("The prefill instance g.prefill-0 answered without")


def test_prefill_failed_is_a_502_naming_every_p_tried():
    error = prefill_step_failed("M", ["g.prefill-0: HTTP 500", "g.prefill-1: cannot connect"])
    assert (error.status, error.code, error.type) == (502, "prefill_failed", "server_error")
    assert error.message == (
        "The prefill step for 'M' failed on every prefill instance tried:"
        " g.prefill-0: HTTP 500; g.prefill-1: cannot connect"
    )


def test_p_gets_the_clients_headers_but_no_accept_encoding():
    headers = b"content-type: application/json\r\naccept-encoding: gzip\r\nx-a: 1\r\n"
    assert without_accept_encoding(headers) == b"content-type: application/json\r\nx-a: 1\r\n"
    assert without_accept_encoding(b"x-a: 1\r\n") == b"x-a: 1\r\n"


# -- the pools in the dispatcher ----------------------------------------------------------


def _dispatcher(*entries: dict[str, Any]) -> tuple[Dispatcher, FakeClock]:
    clock = FakeClock()
    dispatcher = Dispatcher(
        "fifo", "least-outstanding", 16, 5.0, 2.0, clock=clock, rng=random.Random(3)
    )
    dispatcher.set_table(_table(*entries))
    return dispatcher, clock


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_least_outstanding_within_each_pool():
    async def main() -> None:
        dispatcher, clock = _dispatcher(
            _instance("g", "prefill", 0),
            _instance("g", "prefill", 1),
            _instance("g", "decode", 0),
            _instance("g", "decode", 1),
        )
        routing = _routing(dispatcher.table)
        group = routing.groups[0]
        decodes = [
            (await dispatcher.acquire(routing.decode, routing.decode_name, Ticket(clock()))).id
            for _ in range(4)
        ]
        prefills = [
            (await dispatcher.acquire(group.prefill, group.prefill_name, Ticket(clock()))).id
            for _ in range(4)
        ]
        assert sorted(decodes) == ["g.decode-0"] * 2 + ["g.decode-1"] * 2
        assert sorted(prefills) == ["g.prefill-0"] * 2 + ["g.prefill-1"] * 2
        dispatcher.release("g.prefill-0")
        dispatcher.release("g.prefill-0")
        again = await dispatcher.acquire(group.prefill, group.prefill_name, Ticket(clock()))
        assert again.id == "g.prefill-0"

    asyncio.run(main())


def test_a_request_waits_for_a_ready_prefill_and_is_told_why():
    async def main() -> None:
        dispatcher, clock = _dispatcher(
            _instance("g", "prefill", 0, ready=False), _instance("g", "decode", 0)
        )
        routing = _routing(dispatcher.table)
        group = routing.groups[0]
        demanded: list[str] = []
        dispatcher.on_demand = demanded.append
        waiting = asyncio.create_task(
            dispatcher.acquire(group.prefill, group.prefill_name, Ticket(clock()))
        )
        await _settle()
        assert not waiting.done() and demanded == ["g (prefill)"]
        assert dispatcher.demand() == {"g.prefill-0": 1}  # the daemon may wake P alone
        assert dispatcher.wait_limit_s(group.prefill) == 30  # P's startup_timeout_s
        # P becomes ready: the table moves the waiter to the new pool, which serves it.
        dispatcher.set_table(
            _table(_instance("g", "prefill", 0), _instance("g", "decode", 0), version=2)
        )
        await _settle()
        assert waiting.done() and waiting.result().id == "g.prefill-0"

    asyncio.run(main())


def test_waiters_of_a_pool_follow_it_when_a_replica_joins():
    async def main() -> None:
        one_decode = (_instance("g", "prefill", 0), _instance("g", "decode", 0, cap=1))
        dispatcher, clock = _dispatcher(*one_decode)
        routing = _routing(dispatcher.table)
        await dispatcher.acquire(routing.decode, routing.decode_name, Ticket(clock()))
        waiting = asyncio.create_task(
            dispatcher.acquire(routing.decode, routing.decode_name, Ticket(clock()))
        )
        await _settle()
        assert not waiting.done()
        dispatcher.set_table(_table(*one_decode, _instance("g", "decode", 1), version=2))
        await _settle()
        assert waiting.done() and waiting.result().id == "g.decode-1"

    asyncio.run(main())


def test_a_new_table_wakes_the_requests_waiting_for_news():
    async def main() -> None:
        entries = (_instance("g", "prefill", 0), _instance("g", "decode", 0))
        dispatcher, _ = _dispatcher(*entries)
        loop = asyncio.get_running_loop()
        waiting = [loop.create_future(), loop.create_future()]
        dispatcher.table_waiters.extend(waiting)
        waiting[1].cancel()  # its request gave up: nothing to wake
        dispatcher.set_table(_table(*entries, version=2))
        assert waiting[0].done() and waiting[0].result() is None
        assert dispatcher.table_waiters == []

    asyncio.run(main())
