"""The workers' Prometheus metrics: activity coroutines running and activity attempts by outcome."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

from orchestration.metrics import ATTEMPTS_METRIC, RUNNING_METRIC
from scripts.bench.orders import HTTP_ERRORS, HttpClient


async def scrape_worker_metrics(client: HttpClient, urls: Sequence[str]) -> dict[str, Any]:
    """Per metrics URL: activity coroutines running and attempts by outcome, or the error."""
    scraped: dict[str, Any] = {}
    for url in urls:
        try:
            response = await client.get(url, timeout=5)
        except HTTP_ERRORS as err:
            scraped[url] = {"error": f"{type(err).__name__}: {err}"}
            continue
        if response.status_code != 200:
            scraped[url] = {"error": f"HTTP {response.status_code}"}
            continue
        running: Optional[float] = None
        attempts: Counter[str] = Counter()
        for line in response.text.splitlines():
            name, _, rest = line.partition("{")
            if name == RUNNING_METRIC:
                running = float(line.rsplit(" ", 1)[1])
            elif name == ATTEMPTS_METRIC:
                outcome = rest.split('outcome="', 1)[1].split('"', 1)[0]
                attempts[outcome] += int(float(line.rsplit(" ", 1)[1]))
        scraped[url] = {"running": running, "attempts": dict(attempts)}
    return scraped


def attempts_during(before: dict[str, Any], after: dict[str, Any]) -> Counter[str]:
    moved: Counter[str] = Counter()
    for url, sample in after.items():
        earlier = before.get(url, {}).get("attempts", {})
        for outcome, count in sample.get("attempts", {}).items():
            moved[outcome] += count - earlier.get(outcome, 0)
    return moved


def coroutines_running(scraped: dict[str, Any]) -> Optional[int]:
    """Sum over the workers; None when any worker could not be read."""
    values = [sample.get("running") for sample in scraped.values()]
    return None if not values or None in values else int(sum(values))
