"""Worker for the `shipping` task queue: ShippingWorkflow and the shipping activities.

Usage: python -m orchestration.shipping.worker (the Procfile's `shipping-worker`)."""

import asyncio

from orchestration.shipping.activities import ShippingActivities
from orchestration.shipping.workflow import ShippingWorkflow
from orchestration.worker import serve

if __name__ == "__main__":
    asyncio.run(
        serve(
            lambda settings: settings.temporal.shipping_task_queue, [ShippingWorkflow], ShippingActivities
        )
    )
