"""Piccolo's engine, declared from the environment (DATABASE_URL via the settings module)."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from orchestration.logs import settings_or_exit

DB = PostgresEngine(config={"dsn": settings_or_exit().database.url})

APP_REGISTRY = AppRegistry(apps=["orchestration.piccolo_app"])
