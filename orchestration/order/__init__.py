"""The order: OrderWorkflow on the `orders` task queue, its activities, business functions and worker."""
