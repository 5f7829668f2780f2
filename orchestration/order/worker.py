"""Worker for the `orders` task queue: OrderWorkflow, the order's activities, and the sweep
that refunds charges recorded after their order closed.

Usage: python -m orchestration.order.worker (the Procfile's `order-worker`)."""

from orchestration.order.activities import OrderActivities
from orchestration.order.late_charges import LateChargeRefundWorkflow, sweep_late_charges
from orchestration.order.workflow import OrderWorkflow
from orchestration.worker import run_process, serve

WORKFLOWS = [OrderWorkflow, LateChargeRefundWorkflow]


def main() -> None:
    run_process(
        serve(
            lambda settings: settings.temporal.orders_task_queue,
            WORKFLOWS,
            OrderActivities,
            companions=[sweep_late_charges],
        )
    )


if __name__ == "__main__":
    main()
