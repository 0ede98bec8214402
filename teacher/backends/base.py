"""The one interface every teacher backend implements.

A backend runs one judgement request and returns the assistant's text up to (and including) the
grade, plus the grade distribution read AT the verdict position when the backend can see logits
(local models) or logprobs (HTTP servers that return them). Backends that cannot give a
distribution return ``distribution=None``; the Teacher then falls back to self-consistency votes.
"""

from __future__ import annotations

import asyncio
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from teacher.prompt import Mode


@dataclass(frozen=True)
class VerdictRequest:
    messages: list[dict[str, str]]
    prefill: str  # start of the assistant turn, for backends that can prefill
    mode: Mode
    levels: Sequence[str]
    max_tokens: int
    temperature: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class VerdictResult:
    text: str  # the assistant's output from the start of its turn
    reached_verdict: bool  # False when generation stopped (max_tokens) before the grade
    distribution: dict[str, float] | None = None  # over request.levels, sums to 1
    source: Literal["logits", "logprobs"] | None = None


class GenerationAborted(RuntimeError):
    """The call's abort flag was set (its caller was cancelled): the model work stopped early."""


def check_abort(abort: threading.Event, where: str) -> None:
    if abort.is_set():
        raise GenerationAborted(f"teacher call aborted {where} (its caller was cancelled)")


async def run_abortable(
    blocking: Callable[[VerdictRequest, threading.Event], VerdictResult], request: VerdictRequest
) -> VerdictResult:
    """Run a local backend's blocking ``blocking(request, abort)`` in a worker thread. Cancelling the
    awaiting task does not stop a thread, so it sets ``abort``: the backend checks it between its steps
    and after every generated token, and stops (``GenerationAborted``), freeing the model and the CPU
    within a token instead of generating on to ``max_tokens`` unobserved."""
    abort = threading.Event()
    try:
        return await asyncio.to_thread(blocking, request, abort)
    except asyncio.CancelledError:
        abort.set()
        raise


class Backend(ABC):
    """Runs judgement requests against one model."""

    #: Identifies the model behind the backend (part of the teacher id and of cache keys).
    backend_id: str

    @abstractmethod
    async def verdict(self, request: VerdictRequest) -> VerdictResult: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or models."""


def softmax(scores: Mapping[str, float]) -> dict[str, float]:
    """Normalised probabilities over the given (log-)scores; always sums to 1."""
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def continuation_tokens(
    prefix: list[int],
    prefix_text: str,
    level: str,
    tokenize: Callable[[str], list[int]],
    tokenize_alone: Callable[[str], list[int]],
) -> list[int]:
    """The tokens ``level`` adds after ``prefix_text`` (tokenised in context, as the model sees it); when
    the level merges with the prefix's last token, its standalone tokens."""
    full = tokenize(prefix_text + level)
    if full[: len(prefix)] == prefix and len(full) > len(prefix):
        return full[len(prefix) :]
    return tokenize_alone(level)


def hf_token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids from a Hugging Face tokenizer, without special tokens (the chat template
    adds them), in one call: the fast tokenizer spreads a list over its threads. The ``hf:`` backend
    and the LoRA SFT tokenise through here, so training and labelling see the same ids."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def level_first_tokens(tokenize: Callable[[str], list[int]], levels: Sequence[str]) -> list[int]:
    """The first token of each level right after the verdict prefix ``"grade": "`` (in context, as
    ``continuation_tokens`` reads it). Batched verdicts and the LoRA SFT's verdict loss need them
    distinct, so that one position's logits give the whole distribution."""
    from teacher.prompt import GRADE_KEY_PREFIX

    prefix = tokenize(GRADE_KEY_PREFIX)
    firsts = [continuation_tokens(prefix, GRADE_KEY_PREFIX, level, tokenize, tokenize)[0] for level in levels]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"grade levels {list(levels)} share a first token: the verdict needs distinct ones")
    return firsts


def level_distribution(
    prefix: list[int], level_tokens: Mapping[str, list[int]], next_logprobs: Callable[[list[int]], Any]
) -> dict[str, float]:
    """Softmax over the grade levels of their log-probabilities after ``prefix``. When the levels'
    first tokens are distinct (the usual case) one evaluation suffices; otherwise each level's full
    token sequence is scored."""
    logprobs = next_logprobs(prefix)
    first = {level: toks[0] for level, toks in level_tokens.items()}
    if len(set(first.values())) == len(first):
        return softmax({level: float(logprobs[tok]) for level, tok in first.items()})
    scores: dict[str, float] = {}
    for level, toks in level_tokens.items():
        total = float(logprobs[toks[0]])
        for i in range(1, len(toks)):
            total += float(next_logprobs(prefix + toks[:i])[toks[i]])
        scores[level] = total
    return softmax(scores)
