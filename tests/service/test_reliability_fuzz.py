"""Schemathesis against the running service's own OpenAPI schema: generated valid and invalid
requests to every route must never get a 5xx, and every response must match the schema (status
code documented, content type, body shape)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from service_harness import Server, tiny_bundle

pytestmark = pytest.mark.llm

ADMIN_KEY = "fuzz-admin-key-0123"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    bundle = tiny_bundle(root / "cross", "cross")
    # Small limits so generated bodies hit them; an explain teacher that is never reached (keys are
    # configured so auth runs, but fuzzed keys are wrong).
    server = Server(
        bundle,
        root / "fuzz.log",
        max_items=8,
        max_field_chars=200,
        api_keys=ADMIN_KEY,
        explain_teacher="llamacpp",
        explain_mode="score",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    # 413 is this service's documented answer to too many items (and too large a body): a rejection.
    # It is also its answer to a schema-valid request that cannot meet its deadline at the measured
    # model speed (request_too_costly, e.g. X-Deadline-Ms: 1): capacity, which no schema can state.
    config = SchemathesisConfig.from_str(
        "[checks.negative_data_rejection]\nexpected-statuses = [400, 401, 404, 405, 409, 413, 415, 422, 429]\n"
        "[checks.positive_data_acceptance]\n"
        "expected-statuses = [200, 401, 403, 404, 409, 413, 429, 500, 502, 503, 504]\n"
    )
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", config=config)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_responses_match_the_schema(api_schema, mode):
    # schemathesis' own pytest plugin does not run under pytest 9 yet: its Hypothesis strategy over
    # every operation, driven by @given here, is the same generator and the same checks.
    @given(case=api_schema.as_strategy(mode))
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case):
        case.call_and_validate(timeout=30)

    fuzz()


def test_the_schema_covers_every_route(api_schema):
    paths = set(api_schema.raw_schema["paths"])
    assert {"/score", "/explain", "/admin/reload", "/healthz", "/readyz", "/metrics"} <= paths, paths
