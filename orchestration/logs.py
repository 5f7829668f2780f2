"""One JSON object per log line, with the order, workflow and activity context flattened in.

Temporal's workflow.logger and activity.logger attach their context as `temporal_workflow` /
`temporal_activity` extras; those become workflow_id, run_id, step (the activity) and attempt.
The SDK's native core logs on its own (a poll retried while the server is away, a task it could
not report); `CORE_LOGGING` sends those lines through the same handler, as `sdk_core_log` events.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from temporalio import activity, workflow
from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

from orchestration.settings import Settings, SettingsError, get_settings

# uvicorn adds `color_message`, its message with terminal colour codes.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        core_log = extras.pop("temporal_log", None)
        if core_log is not None:
            entry["event"] = "sdk_core_log"
            entry["core_target"] = core_log.target
            # Its fields (an `error`, a task token) never replace the entry's own keys.
            entry.update({key: value for key, value in core_log.fields.items() if key not in entry})
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


# For the runtime of every process's Temporal client (orchestration/metrics.py, web/temporal_gateway.py):
# without it the core writes its warnings to stderr as coloured text, many a second during an outage.
CORE_LOGGING = LoggingConfig(
    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
    forwarding=LogForwardingConfig(
        logger=logging.getLogger("temporalio.core"),
        append_target_to_name=False,
        prepend_target_on_message=False,
        append_log_fields_to_message=False,
    ),
)


def configure_logging(level: int | str = logging.INFO) -> None:
    """Every logger writes JSON lines to stdout, those below `level` (a number, or a name such as
    "WARNING") left out."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    # The context goes into fields of its own, not into the message text.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python warnings (a library's DeprecationWarning, Piccolo's connection warning) as log lines too.
    logging.captureWarnings(True)
    # uvicorn's loggers print plain text through handlers of their own; send them to the JSON
    # handler instead, so the web process writes one JSON object per line like the others. A
    # logger uvicorn silenced (no handler, not propagating: `--no-access-log`) stays silent.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        if server_logger.handlers or server_logger.propagate:
            server_logger.handlers[:] = []
            server_logger.propagate = True
            server_logger.setLevel(level)
    # The SDK's own per-poll chatter is noise at INFO.
    logging.getLogger("temporalio").setLevel(max(level, logging.WARNING))
    for name in ("temporalio.workflow", "temporalio.activity"):
        logging.getLogger(name).setLevel(level)


BAD_SETTING_EXIT_STATUS = 2
"""A process stopped by a setting it cannot use exits with this, as a program does for a bad
command line: restarting it changes nothing until the variable is fixed."""


def settings_or_exit() -> Settings:
    """This process's settings. A variable it cannot use stops the process with one JSON line
    naming the variable and what it should hold, not with a traceback to read from the bottom."""
    try:
        return get_settings()
    except SettingsError as err:
        configure_logging()  # LOG_LEVEL itself may be the bad one; the line is an error in any case
        logging.getLogger(__name__).error(str(err), extra={"event": "bad_setting"})
        raise SystemExit(BAD_SETTING_EXIT_STATUS) from None
