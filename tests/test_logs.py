"""The structured logs: one JSON object per line, with the order, workflow, run, step and attempt
of the activity that wrote it, and the event it reports."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
import json
import logging

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from orchestration import flaky
from orchestration.order.activities import OrderActivities
from orchestration.logs import JsonFormatter
from orchestration.models import OrderRef


async def test_a_failed_attempt_is_one_json_line_with_its_context(database, monkeypatch, caplog):
    """random.random is pinned to flaky_call's failure branch, in this test only."""
    monkeypatch.setattr(flaky.random, "random", lambda: 0.1)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, workflow_id="order-log-1", workflow_run_id="run-1", activity_type="validate_order", attempt=3,
        scheduled_time=datetime.now(timezone.utc),
    )
    caplog.set_level(logging.INFO)
    with pytest.raises(ApplicationError):
        await env.run(OrderActivities(attempt_timeout=0.5).validate_order, OrderRef("log-1"))

    [record] = [r for r in caplog.records if getattr(r, "event", None) == "attempt_failed"]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["order_id"] == "log-1"
    assert (entry["workflow_id"], entry["run_id"]) == ("order-log-1", "run-1")
    assert (entry["step"], entry["attempt"]) == ("validate_order", 3)
    assert entry["error"] == "RuntimeError: Forced failure for testing"
    assert entry["next"] == "retry"
    assert entry["time"].endswith("+00:00")
