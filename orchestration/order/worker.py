"""Worker for the `orders` task queue: OrderWorkflow and the order's activities.

Usage: python -m orchestration.order.worker (the Procfile's `order-worker`)."""

from orchestration.order.activities import OrderActivities
from orchestration.order.workflow import OrderWorkflow
from orchestration.worker import run_process, serve


def main() -> None:
    run_process(serve(lambda settings: settings.temporal.orders_task_queue, [OrderWorkflow], OrderActivities))


if __name__ == "__main__":
    main()
