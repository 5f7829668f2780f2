"""Worker for the `shipping` task queue: ShippingWorkflow and its activities."""

import asyncio

from orchestration.shipping_workflow import ShippingWorkflow
from orchestration.worker import serve

if __name__ == "__main__":
    asyncio.run(
        serve(
            lambda settings: settings.temporal.shipping_task_queue,
            [ShippingWorkflow],
            lambda activities: activities.shipping_queue_activities(),
        )
    )
