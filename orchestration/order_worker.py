"""Worker for the `orders` task queue: OrderWorkflow and the order activities."""

import asyncio

from orchestration.order_workflow import OrderWorkflow
from orchestration.worker import serve

if __name__ == "__main__":
    asyncio.run(
        serve(
            lambda settings: settings.temporal.orders_task_queue,
            [OrderWorkflow],
            lambda activities: activities.order_queue_activities(),
        )
    )
