"""One JSON object per log line, with the order, workflow and activity context flattened in.

Temporal's workflow.logger and activity.logger attach their context as `temporal_workflow` /
`temporal_activity` extras; those become workflow_id, run_id, step (the activity) and attempt.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from temporalio import activity, workflow

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        workflow_info = extras.pop("temporal_workflow", None) or {}
        activity_info = extras.pop("temporal_activity", None) or {}
        if workflow_info:
            entry["workflow_id"] = workflow_info.get("workflow_id")
            entry["run_id"] = workflow_info.get("run_id")
            entry["workflow_type"] = workflow_info.get("workflow_type")
        if activity_info:
            entry["workflow_id"] = activity_info.get("workflow_id")
            entry["run_id"] = activity_info.get("workflow_run_id")
            entry["step"] = activity_info.get("activity_type")
            entry["attempt"] = activity_info.get("attempt")
        entry.update(extras)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    # The context goes into fields of its own, not into the message text.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's loggers print plain text through handlers of their own; send them to the JSON
    # handler instead, so the web process writes one JSON object per line like the others. A
    # logger uvicorn silenced (no handler, not propagating: `--no-access-log`) stays silent.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        if server_logger.handlers or server_logger.propagate:
            server_logger.handlers[:] = []
            server_logger.propagate = True
    # The SDK's own per-poll chatter is noise at INFO.
    logging.getLogger("temporalio").setLevel(logging.WARNING)
    for name in ("temporalio.workflow", "temporalio.activity"):
        logging.getLogger(name).setLevel(level)
