"""The web process as the Procfile runs it (uvicorn web.app:app): it starts, answers, and on
SIGTERM shuts down cleanly, closing its database pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from scripts.drive.processes import procfile_uvicorn_flags
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent



def wait_for_health(url: str, seconds: float = 30.0) -> int:
    give_up_at = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > give_up_at:
                raise
            time.sleep(0.2)


def test_web_process_serves_and_stops_cleanly_on_sigterm(postgres, dev_server):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": postgres,
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
    }
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "web.app:app", "--host", "127.0.0.1", "--port", str(port),
         *procfile_uvicorn_flags()],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for_health(f"http://127.0.0.1:{port}/health") == 200
        web.send_signal(signal.SIGTERM)
        output, _ = web.communicate(timeout=20)
    finally:
        if web.poll() is None:
            web.kill()
    # uvicorn finishes its shutdown, then re-raises the signal it got so that a supervisor sees
    # how it ended: -SIGTERM after a complete shutdown is a clean stop.
    assert web.returncode in (0, -signal.SIGTERM), output
    assert "shutdown failed" not in output.lower(), output
    # One JSON object per line, uvicorn's own lines from before the app's startup included.
    messages = [json.loads(line)["message"] for line in output.strip().splitlines()]
    assert "Application shutdown complete." in messages
