"""Local transformers checkpoint as teacher (e.g. a fine-tuned ELLM-rele from `relevance teacher sft`).

Same protocol as the llama.cpp backend: the tokenizer's chat template, the assistant prefill,
CoT generation stopped at the ``"grade"`` key, then the next-token logits at ``"grade": "`` give
the distribution over the grade levels. torch and transformers are imported here only.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from teacher.backends.base import (
    Backend,
    VerdictRequest,
    VerdictResult,
    check_abort,
    continuation_tokens,
    level_distribution,
    run_abortable,
)
from teacher.backends.llamacpp import TeacherModelError
from teacher.prompt import GRADE_KEY, GRADE_KEY_PREFIX


class TransformersBackend(Backend):
    def __init__(self, checkpoint: str | Path, *, n_threads: int = 2) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise TeacherModelError(f"not a transformers checkpoint (no config.json): {path}")
        torch.set_num_threads(n_threads)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
        self.model.eval()
        self._lock = threading.Lock()
        self.backend_id = f"hf:{path.name}"

    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    async def verdict(self, request: VerdictRequest) -> VerdictResult:
        return await run_abortable(self._verdict_blocking, request)

    def _verdict_blocking(self, request: VerdictRequest, abort: threading.Event) -> VerdictResult:
        from transformers import StoppingCriteriaList

        torch = self._torch
        prompt = self.render_prompt(request.messages)
        text = request.prefill
        with self._lock, torch.inference_mode():
            check_abort(abort, "before the generation")  # e.g. cancelled while waiting for the lock
            if request.mode == "cot":
                ids = torch.tensor([self.tokenize(prompt + text)])
                sampling: dict[str, Any] = (
                    {"do_sample": True, "temperature": request.temperature}
                    if request.temperature > 0
                    else {"do_sample": False}
                )
                torch.manual_seed(request.seed)
                out = self.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=request.max_tokens,
                    stop_strings=[GRADE_KEY],
                    tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.eos_token_id,
                    # Checked after every generated token: a cancelled call stops within one.
                    stopping_criteria=StoppingCriteriaList([lambda _ids, _scores, **_: abort.is_set()]),
                    **sampling,
                )
                check_abort(abort, "during the generation")
                generated = self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
                if GRADE_KEY not in generated:
                    return VerdictResult(text=text + generated, reached_verdict=False)
                text += generated[: generated.index(GRADE_KEY)] + GRADE_KEY_PREFIX
            check_abort(abort, "before the grade-level evaluation")
            distribution = self._level_distribution(prompt + text, request.levels)
        grade = max(distribution, key=distribution.__getitem__)
        return VerdictResult(
            text=text + grade + '"}', reached_verdict=True, distribution=distribution, source="logits"
        )

    def _logprobs(self, ids: list[int]) -> Any:
        torch = self._torch
        logits = self.model(torch.tensor([ids])).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    def _level_distribution(self, prefix_text: str, levels: Any) -> dict[str, float]:
        prefix = self.tokenize(prefix_text)
        level_tokens = {
            level: continuation_tokens(prefix, prefix_text, level, self.tokenize, self.tokenize)
            for level in levels
        }
        return level_distribution(prefix, level_tokens, self._logprobs)
