"""The JSON API fuzzed with schemathesis from its own OpenAPI schema (/schema/openapi.json).

The app is served over real HTTP by uvicorn in the test's event loop (as in
tests/test_browser.py), so it talks to the session's real Temporal dev server, workers and
PostgreSQL. schemathesis sends its requests with `requests`, which blocks, so the cases run in a
thread while the loop serves them.

FUZZ_CASES cases in all (default 150, for CI: well under a minute), split evenly over the
operations and over valid and invalid data; the long form is
`FUZZ_CASES=1000 scripts/test tests/test_fuzz_api.py`.
Every response must be no 5xx, have a documented status code, content type, headers and body
schema; invalid data must be rejected with a 4xx and valid data must not be (404/409 allowed).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import AsyncIterator

import hypothesis
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.client import Client

from tests.conftest import served_over_http
from web.app import create_app

# schemathesis's own strategies use `random`, which Hypothesis warns about on every run.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

FUZZ_CASES = int(os.environ.get("FUZZ_CASES", "150"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
REQUEST_TIMEOUT_SECONDS = 30



@pytest_asyncio.fixture(scope="module")
async def base_url(workers: Client) -> AsyncIterator[str]:
    # The database fixture owns the shared pool; the app must not close it.
    async with served_over_http(create_app(temporal_client=workers, manage_pool=False)) as url:
        yield url


@dataclass
class FuzzReport:
    cases: int = 0
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)


def takes_input(operation: schemathesis.APIOperation) -> bool:
    return any(True for _ in operation.iter_parameters()) or len(operation.body) > 0


def fuzz(base_url: str, total_cases: int) -> FuzzReport:
    """Run about `total_cases` cases generated from the server's schema against it, keeping every
    failure instead of stopping at the first, so that one run reports them all."""
    session = requests.Session()
    schema = schemathesis.openapi.from_dict(
        session.get(f"{base_url}/schema/openapi.json", timeout=REQUEST_TIMEOUT_SECONDS).json()
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    # An operation without parameters or body (/health) has no invalid request, and only one
    # valid one; it goes first, so that the cases it cannot use go to the others.
    operations.sort(key=takes_input)
    runs = [
        (operation, mode)
        for operation in operations
        for mode in (MODES if takes_input(operation) else MODES[:1])
    ]
    report = FuzzReport()

    for run_index, (operation, mode) in enumerate(runs):
        runs_left = len(runs) - run_index
        per_run = max(1, -(-(total_cases - report.cases) // runs_left))

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=per_run,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=base_url, session=session, timeout=REQUEST_TIMEOUT_SECONDS
            )
            report.cases += 1
            report.server_errors += response.status_code >= 500
            try:
                case.validate_response(response, checks=CHECKS)
            except (Failure, FailureGroup) as failed:
                found = failed.exceptions if isinstance(failed, FailureGroup) else [failed]
                report.failures.extend(
                    f"{mode.value} {case.method} {case.formatted_path} → "
                    f"{response.status_code}: {failure.title}\n{failure.message}\n"
                    f"reproduce: {case.as_curl_command()}"
                    for failure in found
                )

        run()
    return report


async def test_api_conforms_to_its_schema_under_fuzzing(base_url: str) -> None:
    report = await asyncio.to_thread(fuzz, base_url, FUZZ_CASES)
    print(
        f"\nfuzzed {report.cases} cases: {report.server_errors} 5xx, "
        f"{len(report.failures)} failed checks"
    )
    assert report.cases >= FUZZ_CASES * 0.9, "far fewer cases ran than asked for"
    assert report.server_errors == 0
    assert not report.failures, "\n".join(report.failures)
