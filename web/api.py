"""The JSON API's routes: parse the request, call OrderService, shape the answer."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Optional

from litestar import Controller, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import Body, JSONBody, QueryParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_202_ACCEPTED,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from web.deps import OrderId, Service
from web.schemas import (
    DEFAULT_LIST_LIMIT,
    MAX_BODY_BYTES,
    MAX_LIST_LIMIT,
    MAX_STATUS_WAIT_SECONDS,
    UPDATE_ADDRESS_SCHEMA,
    ActionAnswer,
    CancelBody,
    ErrorBody,
    OrderState,
    StartOrderBody,
    address_of_update,
)
from web.temporal_gateway import ActionOutcome


# The error answers each route documents in the OpenAPI schema; the body is always ErrorBody.
ERROR_MEANINGS = {
    HTTP_401_UNAUTHORIZED: "The server sets OPERATOR_TOKEN and the request lacks "
    "`Authorization: Bearer <token>`, or the token is wrong.",
    HTTP_404_NOT_FOUND: "There is no order with this id.",
    HTTP_409_CONFLICT: "The order id or payment id is taken, or the order refuses this action: "
    "`detail` gives the workflow's own reason (review over, carrier already dispatched, already "
    "cancelled...).",
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.",
    HTTP_422_UNPROCESSABLE_ENTITY: "The path, query or body is invalid; `detail` names every "
    "rejected field.",
    HTTP_503_SERVICE_UNAVAILABLE: "Temporal or PostgreSQL did not answer; try again later.",
}


def errors(*status_codes: int) -> dict[int, ResponseSpec]:
    return {
        status_code: ResponseSpec(
            data_container=ErrorBody,
            description=ERROR_MEANINGS[status_code],
            generate_examples=False,
        )
        for status_code in status_codes
    }


ACTION_RESPONSES = {
    HTTP_202_ACCEPTED: ResponseSpec(
        data_container=ActionAnswer,
        description="`queued`: no worker took the action in time; it runs once a worker is back. "
        "`pending`: accepted, the outcome is still to come.",
        generate_examples=False,
    ),
    **errors(401, 404, 409, 413, 422, 503),
}
ACTION_DESCRIPTION = (
    "Answers 200 with the order right after the action once the workflow has carried it out "
    "(a cancel: once the order is cancelled and refunded; an address change while shipping: once "
    "the shipping attempt has it), or 409 with the workflow's reason for refusing it. When no "
    "worker takes the action within a few seconds (workers restarting), it is sent as the signal "
    "of the same name, which runs as soon as a worker is back, and the answer is 202 `queued`."
)


def action_answer(order_id: str, outcome: ActionOutcome) -> Response[ActionAnswer]:
    result = outcome.result
    answer = ActionAnswer(
        order_id=order_id,
        action=outcome.action,
        outcome="done" if result else "queued" if outcome.queued else "pending",
        detail=outcome.sentence(order_id),
    )
    if result is not None:
        answer.state = result.state
        answer.waiting_for = result.waiting_for
        answer.allowed_actions = result.allowed_actions
        answer.reason = result.reason
        answer.address = None if result.address is None else dataclasses.asdict(result.address)
    return Response(answer, status_code=HTTP_200_OK if result else HTTP_202_ACCEPTED)


class OrderController(Controller):
    path = "/orders"
    tags = ["orders"]

    @post(
        "/{order_id:str}/start",
        summary="Start an order's workflow",
        description="While MAX_ORDERS_IN_FLIGHT orders do work, or MAX_ORDERS_OPEN run (those "
        "waiting for review included), the request waits up to "
        "ADMISSION_WAIT_SECONDS for one of them to end; still at capacity, it answers 503 with "
        "Retry-After. The order's deadline counts from the 201.",
        responses=errors(401, 409, 413, 422, 503),
    )
    async def start(
        self, order_service: Service, order_id: OrderId, data: JSONBody[StartOrderBody]
    ) -> dict[str, Any]:
        started = await order_service.start_order(
            order_id,
            data.payment_id,
            [item.to_item() for item in data.items],
            data.address.to_address() if data.address else None,
        )
        return {
            "order_id": started.order_id,
            "workflow_id": started.workflow_id,
            "run_id": started.run_id,
            "status_url": f"/orders/{order_id}/status",
            "deadline_seconds": started.deadline_seconds,
        }

    @post(
        "/{order_id:str}/signals/approve",
        summary="Approve the order",
        description=ACTION_DESCRIPTION,
        status_code=HTTP_200_OK,
        responses=ACTION_RESPONSES,
    )
    async def approve(self, order_service: Service, order_id: OrderId) -> Response[ActionAnswer]:
        return action_answer(order_id, await order_service.approve(order_id))

    @post(
        "/{order_id:str}/signals/cancel",
        summary="Cancel the order",
        description=ACTION_DESCRIPTION,
        status_code=HTTP_200_OK,
        responses=ACTION_RESPONSES,
    )
    async def cancel(
        self, order_service: Service, order_id: OrderId, data: JSONBody[Optional[CancelBody]] = None
    ) -> Response[ActionAnswer]:
        return action_answer(order_id, await order_service.cancel(order_id, data.reason if data else None))

    @post(
        "/{order_id:str}/signals/update-address",
        summary="Change the shipping address",
        description=ACTION_DESCRIPTION,
        status_code=HTTP_200_OK,
        responses=ACTION_RESPONSES,
    )
    async def update_address(
        self,
        order_service: Service,
        order_id: OrderId,
        # A plain object, because msgspec cannot decode a union of two structs; the handler
        # converts it, and the schema documents both shapes.
        data: Annotated[
            dict[str, Any],
            Body(
                description='The new address, as `{"address": {...}}` or as the address '
                "object itself.",
                schema_extra=UPDATE_ADDRESS_SCHEMA,
            ),
        ],
    ) -> Response[ActionAnswer]:
        return action_answer(
            order_id, await order_service.update_address(order_id, address_of_update(data))
        )

    @get(
        "/{order_id:str}/status",
        summary="Workflow status with live retry counts",
        responses=errors(404, 422, 503),
    )
    async def status(
        self,
        order_service: Service,
        order_id: OrderId,
        wait: Annotated[
            float,
            QueryParameter(
                ge=0,
                le=MAX_STATUS_WAIT_SECONDS,
                description="Seconds to wait for the order to end before answering; the answer "
                "comes as soon as it has ended, or with the current status when the time is up. "
                "Lets a script follow an order with one request instead of polling.",
            ),
        ] = 0,
    ) -> dict[str, Any]:
        return await order_service.order_status(order_id, wait_seconds=wait)

    @get("/", summary="Recent orders, newest first", responses=errors(422, 503))
    async def list_orders(
        self,
        order_service: Service,
        # `state` is a name Litestar reserves for the app state, hence the alias.
        state_filter: Annotated[Optional[OrderState], QueryParameter(name="state")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
    ) -> list[dict[str, Any]]:
        states = None if state_filter is None else [state_filter]
        return await order_service.recent_orders(states, limit)


@get(
    "/health",
    summary="Whether PostgreSQL and Temporal answer",
    responses={
        HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
            data_container=dict[str, Any],
            description="A dependency does not answer; `components` says which, with its error.",
            generate_examples=False,
        )
    },
)
async def health(order_service: Service) -> Response[dict[str, Any]]:
    components = await order_service.health()
    healthy = all(component["ok"] for component in components.values())
    return Response(
        {"status": "ok" if healthy else "unavailable", "components": components},
        status_code=HTTP_200_OK if healthy else HTTP_503_SERVICE_UNAVAILABLE,
    )
