"""Inference through the gateway: completions, chat and embeddings, whole or streamed, and
picking the model when the caller names none."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from sagellmd.client.errors import ClientError, bad_input
from sagellmd.client.http import Endpoint

LLM = "llm"
EMBEDDING = "embedding"
# generate() sends one request per prompt (each answer then has its own token counts, and
# the gateway spreads them over the replicas); this many at once.
MAX_PARALLEL_PROMPTS = 8
# Body fields the client sets itself; passing them as options would contradict the call.
RESERVED_OPTIONS = frozenset({"model", "prompt", "messages", "input", "stream"})

Messages = str | Sequence[Mapping[str, Any]]


def pick_model(entries: Sequence[Mapping[str, Any]], kind: str, where: str) -> str:
    """The one model of `kind` among the gateway's `/v1/models` entries, or a ClientError.

    Entries that route to the same engines (a served name and its aliases) are one model;
    an entry that does not say its kind (an older gateway) counts for either kind.
    """
    models: dict[tuple[str, ...], list[str]] = {}
    for entry in entries:
        if entry.get("kind") not in (kind, None):
            continue
        engines = entry.get("engines") or []
        key = tuple(sorted(str(e.get("id")) for e in engines if isinstance(e, Mapping)))
        models.setdefault(key or (str(entry.get("id")),), []).append(str(entry.get("id")))
    if len(models) == 1:
        return next(iter(models.values()))[0]
    if not models:
        raise ClientError(
            f"{where} routes no {kind} model (GET /v1/models lists none of that kind); declare"
            " an engine (`sagellm preset set NAME`, Client.apply_preset) or pass model=...",
            code="no_model",
        )
    names = ", ".join(" / ".join(names) for names in sorted(models.values()))
    raise ClientError(
        f"{where} routes more than one {kind} model ({names}); pass model=... to choose",
        code="ambiguous_model",
    )


def as_prompts(prompts: str | Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if not all(isinstance(prompt, str) for prompt in prompts):
        raise bad_input("prompts must be a string or a list of strings")
    return list(prompts)


def as_messages(messages: Messages) -> list[dict[str, Any]]:
    """A str is one user message; otherwise a list of `{"role", "content"}` mappings."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    listed = [dict(message) for message in messages if isinstance(message, Mapping)]
    if not listed or len(listed) != len(messages):
        raise bad_input(
            'messages must be a string or a non-empty list of {"role": ..., "content": ...}'
        )
    return listed


def checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    reserved = sorted(RESERVED_OPTIONS & set(options))
    if reserved:
        raise bad_input(
            f"option {reserved[0]!r} is set by the client itself; use the method's own argument"
            " (or its stream_ variant for streaming)"
        )
    return dict(options)


def _first_choice(answer: Any, where: str) -> Mapping[str, Any]:
    choices = answer.get("choices") if isinstance(answer, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ClientError(f"{where} answered without choices: {str(answer)[:200]}")
    return choices[0]


def _result(text: Any, choice: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    usage = answer.get("usage")
    return {
        "text": text if isinstance(text, str) else "",
        "finish_reason": choice.get("finish_reason"),
        "tokens_used": dict(usage) if isinstance(usage, Mapping) else None,
    }


class Inference:
    """The gateway's inference calls; `gateway()` gives the endpoint, found when first needed."""

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway

    @property
    def endpoint(self) -> Endpoint:
        return self._gateway()

    def models(self) -> list[dict[str, Any]]:
        answer = self.endpoint.call("GET", "/v1/models") or {}
        data = answer.get("data") if isinstance(answer, Mapping) else None
        return [entry for entry in data or [] if isinstance(entry, dict)]

    def model(self, name: str) -> dict[str, Any]:
        """The `/v1/models` entry a name routes to; ClientError 404 (listing names) if none."""
        answer = self.endpoint.call("GET", f"/v1/models/{quote(name, safe='')}")
        return answer if isinstance(answer, dict) else {}

    def model_for(self, model: str | None, kind: str) -> str:
        if model is not None:
            return model
        return pick_model(self.models(), kind, self.endpoint.where)

    def generate(
        self, prompts: str | Sequence[str], model: str | None, options: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        listed = as_prompts(prompts)
        body = checked_options(options)
        if not listed:
            return []
        name = self.model_for(model, LLM)

        def one(prompt: str) -> dict[str, Any]:
            answer = self.endpoint.call(
                "POST", "/v1/completions", body={**body, "model": name, "prompt": prompt}
            )
            choice = _first_choice(answer, self.endpoint.where)
            return _result(choice.get("text"), choice, answer)

        if len(listed) == 1:
            return [one(listed[0])]
        with ThreadPoolExecutor(min(MAX_PARALLEL_PROMPTS, len(listed))) as pool:
            return list(pool.map(one, listed))

    def chat(
        self, messages: Messages, model: str | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {**checked_options(options), "messages": as_messages(messages)}
        body["model"] = self.model_for(model, LLM)
        answer = self.endpoint.call("POST", "/v1/chat/completions", body=body)
        choice = _first_choice(answer, self.endpoint.where)
        message = choice.get("message")
        text = message.get("content") if isinstance(message, Mapping) else None
        return _result(text, choice, answer)

    def embed(self, texts: str | Sequence[str], model: str | None) -> dict[str, Any]:
        inputs = as_prompts(texts)
        name = self.model_for(model, EMBEDDING)
        if not inputs:
            return {"vectors": [], "dim": 0, "model_id": name}
        answer = self.endpoint.call("POST", "/v1/embeddings", body={"model": name, "input": inputs})
        data = answer.get("data") if isinstance(answer, Mapping) else None
        if not isinstance(data, list) or len(data) != len(inputs):
            raise ClientError(
                f"{self.endpoint.where} answered {len(data or [])} embeddings for"
                f" {len(inputs)} texts"
            )
        ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
        vectors = [list(item.get("embedding") or []) for item in ordered]
        return {
            "vectors": vectors,
            "dim": len(vectors[0]),
            "model_id": str(answer.get("model") or name),
        }

    def stream_generate(
        self, prompt: str, model: str | None, options: Mapping[str, Any]
    ) -> Iterator[str]:
        if not isinstance(prompt, str):
            raise bad_input("stream_generate takes one prompt, a string")
        body = {**checked_options(options), "prompt": prompt, "stream": True}
        body["model"] = self.model_for(model, LLM)
        for event in self.endpoint.events("/v1/completions", body):
            for choice in event.get("choices") or []:
                if isinstance(choice, Mapping) and choice.get("text"):
                    yield str(choice["text"])

    def stream_chat(
        self, messages: Messages, model: str | None, options: Mapping[str, Any]
    ) -> Iterator[str]:
        body = {**checked_options(options), "messages": as_messages(messages), "stream": True}
        body["model"] = self.model_for(model, LLM)
        for event in self.endpoint.events("/v1/chat/completions", body):
            for choice in event.get("choices") or []:
                delta = choice.get("delta") if isinstance(choice, Mapping) else None
                if isinstance(delta, Mapping) and delta.get("content"):
                    yield str(delta["content"])
