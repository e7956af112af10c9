"""Replica choice: which engine of a model gets the next request (see STRATEGIES).

Pure: the caller passes the replicas' counts, the clock value and, for ties, a seeded RNG.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Any
from zlib import crc32

STRATEGIES = ("least-outstanding", "prefix", "kv-aware", "cost")

# Virtual nodes per replica on the prefix ring: enough that 2-8 replicas get even arcs.
VIRTUAL_NODES = 100
# Bounded load of the prefix strategy: at most 125 % of the mean in flight (KubeAI PrefixHash).
PREFIX_LOAD_FACTOR = 1.25
# kv-aware compares KV use in 5 % steps, so near-equal caches fall through to the in-flight
# count, which moves with every dispatch, unlike a scrape that is up to 250 ms old.
_KV_STEPS = 20

_RNG = random.Random()


@dataclass(slots=True, frozen=True)
class KvLoad:
    """What an engine's own /metrics said: vLLM's queue, running batch and KV cache use (0-1)."""

    waiting: float
    running: float
    kv_usage: float
    scraped_at: float


@dataclass(slots=True)
class Replica:
    """One ready engine of a model, as the gateway counts it."""

    engine_id: str
    inflight: int
    cap: int
    cost: float = 0.0
    kv: KvLoad | None = None


def choose(
    strategy: str,
    replicas: Sequence[Replica],
    now: float,
    key: bytes | None = None,
    rng: random.Random | None = None,
    stale_after_s: float = 1.0,
) -> Replica | None:
    """The replica for the next request, or None when all are at their cap (it must queue)."""
    rng = rng or _RNG
    if strategy == "least-outstanding":
        return _least_outstanding(replicas, rng)
    if strategy == "prefix":
        if not key:
            return _least_outstanding(replicas, rng)
        return _prefix(replicas, key, rng)
    if strategy == "kv-aware":
        return _kv_aware(replicas, now, stale_after_s, rng)
    if strategy == "cost":
        return _cheapest(replicas, rng)
    raise ValueError(f"unknown balance strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


def _least_outstanding(replicas: Sequence[Replica], rng: random.Random) -> Replica | None:
    best: Replica | None = None
    ties = 0
    for replica in replicas:
        inflight = replica.inflight
        if inflight >= replica.cap:
            continue
        if best is None or inflight < best.inflight:
            best, ties = replica, 1
        elif inflight == best.inflight:
            # Reservoir sampling: each of the tied replicas ends up chosen with equal odds.
            ties += 1
            if rng.randrange(ties) == 0:
                best = replica
    return best


def _cheapest(replicas: Sequence[Replica], rng: random.Random) -> Replica | None:
    eligible = [r for r in replicas if r.inflight < r.cap]
    if not eligible:
        return None
    cost = min(r.cost for r in eligible)
    return _least_outstanding([r for r in eligible if r.cost == cost], rng)


def _kv_score(replica: Replica, now: float, stale_after_s: float) -> tuple[float, int, int]:
    kv = replica.kv
    if kv is None or now - kv.scraped_at > stale_after_s:
        # Stale: nothing known of vLLM's queue; the share of the cap in flight stands for KV use.
        return (0.0, int(_KV_STEPS * replica.inflight / max(replica.cap, 1)), replica.inflight)
    return (kv.waiting, int(_KV_STEPS * kv.kv_usage), max(int(kv.running), replica.inflight))


def _kv_aware(
    replicas: Sequence[Replica], now: float, stale_after_s: float, rng: random.Random
) -> Replica | None:
    best: Replica | None = None
    best_score: tuple[float, int, int] | None = None
    ties = 0
    for replica in replicas:
        if replica.inflight >= replica.cap:
            continue
        score = _kv_score(replica, now, stale_after_s)
        if best_score is None or score < best_score:
            best, best_score, ties = replica, score, 1
        elif score == best_score:
            ties += 1
            if rng.randrange(ties) == 0:
                best = replica
    return best


def _point(name: bytes) -> int:
    # blake2b, not crc32, for the ring: crc32 is linear, so "e0#1", "e0#2", ... would cluster.
    return int.from_bytes(blake2b(name, digest_size=4).digest(), "big")


@lru_cache(maxsize=256)
def _ring(engine_ids: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """The hash ring of a replica set: sorted point hashes and the index of each point's owner."""
    points = sorted(
        (_point(f"{engine_id}#{node}".encode()), index)
        for index, engine_id in enumerate(engine_ids)
        for node in range(VIRTUAL_NODES)
    )
    return [point for point, _ in points], [owner for _, owner in points]


def _prefix(replicas: Sequence[Replica], key: bytes, rng: random.Random) -> Replica | None:
    count = len(replicas)
    if count == 0:
        return None
    hashes, owners = _ring(tuple(r.engine_id for r in replicas))
    total = sum(r.inflight for r in replicas)
    bound = math.ceil(PREFIX_LOAD_FACTOR * (total + 1) / count)
    start = bisect_right(hashes, crc32(key))  # per request: the cheapest even 32-bit hash
    points = len(hashes)
    tried = 0
    seen = 0  # bit i: replica i did not fit
    for step in range(points):
        owner = owners[(start + step) % points]
        if (seen >> owner) & 1:
            continue
        replica = replicas[owner]
        if replica.inflight < replica.cap and replica.inflight < bound:  # inflight+1 <= bound
            return replica
        seen |= 1 << owner
        tried += 1
        if tried == count:
            break
    # The least loaded replica always fits the bound; none did, so the ones under their cap
    # all carry more than the bound (the others are at smaller caps): take the least loaded.
    return _least_outstanding(replicas, rng)


def prefix_key(body: Mapping[str, Any], chars: int = 256) -> bytes:
    """A stable prefix of the prompt: `prompt`, the `messages` contents, or `input`; b"" if none."""
    parts: list[str] = []
    size = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if size >= chars:
                break
            if not isinstance(message, Mapping):
                continue
            role = message.get("role")
            text = f"{role}:" if isinstance(role, str) else ""
            text += _text_of(message.get("content"), chars)
            parts.append(text + "\n")
            size += len(text) + 1
    else:
        prompt = body.get("prompt", body.get("input"))
        parts.append(_text_of(prompt, chars))
    return "".join(parts)[:chars].encode("utf-8", "surrogatepass")


def _text_of(value: object, chars: int) -> str:
    """The leading text of a prompt, content or input: a str, text parts, token ids or a batch."""
    if isinstance(value, str):
        return value[:chars]
    if not isinstance(value, list) or not value:
        return ""
    first = value[0]
    if isinstance(first, int):  # token ids
        return ",".join(str(token) for token in value[:chars])
    if isinstance(first, Mapping):  # OpenAI content parts
        texts = []
        size = 0
        for part in value:
            if size >= chars:
                break
            text = part.get("text") if isinstance(part, Mapping) else None
            if isinstance(text, str):
                texts.append(text)
                size += len(text)
        return "".join(texts)[:chars]
    # A batch of prompts (str or token lists): the first one stands for the batch.
    return _text_of(first, chars)
