"""Worker for the `orders` task queue: OrderWorkflow and the order's activities.

Usage: python -m orchestration.order.worker (the Procfile's `order-worker`)."""

import asyncio

from orchestration.order.activities import OrderActivities
from orchestration.order.workflow import OrderWorkflow
from orchestration.worker import serve

if __name__ == "__main__":
    asyncio.run(
        serve(lambda settings: settings.temporal.orders_task_queue, [OrderWorkflow], OrderActivities)
    )
