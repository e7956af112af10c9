"""Downloading a model into the hub cache with huggingface_hub, failing fast when it cannot."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from sagellmd.errors import BadInputError, NotFoundError, SagellmError
from sagellmd.models.resolve import hub_cache_for, is_offline

DEFAULT_ENDPOINT = "https://huggingface.co"
# How long the hub may take to answer at all before we call it unreachable.
HUB_PROBE_TIMEOUT_S = 5.0
# Per-request metadata timeout; huggingface_hub reads HF_HUB_*_TIMEOUT only at import time,
# so the per-call argument is the one knob that works inside a running daemon.
ETAG_TIMEOUT_S = 10.0
MAX_ID_LENGTH = 96
_ID_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
MODEL_ID = re.compile(rf"^{_ID_PART}(?:/{_ID_PART})?$")

T = TypeVar("T")


class DownloadError(SagellmError):
    """The download did not happen; the message says why and what to do."""

    code = "download_failed"
    http_status = 502
    exit_code = 1


class HubOfflineError(DownloadError):
    """HF_HUB_OFFLINE forbids downloads and the model is not in the cache."""

    code = "hub_offline"
    http_status = 409


def validate_model_id(model_id: Any) -> str:
    """A hub model id, `name` or `org/name`; anything else is bad input."""
    if not isinstance(model_id, str) or not model_id:
        raise BadInputError(f"model id: must be a non-empty string, got {model_id!r}")
    if len(model_id) > MAX_ID_LENGTH or not MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise BadInputError(
            f"model id {model_id!r}: must be a Hugging Face id like `org/name` (letters, digits,"
            f" '-', '_', '.'; at most {MAX_ID_LENGTH} characters)"
        )
    return model_id


def split_file_reference(reference: str) -> tuple[str, list[str] | None]:
    """`REPO:FILE.gguf` or `REPO:QUANT` (one file of a repo that holds many, as GGUF repos
    do): the repo id and the patterns that fetch that file only. A plain id: itself, None.

    A quantization matches in any case (`Q4_K_M` finds `...-q4_k_m.gguf`) and takes the
    shards of a split model too (`...-q4_k_m-00001-of-00002.gguf`).
    """
    repo, colon, rest = reference.partition(":")
    if not colon:
        return reference, None
    if not rest or "/" in rest or rest in (".", ".."):
        raise BadInputError(
            f"model id {reference!r}: after ':' comes one file of the repo (FILE.gguf) or a"
            " quantization (e.g. Q4_K_M)"
        )
    if rest.lower().endswith(".gguf"):
        return repo, [rest]
    either_case = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in rest)
    return repo, [f"*{either_case}*.gguf"]


def validate_patterns(patterns: Any) -> list[str] | None:
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise BadInputError(
            f"allow_patterns: must be a list of glob patterns like ['*.safetensors', '*.json'],"
            f" got {patterns!r}"
        )
    return patterns or None


def hub_endpoint(env: Mapping[str, str]) -> str:
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _within(seconds: float, call: Callable[[], T], what: str) -> T:
    """Run `call` in a daemon thread and give up after `seconds` (DNS ignores httpx timeouts)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="sagellm-hub-probe", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"{what}: no answer within {seconds:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def probe_hub(endpoint: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> None:
    """Raise DownloadError unless the hub answers HTTP at all within `timeout_s` seconds.

    huggingface_hub's metadata calls have no timeout of their own, so a firewall that drops
    packets would otherwise hang the download for minutes.
    """

    def head() -> None:
        httpx.head(endpoint, timeout=timeout_s, follow_redirects=False)

    try:
        _within(timeout_s + 0.5, head, f"HEAD {endpoint}")
    except (httpx.HTTPError, OSError) as exc:
        raise DownloadError(
            f"the Hugging Face hub at {endpoint} is not reachable ({type(exc).__name__}: {exc});"
            " check the network, the proxy (HTTPS_PROXY) or HF_ENDPOINT. Nothing was downloaded."
            " Models already on disk are listed by `sagellm model list`."
        ) from exc


def offline_copy(
    model_id: str, revision: str | None, patterns: list[str] | None, cache: Path
) -> Path:
    """The cached snapshot when downloads are off; HubOfflineError when there is none."""
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                model_id,
                revision=revision,
                allow_patterns=patterns,
                cache_dir=cache,
                local_files_only=True,
            )
        )
    except Exception as exc:  # any failure here means "not (completely) in the cache"
        raise HubOfflineError(
            f"cannot download {model_id}: HF_HUB_OFFLINE is set, so sagellm does not contact"
            f" the Hugging Face hub, and {model_id} is not (completely) in the cache {cache}."
            " Unset HF_HUB_OFFLINE (or set it to 0) where huggingface.co is reachable, or copy"
            " the model into a directory listed under models.paths in config.yaml."
        ) from exc


def download_model(
    model_id: str,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    *,
    cache: Path | None = None,
    env: Mapping[str, str] | None = None,
    tqdm_class: type | None = None,
    probe_timeout_s: float = HUB_PROBE_TIMEOUT_S,
) -> Path:
    """Download (or resume) `model_id` into the hub cache and return its snapshot directory."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    env = os.environ if env is None else env
    cache = cache or hub_cache_for(env)
    if is_offline(env):
        return offline_copy(model_id, revision, allow_patterns, cache)
    endpoint = hub_endpoint(env)
    probe_hub(endpoint, probe_timeout_s)
    resume = f"run the same download again to resume (finished files are kept in {cache})"
    try:
        path = snapshot_download(
            model_id,
            revision=revision,
            allow_patterns=allow_patterns,
            cache_dir=cache,
            endpoint=endpoint,
            etag_timeout=ETAG_TIMEOUT_S,
            tqdm_class=tqdm_class,
        )
    except GatedRepoError as exc:
        raise DownloadError(
            f"{model_id} is gated: accept its terms on {endpoint}/{model_id}, then set HF_TOKEN"
            " (or run `hf auth login`) for the user that downloads"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise NotFoundError(
            f"no model {model_id!r} on {endpoint} (or it is private: set HF_TOKEN)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise NotFoundError(f"{model_id} has no revision {revision!r} on {endpoint}") from exc
    except LocalEntryNotFoundError as exc:
        raise DownloadError(
            f"lost the connection to {endpoint} while downloading {model_id}; {resume}"
        ) from exc
    except HfHubHTTPError as exc:
        raise DownloadError(f"{endpoint} refused the download of {model_id}: {exc}") from exc
    except OSError as exc:
        raise DownloadError(f"downloading {model_id} failed: {exc}; {resume}") from exc
    snapshot = Path(path)
    if not snapshot.is_dir():
        raise DownloadError(
            f"no file of {model_id} matches --allow-patterns {' '.join(allow_patterns or [])};"
            " nothing was downloaded"
        )
    return snapshot
