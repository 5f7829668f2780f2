"""Piccolo's engine, declared from the environment (DATABASE_URL via the settings module)."""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.postgres import PostgresEngine

from orchestration.settings import get_settings

DB = PostgresEngine(config={"dsn": get_settings().database.url})

APP_REGISTRY = AppRegistry(apps=["orchestration.piccolo_app"])
