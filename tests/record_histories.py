"""Record the workflow histories that tests/test_replay.py replays.

Usage: .venv/bin/python -m tests.record_histories

Runs six orders on the Temporal dev server with the activity doubles of
tests/test_order_workflow.py (happy path, cancel after charge with refund, cancel in review, a failed dispatch that
the parent retries, dispatch failing until the deadline, an order approved before it had an
address and given one by update) and writes each order's history, and
those of its shipping children, as JSON to tests/histories/ (with workflow_ids.json naming the
workflow id of each). Re-record only when a workflow change is meant to be incompatible with
running orders; keep the previous histories in a subfolder, with a test in tests/test_replay.py
that shows why they no longer replay. cancelled_in_review.json and
cancelled_after_charge.shipping-1.json predate two `workflow.patched` branches and show that
they keep such orders replaying: keep them as they are. The subfolder before_dispatch_decision/
holds cancelled_after_charge as recorded with the check-dispatch-on-cancel branch, before the
withdraw-dispatch-on-cancel one (recorded with commit 2f9dcb4)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from orchestration.models import AddressUpdate, CancelOrder
from orchestration.order.workflow import OrderWorkflow
from orchestration.models import ORDER_PARKED_ATTRIBUTE
from scripts.temporal_dev_server import dynamic_config_args
from tests.test_order_workflow import (
    HOME,
    SHORT_DISPATCH,
    SHORT_ORDER,
    FakeActivities,
    running_order,
    wait_for_state,
)

HISTORIES = Path(__file__).resolve().parent / "histories"
WORKFLOW_IDS = "workflow_ids.json"
DEV_SERVER = Path(sys.executable).parent / "temporal"


async def happy(env, fakes, handle) -> None:
    await handle.signal(OrderWorkflow.approve)


async def cancelled_after_charge(env, fakes, handle) -> None:
    await handle.signal(OrderWorkflow.approve)
    await fakes.reached["prepare_package"].wait()
    await handle.signal(OrderWorkflow.cancel_order, CancelOrder("out of stock"))


async def cancelled_in_review(env, fakes, handle) -> None:
    await wait_for_state(handle, "awaiting_approval")
    await handle.signal(OrderWorkflow.cancel_order, CancelOrder("customer called"))


async def dispatch_retried(env, fakes, handle) -> None:
    await handle.signal(OrderWorkflow.approve)


async def deadline_exceeded(env, fakes, handle) -> None:
    await handle.signal(OrderWorkflow.approve)


async def address_after_approval(env, fakes, handle) -> None:
    await wait_for_state(handle, "awaiting_approval")
    await handle.execute_update(OrderWorkflow.approve_update)
    await handle.execute_update(OrderWorkflow.update_address_update, AddressUpdate(HOME))


SCENARIOS = {
    "happy": (happy, {}),
    "cancelled_after_charge": (cancelled_after_charge, {"hold": "prepare_package"}),
    "cancelled_in_review": (cancelled_in_review, {}),
    "dispatch_retried": (dispatch_retried, {"dispatch_failures": "first_attempt", "policy": SHORT_DISPATCH}),
    "deadline_exceeded": (deadline_exceeded, {"dispatch_failures": "always", "policy": SHORT_ORDER}),
    "address_after_approval": (address_after_approval, {"address": None}),
}


async def record(env: WorkflowEnvironment, name: str) -> dict[str, str]:
    """Run one scenario; returns the written history files, each with its workflow id."""
    drive, setup = SCENARIOS[name]
    fakes = FakeActivities(dispatch_failures=setup.get("dispatch_failures", "none"))
    if "hold" in setup:
        fakes.hold(setup["hold"])
    written: dict[str, str] = {}
    async with running_order(
        env, fakes, address=setup.get("address", HOME), policy=setup.get("policy")
    ) as handle:
        await drive(env, fakes, handle)
        status = await handle.result()
        ids = [handle.id] + [f"{handle.id}-shipping-{n}" for n in range(1, status.shipping_attempts + 1)]
        for index, workflow_id in enumerate(ids):
            history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            path = HISTORIES / (f"{name}.json" if index == 0 else f"{name}.shipping-{index}.json")
            path.write_text(history.to_json())
            written[path.name] = workflow_id
    print(f"{name}: {status.state} ({status.reason or 'no reason'}), {len(written)} histories")
    return written


async def main() -> None:
    HISTORIES.mkdir(exist_ok=True)
    for stale in HISTORIES.glob("*.json"):  # the folder's own files; subfolders are kept
        stale.unlink()
    # The real dev server: the steps are local activities, whose retries run in real time.
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(DEV_SERVER),
        dev_server_extra_args=dynamic_config_args(),
        search_attributes=[ORDER_PARKED_ATTRIBUTE],
    )
    workflow_ids: dict[str, str] = {}
    try:
        for name in SCENARIOS:
            workflow_ids.update(await record(env, name))
    finally:
        await env.shutdown()
    # A replay needs the workflow id the history was recorded under.
    (HISTORIES / WORKFLOW_IDS).write_text(json.dumps(workflow_ids, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
