"""Settings read from the environment: a value the process cannot use stops it with a sentence
naming the variable and what it takes, not a bare parsing error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.logs import BAD_SETTING_EXIT_STATUS
from orchestration.settings import Settings

REPO_ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(("raw", "level"), [(None, "INFO"), ("", "INFO"), ("warning", "WARNING"), ("ERROR", "ERROR")])
def test_log_level_setting(raw, level, monkeypatch):
    if raw is None:
        monkeypatch.delenv("LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("LOG_LEVEL", raw)
    assert Settings().log_level == level


def test_an_unknown_log_level_is_refused_with_the_levels_to_use(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match=r"LOG_LEVEL='loud' is not a log level: use one of DEBUG, INFO, WARNING, ERROR\.$"):
        Settings()


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("WEB_PORT", "eighty", "WEB_PORT='eighty' is not a whole number."),
        ("MAX_ORDERS_IN_FLIGHT", "1.5", "MAX_ORDERS_IN_FLIGHT='1.5' is not a whole number."),
        ("ORDER_DEADLINE_SECONDS", "15s", "ORDER_DEADLINE_SECONDS='15s' is not a number."),
        ("ADMISSION_WAIT_SECONDS", "soon", "ADMISSION_WAIT_SECONDS='soon' is not a number."),
    ],
)
def test_a_malformed_number_is_refused_naming_its_variable(name, raw, message, monkeypatch):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError) as refused:
        Settings()
    assert str(refused.value) == message


@pytest.mark.parametrize(("name", "raw", "field"), [("WEB_PORT", "8080", "port"), ("ADMISSION_WAIT_SECONDS", "2.5", "admission_wait_seconds")])
def test_a_number_is_read(name, raw, field, monkeypatch):
    monkeypatch.setenv(name, raw)
    assert getattr(Settings().web, field) == float(raw)


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "orchestration.order.worker"],
        ["-m", "orchestration.shipping.worker"],
        ["scripts/migrate.py"],
        ["-m", "uvicorn", "web.app:app", "--port", "0"],
    ],
    ids=["order-worker", "shipping-worker", "migrate", "web"],
)
def test_a_process_given_a_bad_setting_stops_with_one_json_line_naming_it(command):
    # Each entry point of the Procfile; none gets as far as connecting to anything.
    stopped = subprocess.run(
        [sys.executable, *command],
        env={**os.environ, "MAX_ORDERS_IN_FLIGHT": "many"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stopped.returncode == BAD_SETTING_EXIT_STATUS, stopped.stdout + stopped.stderr
    lines = (stopped.stdout + stopped.stderr).splitlines()
    assert len(lines) == 1, lines  # no traceback
    line = json.loads(lines[0])
    assert line["level"] == "error" and line["event"] == "bad_setting"
    assert line["message"] == "MAX_ORDERS_IN_FLIGHT='many' is not a whole number."
