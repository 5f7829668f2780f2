"""Shipping: ShippingWorkflow (a child of the order) on the `shipping` task queue, its activities, business functions and worker."""
