"""Piccolo app registration: the order tables and their migrations folder."""

from pathlib import Path

from piccolo.conf.apps import AppConfig

from orchestration.tables import Event, Order, Payment

APP_CONFIG = AppConfig(
    app_name="orders",
    migrations_folder_path=str(Path(__file__).resolve().parent.parent / "piccolo_migrations"),
    table_classes=[Order, Payment, Event],
    migration_dependencies=[],
    commands=[],
)
