"""Worker for the `shipping` task queue: ShippingWorkflow and the shipping activities.

Usage: python -m orchestration.shipping.worker (the Procfile's `shipping-worker`)."""

from orchestration.shipping.activities import ShippingActivities
from orchestration.shipping.workflow import ShippingWorkflow
from orchestration.worker import run_process, serve


def main() -> None:
    run_process(serve(lambda settings: settings.temporal.shipping_task_queue, [ShippingWorkflow], ShippingActivities))


if __name__ == "__main__":
    main()
