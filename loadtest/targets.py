"""HTTP targets: how one workload request becomes one HTTP call on each server under test.

The same (query, N items) request is sent to every server, with item text rendered by the
project's TextTemplate, so each server does the same work per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from core.text_template import TextTemplate
from loadtest.workload import Request

TargetKind = Literal["relevance", "infinity-embeddings", "infinity-rerank"]


@dataclass(frozen=True)
class Target:
    """A server under test: base URL, which API it speaks, and (for Infinity) the served model name."""

    name: str
    base_url: str
    kind: TargetKind = "relevance"
    model: str = ""
    template: TextTemplate = TextTemplate()

    @property
    def path(self) -> str:
        return {"relevance": "/score", "infinity-embeddings": "/embeddings", "infinity-rerank": "/rerank"}[
            self.kind
        ]

    @property
    def metrics_url(self) -> str:
        return self.base_url.rstrip("/") + "/metrics"

    def body(self, request: Request) -> bytes:
        if self.kind == "relevance":
            return request.body
        query = self.template.query_text(request.query)
        texts = [self.template.item_text(item) for item in request.items]
        if self.kind == "infinity-embeddings":
            # A bi-encoder scores a request by embedding the query and every item (cosine is client-side).
            return orjson.dumps({"model": self.model, "input": [query, *texts]})
        return orjson.dumps(
            {"model": self.model, "query": query, "documents": texts, "return_documents": False}
        )
