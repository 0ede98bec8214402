"""Which onnxruntime execution provider to use: a pure function of the request and what is installed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class ProviderError(RuntimeError):
    """The requested provider is not available and the settings say not to fall back."""


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    providers: list[str]  # in priority order, as onnxruntime.InferenceSession takes them
    device: Literal["cpu", "cuda"]
    warning: str | None = None  # set when the choice differs from the request


def choose_provider(
    requested: Literal["cpu", "cuda", "auto"], available: list[str], *, strict: bool = False
) -> ProviderChoice:
    """``cpu`` → CPU; ``cuda`` → CUDA if installed, else CPU with a warning (or ProviderError if strict);
    ``auto`` → CUDA when installed, else CPU (no warning: CPU is an expected outcome of auto)."""
    has_cuda = CUDA in available
    if requested == "cpu":
        return ProviderChoice([CPU], "cpu")
    if has_cuda:
        return ProviderChoice([CUDA, CPU], "cuda")
    if requested == "auto":
        return ProviderChoice([CPU], "cpu")
    message = (
        f"RELEVANCE_PROVIDER=cuda but onnxruntime offers only {', '.join(available) or 'no providers'} "
        "(install onnxruntime-gpu: pip install '.[gpu]')"
    )
    if strict:
        raise ProviderError(message)
    return ProviderChoice([CPU], "cpu", warning=message + "; falling back to CPU")
