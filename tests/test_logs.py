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


@pytest.fixture
def restored_logging():
    """configure_logging rewires the root and uvicorn loggers; put them back afterwards."""
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access"]
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate, logging.getLogger(name).level) for name in names}
    yield
    for name, (handlers, propagate, level) in saved.items():
        restored = logging.getLogger(name)
        restored.handlers[:], restored.propagate, restored.level = handlers, propagate, level


@pytest.mark.parametrize("access_log", [True, False])
def test_uvicorn_access_lines_follow_its_flag_as_json(access_log, restored_logging, capsys):
    """`uvicorn --no-access-log` (the Procfile's web line) must stay quiet after the app sets up
    its JSON logging; it printed a line per request before, a tenth of the web process's CPU."""
    import uvicorn

    from orchestration.logs import configure_logging

    uvicorn.Config(app="web.app:app", access_log=access_log)  # configures uvicorn's loggers
    configure_logging()
    logging.getLogger("uvicorn.access").info('127.0.0.1:1 - "GET /health HTTP/1.1" 200')
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["logger"] for line in lines] == (["uvicorn.access"] if access_log else []) + ["uvicorn.error"]


def test_log_level_drops_the_lines_below_it(restored_logging, capsys):
    """LOG_LEVEL=WARNING keeps a failed attempt's line and drops a state transition's and uvicorn's
    startup lines; ERROR drops the warnings too, the SDK's own included."""
    import uvicorn

    from orchestration.logs import configure_logging

    uvicorn.Config(app="web.app:app")  # configures uvicorn's loggers, at INFO
    configure_logging("warning")
    logging.getLogger("temporalio.workflow").info("order received -> validated", extra={"event": "state_transition"})
    logging.getLogger("uvicorn.error").info("Application startup complete.", extra={"event": "startup"})
    logging.getLogger("temporalio.activity").warning("activity attempt failed", extra={"event": "attempt_failed"})
    configure_logging("ERROR")
    logging.getLogger("temporalio.core").warning("poll retried", extra={"event": "sdk_core_log"})
    logging.getLogger("temporalio.activity").warning("activity attempt failed", extra={"event": "attempt_failed"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["attempt_failed"]

