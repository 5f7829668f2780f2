"""The Jinja environment of the board's pages: templates/, autoescaping, and the filters and
globals the templates use."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from orchestration.settings import Settings
from web.board_views import parse_time
from web.security import CSRF_HEADER, OPERATOR_COOKIE
from web.temporal_gateway import workflow_id_for

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"


def _seconds(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _clock(value: Any) -> str:
    """A time of day in UTC with milliseconds, from an ISO string or a datetime."""
    moment = parse_time(value) if isinstance(value, str) else value
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def template_config(settings: Settings) -> TemplateConfig:
    """Jinja over templates/, autoescaping everything, with the board's filters."""
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    ui_url = settings.temporal.ui_url.rstrip("/")
    namespace = quote(settings.temporal.namespace, safe="")
    environment.globals["temporal_ui_url"] = ui_url

    def workflow_url(workflow_id: str) -> str:
        return f"{ui_url}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"

    environment.globals["workflow_url"] = workflow_url
    environment.globals["workflow_id_for"] = workflow_id_for
    environment.globals["csrf_header"] = CSRF_HEADER
    environment.globals["operator_login"] = bool(settings.web.operator_token)
    environment.globals["operator_cookie"] = OPERATOR_COOKIE
    environment.filters["seconds"] = _seconds
    environment.filters["clock"] = _clock
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))
