"""Wait for PostgreSQL at DATABASE_URL, then apply every Piccolo migration (`forwards all`).

Usage: python scripts/migrate.py [--wait-seconds 60]

The Procfile's web line runs this before uvicorn: honcho starts every process at once, so the
database may still be initialising. Applying migrations twice is harmless (Piccolo skips the ones
already recorded). Exits non-zero, with the reason, if the database never answers or a migration
fails. It writes JSON log lines like the process it runs before, Piccolo's report included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

if not __package__:
    # Run as a file, this script's folder is on sys.path and the checkout is not.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestration.logs import configure_logging, settings_or_exit

REPO_ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("migrate")


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def wait_for_database(url: str, wait_seconds: float) -> None:
    give_up_at = time.monotonic() + wait_seconds
    announced = False
    while True:
        try:
            connection = await asyncpg.connect(url, timeout=5)
        except Exception as err:  # refused, still starting, database not created yet, ...
            if time.monotonic() > give_up_at:
                raise TimeoutError(
                    f"PostgreSQL at {_redacted(url)} did not answer within {wait_seconds:.0f} s; "
                    f"last error: {type(err).__name__}: {err}"
                ) from err
            if not announced:
                logger.info(
                    "waiting for PostgreSQL",
                    extra={"event": "dependency_wait", "database": _redacted(url), "error": str(err)},
                )
                announced = True
            await asyncio.sleep(1.0)
        else:
            await connection.close()
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait-seconds", type=float, default=60.0)
    args = parser.parse_args()

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    url = settings.database.url
    try:
        asyncio.run(wait_for_database(url, args.wait_seconds))
    except TimeoutError as err:
        logger.error(str(err), extra={"event": "migration_failed"})
        return 1
    logger.info("PostgreSQL is up; applying migrations", extra={"event": "migrations_started", "database": _redacted(url)})
    piccolo = Path(sys.executable).parent / "piccolo"
    result = subprocess.run(
        [str(piccolo), "migrations", "forwards", "all"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    for line in (result.stdout + result.stderr).splitlines():
        if line.strip(" -"):
            logger.info(line.strip(), extra={"event": "migration_output"})
    if result.returncode != 0:
        logger.error(
            "piccolo migrations failed", extra={"event": "migration_failed", "exit_status": result.returncode}
        )
        return result.returncode
    logger.info("database schema is up to date", extra={"event": "migrations_applied"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
