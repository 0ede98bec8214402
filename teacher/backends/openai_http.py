"""Teacher behind any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, Ollama, hosted APIs).

Two ways to reach the verdict position, chosen by ``api``:

* ``completions`` (``/v1/completions``): the prompt is rendered here in ChatML (the chat format of
  SmolLM2, Qwen and many open models) and the assistant turn is prefilled, exactly as the local
  backends do. CoT mode generates until the ``"grade"`` key; then one more 1-token request on
  the text up to ``"grade": "`` returns the top log-probabilities AT the verdict position.
* ``chat`` (``/v1/chat/completions``, default): the server applies the model's own chat template;
  the top log-probabilities of the generated token where the grade value starts (right after
  ``"grade": "``) give the distribution. Needs a model that follows the JSON instruction.

Levels absent from the server's top-k get the smallest top-k log-probability (an upper bound on
theirs). Servers that reject or omit logprobs make the Teacher fall back to self-consistency votes.

Transient failures (HTTP 5xx, 429, timeouts, dropped connections) are retried with exponential
backoff; other 4xx errors are the caller's and raise at once.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import httpx

from teacher.backends.base import Backend, VerdictRequest, VerdictResult, softmax
from teacher.prompt import GRADE_KEY, GRADE_KEY_PREFIX

API_KEY_ENV = "RELEVANCE_TEACHER_API_KEY"
_GRADE_VALUE_START = re.compile(re.escape(GRADE_KEY) + r'\s*:\s*"')
DEFAULT_TOP_LOGPROBS = 10


def backend_id(model: str) -> str:
    """How records name a model served over the OpenAI API (part of their teacher id and cache key)."""
    return f"openai:{model}"


class TeacherHTTPError(RuntimeError):
    """The teacher server refused a request or kept failing; the message carries status and body."""


class OpenAIBackend(Backend):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        api: Literal["chat", "completions"] = "chat",
    ) -> None:
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', not {api!r}")
        self.api = api
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.top_logprobs = top_logprobs
        self.use_logprobs = top_logprobs > 0
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self.backend_id = backend_id(model)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verdict(self, request: VerdictRequest) -> VerdictResult:
        if self.api == "completions":
            return await self._verdict_completions(request)
        return await self._verdict_chat(request)

    async def _verdict_completions(self, request: VerdictRequest) -> VerdictResult:
        prompt = chatml(request.messages)
        text = request.prefill
        common = {"model": self.model, "seed": request.seed}
        if request.mode == "cot":
            data = await self._post(
                "/completions",
                common | {"prompt": prompt + text, "max_tokens": request.max_tokens,
                          "temperature": request.temperature, "stop": [GRADE_KEY]},
            )  # fmt: skip
            choice = data["choices"][0]
            text += choice.get("text") or ""
            if choice.get("finish_reason") != "stop":
                return VerdictResult(text=text, reached_verdict=False)
            text += GRADE_KEY_PREFIX
        if self.use_logprobs:
            data = await self._post(
                "/completions",
                common
                | {
                    "prompt": prompt + text,
                    "max_tokens": 1,
                    "temperature": 0.0,
                    "logprobs": self.top_logprobs,
                },
            )
            top = ((data["choices"][0].get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
            distribution = _match_levels(top.items(), request.levels)
            if distribution:
                grade = max(distribution, key=distribution.__getitem__)
                return VerdictResult(text + grade + '"}', True, distribution, "logprobs")
        # No logprobs: sample the grade itself (the Teacher turns samples into votes).
        data = await self._post(
            "/completions",
            common
            | {"prompt": prompt + text, "max_tokens": 8, "temperature": request.temperature, "stop": ['"']},
        )
        return VerdictResult(text + (data["choices"][0].get("text") or "") + '"}', True)

    async def _verdict_chat(self, request: VerdictRequest) -> VerdictResult:
        body = chat_body(self.model, request, self.top_logprobs if self.use_logprobs else 0)
        try:
            data = await self._post("/chat/completions", body)
        except TeacherHTTPError as exc:
            if not (self.use_logprobs and "logprobs" in str(exc).lower() and " 400" in str(exc)):
                raise
            # The server cannot return logprobs: stop asking, fall back to votes.
            self.use_logprobs = False
            data = await self._post("/chat/completions", chat_body(self.model, request, 0))
        return chat_verdict(data, request.levels)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            last_attempt = attempt == self.max_retries
            try:
                response = await self._client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                if last_attempt:
                    raise TeacherHTTPError(
                        f"POST {url}: {type(exc).__name__} after {attempt + 1} attempts"
                    ) from exc
            else:
                if response.status_code < 400:
                    return response.json()
                retryable = response.status_code >= 500 or response.status_code == 429
                if not retryable or last_attempt:
                    raise TeacherHTTPError(
                        f"POST {url}: HTTP {response.status_code} after {attempt + 1} attempt(s): {response.text[:300]}"
                    )
            await asyncio.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")


def chat_body(model: str, request: VerdictRequest, top_logprobs: int) -> dict[str, Any]:
    """The /v1/chat/completions body of one judgement: what this backend sends and what a Batch request
    line carries (distill/teacher/batch.py). ``top_logprobs`` 0 asks for no logprobs."""
    body: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        # No prefill over the chat API: leave room for the JSON the prefill would have written.
        "max_tokens": request.max_tokens + 8,
        "temperature": request.temperature,
        "seed": request.seed,
    }
    if top_logprobs > 0:
        body |= {"logprobs": True, "top_logprobs": top_logprobs}
    return body


def chat_verdict(completion: Any, levels: Sequence[str]) -> VerdictResult:
    """A chat completion's answer and the grade distribution read from its logprobs at the verdict
    position: the one reading, for this backend's responses and for Batch result lines. ValueError when
    the completion has no ``choices[0]``."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        raise ValueError("the chat completion has no choices[0]")
    choice = choices[0]
    text = (choice.get("message") or {}).get("content") or ""
    reached = _GRADE_VALUE_START.search(text) is not None
    distribution = _distribution_at_verdict(choice.get("logprobs"), levels) if reached else None
    return VerdictResult(
        text=text,
        reached_verdict=reached,
        distribution=distribution,
        source="logprobs" if distribution else None,
    )


def _distribution_at_verdict(logprobs: Any, levels: Any) -> dict[str, float] | None:
    """Grade distribution from the top log-probabilities of the token where the grade value starts."""
    tokens = (logprobs or {}).get("content") or []
    if not tokens:
        return None
    text = "".join(t.get("token", "") for t in tokens)
    match = _GRADE_VALUE_START.search(text)
    if match is None:
        return None
    position, offset = match.end(), 0
    for entry in tokens:
        end = offset + len(entry.get("token", ""))
        if end > position:  # the token that produces the grade value's first character
            break
        offset = end
    else:
        return None
    candidates = entry.get("top_logprobs") or [
        {"token": entry.get("token", ""), "logprob": entry.get("logprob", 0.0)}
    ]
    return _match_levels(((c.get("token", ""), c["logprob"]) for c in candidates), levels)


def _match_levels(candidates: Iterable[tuple[str, float]], levels: Sequence[str]) -> dict[str, float] | None:
    """Softmax over the levels of the best top-k log-probability of a token starting each level."""
    found: dict[str, float] = {}
    floor = math.inf
    for token, logprob in candidates:
        floor = min(floor, float(logprob))
        # The token may carry the opening quote or a space (e.g. ' "Exact'): strip before matching.
        piece = token.lstrip(' "').lower()
        if not piece:
            continue
        for level in levels:
            if level.lower().startswith(piece):
                found[level] = max(found.get(level, -math.inf), float(logprob))
    if not found:
        return None
    return softmax({level: found.get(level, floor) for level in levels})


def chatml(messages: list[dict[str, str]]) -> str:
    """ChatML prompt up to the start of the assistant turn (SmolLM2, Qwen, ... use this format)."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"
