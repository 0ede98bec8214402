"""Local transformers checkpoint as teacher (e.g. a fine-tuned ELLM-rele from `relevance teacher sft`).

Same protocol as the llama.cpp backend: the tokenizer's chat template, the assistant prefill,
CoT generation stopped at the ``"grade"`` key, then the next-token logits at ``"grade": "`` give
the distribution over the grade levels. torch and transformers are imported here only.

``verdict`` judges one request (the service's /explain and ``relevance annotate``); ``verdict_batch``
judges many at once, greedily, with the same protocol: padded batches of similar lengths under a
token budget, the verdict read at each row's last real token. It is what labels a transfer set on a
GPU (distill/teacher/gpu/), and a test checks it gives what ``verdict`` gives one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teacher.backends.base import (
    Backend,
    VerdictRequest,
    VerdictResult,
    check_abort,
    continuation_tokens,
    hf_token_ids,
    level_distribution,
    level_first_tokens,
    run_abortable,
)
from teacher.backends.llamacpp import TeacherModelError
from teacher.prompt import GRADE_KEY, GRADE_KEY_PREFIX


class TransformersBackend(Backend):
    def __init__(
        self, checkpoint: str | Path, *, n_threads: int = 2, device: str = "cpu", dtype: str = "float32"
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise TeacherModelError(f"not a transformers checkpoint (no config.json): {path}")
        torch.set_num_threads(n_threads)
        self._torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
        self.model.eval()
        # Tokens through the model by verdict_batch (what the GPU run's tokens/s are computed from):
        # real and padded positions of the verdict forwards, prompt and generated tokens of CoT generation.
        self.batch_tokens_seen = {"verdict": 0, "verdict_padded": 0, "generation_prompt": 0, "generated": 0}
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self._lock = threading.Lock()
        self.backend_id = f"hf:{path.name}"

    def render_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def tokenize(self, text: str) -> list[int]:
        return hf_token_ids(self.tokenizer, [text])[0]

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
                ids = torch.tensor([self.tokenize(prompt + text)], device=self.device)
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
        logits = self.model(torch.tensor([ids], device=self.device)).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    def _level_distribution(self, prefix_text: str, levels: Any) -> dict[str, float]:
        prefix = self.tokenize(prefix_text)
        level_tokens = {
            level: continuation_tokens(prefix, prefix_text, level, self.tokenize, self.tokenize)
            for level in levels
        }
        return level_distribution(prefix, level_tokens, self._logprobs)

    def verdict_batch(
        self,
        requests: Sequence[VerdictRequest],
        *,
        batch_tokens: int = 8192,
        progress: Callable[[int], None] | None = None,
    ) -> list[VerdictResult]:
        """Greedy verdicts of many requests, in order: CoT generation in left-padded batches (each row
        stops at the grade key), then one right-padded forward per batch for the verdicts. A batch holds
        at most ``batch_tokens`` padded tokens (rows of similar lengths together). ``progress(n)`` is
        called as n more requests are done."""
        if not requests:
            return []
        levels = list(requests[0].levels)
        for number, request in enumerate(requests):
            if request.temperature > 0:
                raise ValueError(
                    f"request {number}: verdict_batch is greedy only (temperature {request.temperature})"
                )
            if list(request.levels) != levels:
                raise ValueError(f"request {number}: levels {list(request.levels)}, request 0 has {levels}")
        firsts = level_first_tokens(self.tokenize, levels)
        prompts = [self.render_prompt(r.messages) for r in requests]
        texts = [r.prefill for r in requests]
        reached = [True] * len(requests)
        cot = [i for i, r in enumerate(requests) if r.mode == "cot"]
        if cot:
            generated = self._generate_batch(
                hf_token_ids(self.tokenizer, [prompts[i] + texts[i] for i in cot]),
                [requests[i].max_tokens for i in cot],
                batch_tokens,
            )
            for i, tokens in zip(cot, generated, strict=True):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                if GRADE_KEY in text:
                    texts[i] += text[: text.index(GRADE_KEY)] + GRADE_KEY_PREFIX
                else:
                    texts[i] += text
                    reached[i] = False
                    if progress:
                        progress(1)
        todo = [i for i in range(len(requests)) if reached[i]]
        distributions = self._verdict_logits_batch(
            hf_token_ids(self.tokenizer, [prompts[i] + texts[i] for i in todo]),
            firsts,
            batch_tokens,
            progress,
        )
        results = [VerdictResult(text=t, reached_verdict=False) for t in texts]
        for i, logits in zip(todo, distributions, strict=True):
            distribution = dict(
                zip(levels, self._torch.softmax(logits.double(), dim=0).tolist(), strict=True)
            )
            grade = max(distribution, key=distribution.__getitem__)
            results[i] = VerdictResult(
                text=texts[i] + grade + '"}', reached_verdict=True, distribution=distribution, source="logits"
            )
        return results

    def _padded(self, rows: Sequence[list[int]], *, left: bool) -> tuple[Any, Any]:
        """(ids, attention mask) of ``rows`` padded to the longest: on the left for generation (every
        row ends where it continues), on the right for the verdict forward (positions unchanged)."""
        torch = self._torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for number, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[number, span] = torch.tensor(row)
            mask[number, span] = 1
        return ids, mask

    def _batches(self, lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
        """Indices grouped by similar length, each group's rows × longest row ≤ batch_tokens (at least one row)."""
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches: list[list[int]] = []
        for index in order:
            if batches and (len(batches[-1]) + 1) * lengths[index] <= batch_tokens:
                batches[-1].append(index)
            else:
                batches.append([index])
        return batches

    def _verdict_logits_batch(
        self,
        sequences: Sequence[list[int]],
        firsts: Sequence[int],
        batch_tokens: int,
        progress: Callable[[int], None] | None,
    ) -> list[Any]:
        """The levels' first-token logits after each sequence (right padding; the output layer is
        applied to each row's last real position only, never to the whole 49k-wide sequence)."""
        torch = self._torch
        out: list[Any] = [None] * len(sequences)
        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        columns = torch.tensor(list(firsts), device=self.device)
        for batch in self._batches([len(s) for s in sequences], batch_tokens):
            ids, mask = self._padded([sequences[i] for i in batch], left=False)
            last = torch.tensor([len(sequences[i]) - 1 for i in batch], device=self.device)
            self.batch_tokens_seen["verdict"] += int(mask.sum())
            self.batch_tokens_seen["verdict_padded"] += mask.numel()
            with self._lock, torch.inference_mode():
                hidden = decoder(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).last_hidden_state
                rows = torch.arange(len(batch), device=self.device)
                logits = head(hidden[rows, last])[:, columns].float().cpu()
            for row, i in enumerate(batch):
                out[i] = logits[row]
            if progress:
                progress(len(batch))
        return out

    def _generate_batch(
        self, sequences: Sequence[list[int]], max_tokens: Sequence[int], batch_tokens: int
    ) -> list[list[int]]:
        """Greedy continuations (token ids, each cut at its own ``max_tokens``) of each sequence: left
        padding, every row stopping at the grade key."""
        torch = self._torch
        out: list[list[int]] = [[] for _ in sequences]
        budget = max(max_tokens)
        for batch in self._batches([len(s) + budget for s in sequences], batch_tokens):
            ids, mask = self._padded([sequences[i] for i in batch], left=True)
            width = ids.shape[1]
            with self._lock, torch.inference_mode():
                generated = self.model.generate(
                    ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max(max_tokens[i] for i in batch),
                    do_sample=False,
                    stop_strings=[GRADE_KEY],
                    tokenizer=self.tokenizer,
                    pad_token_id=self.pad_id,
                )[:, width:].cpu()
            self.batch_tokens_seen["generation_prompt"] += int(mask.sum())
            for row, i in enumerate(batch):
                tokens = generated[row, : max_tokens[i]].tolist()
                out[i] = tokens  # pads after a row's stop are special tokens: decode skips them
                self.batch_tokens_seen["generated"] += sum(t != self.pad_id for t in tokens)
        return out
