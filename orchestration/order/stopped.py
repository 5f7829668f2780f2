"""OrderStopped: how the order's forward path ends early (the order is cancelled or failed)."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

class OrderStopped(ApplicationError):
    """Ends the forward path: the order is to be cancelled or failed for `reason`."""

    def __init__(self, state: str, reason: str) -> None:
        super().__init__(reason, type="OrderStopped", non_retryable=True)
        self.state = state
        self.reason = reason
