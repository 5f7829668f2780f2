"""The address shapes the API accepts: the canonical fields, their aliases (`street`, `region`,
`zip`, `zip_code`) and update-address bodies wrapped or bare; all stored and returned canonical.

The normalisation, the board's address form and the OpenAPI schema are checked without
servers; the rest against the real Temporal dev server, workers and PostgreSQL of
tests/test_api.py.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest
import pytest_asyncio
from litestar.exceptions import ValidationException
from temporalio.client import Client

from tests.test_api import (  # noqa: F401 (api is a fixture)
    HOME,
    Lifecycle,
    api,
    new_order_id,
    order_row,
    run_lifecycle,
    workflow_exists,
)
from tests.test_board import (  # noqa: F401 (app and board are fixtures)
    HTMX,
    address_fields,
    app,
    awaiting_approval,
    board,
    order_form,
    wait_for_row,
)
from web.app import create_app
from web.forms import address_from_form
from web.schemas import AddressBody, StartOrderBody, address_of_update

CANONICAL_FIELDS = ("line1", "city", "postal_code", "country", "name", "line2", "state")
# The flat shape other implementations of the assignment send (seed 004's update-address).
FLAT = {"street": "7 Elm St", "city": "Portland", "state": "OR", "zip_code": "97201"}
FLAT_CANONICAL = {
    "name": "",
    "line1": "7 Elm St",
    "line2": "",
    "city": "Portland",
    "state": "OR",
    "postal_code": "97201",
    "country": "",
}
ALIASED = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Springfield",
    "region": "IL",
    "zip": "62701",
    "country": "US",
}
ALIASED_CANONICAL = {
    "name": "Ada",
    "line1": "1 Main St",
    "line2": "",
    "city": "Springfield",
    "state": "IL",
    "postal_code": "62701",
    "country": "US",
}
MINIMAL = {"street": "2 Oak Ave", "city": "Salem"}
MINIMAL_CANONICAL = {
    "name": "",
    "line1": "2 Oak Ave",
    "line2": "",
    "city": "Salem",
    "state": "",
    "postal_code": "",
    "country": "",
}
HOME_CANONICAL = {"name": "", "line2": "", "state": "", **HOME}


def canonical(body: dict[str, Any]) -> dict[str, str]:
    address = msgspec.convert(body, AddressBody).to_address()
    return vars(address)


# Normalisation, without servers.


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (FLAT, FLAT_CANONICAL),
        (ALIASED, ALIASED_CANONICAL),
        (MINIMAL, MINIMAL_CANONICAL),
        (HOME, HOME_CANONICAL),
        ({**MINIMAL, "zip": "1"}, {**MINIMAL_CANONICAL, "postal_code": "1"}),
        (
            {"street": "  3 Pine Rd ", "city": " Bend ", "region": " OR "},
            {**MINIMAL_CANONICAL, "line1": "3 Pine Rd", "city": "Bend", "state": "OR"},
        ),
    ],
    ids=["flat", "region-and-zip", "minimal", "canonical", "zip", "stripped"],
)
def test_aliases_are_normalised_to_the_canonical_fields(
    body: dict[str, Any], expected: dict[str, str]
) -> None:
    assert canonical(body) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {**HOME, "street": "2 Main St"},
            "Object contains one field under several names: `line1`, `street`",
        ),
        (
            {**HOME, "zip": "1"},
            "Object contains one field under several names: `postal_code`, `zip`",
        ),
        (
            {**FLAT, "region": "OR"},
            "Object contains one field under several names: `state`, `region`",
        ),
        (
            {**FLAT, "postal_code": "1", "zip": "2"},
            "Object contains one field under several names: `postal_code`, `zip`, `zip_code`",
        ),
        ({"city": "Salem"}, "Object missing required field `line1` (or its alias `street`)"),
    ],
    ids=["line1-street", "postal-code-zip", "state-region", "three-postal-codes", "no-street"],
)
def test_broken_alias_rules_are_validation_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationException) as raised:
        msgspec.convert(body, AddressBody).to_address()
    assert raised.value.extra == [{"key": "address", "message": message, "source": "body"}]


def test_a_name_given_twice_is_a_conflict_even_when_empty() -> None:
    with pytest.raises(ValidationException):
        msgspec.convert({**MINIMAL, "zip": "", "postal_code": "1"}, AddressBody).to_address()


def test_all_problems_are_reported_at_once() -> None:
    body = {"line1": "1", "street": "2", "state": "a", "region": "b", "city": "c"}
    with pytest.raises(ValidationException) as raised:
        msgspec.convert(body, AddressBody).to_address()
    assert [error["message"] for error in raised.value.extra] == [
        "Object contains one field under several names: `line1`, `street`",
        "Object contains one field under several names: `state`, `region`",
    ]


def test_field_limits_still_apply() -> None:
    for body, problem in [
        ({"city": "Salem", "street": "   "}, "matching regex"),
        ({"line1": "1", "city": "  "}, "matching regex"),
        ({**MINIMAL, "country": "U"}, "length >= 2"),
        ({**MINIMAL, "zip_code": "9" * 201}, "length <= 200"),
        ({**MINIMAL, "postcode": "1"}, "unknown field `postcode`"),
        ({"street": "1"}, "missing required field `city`"),
    ]:
        with pytest.raises(msgspec.ValidationError, match=problem):
            msgspec.convert(body, AddressBody)


@pytest.mark.parametrize("update", [FLAT, {"address": FLAT}], ids=["bare", "wrapped"])
def test_update_bodies_are_accepted_wrapped_or_bare(update: dict[str, Any]) -> None:
    assert vars(address_of_update(update)) == FLAT_CANONICAL


@pytest.mark.parametrize(
    ("update", "key", "message"),
    [
        ({"street": "1"}, "data", "Object missing required field `city`"),
        (
            {**FLAT, "line1": "1"},
            "data",
            "Object contains one field under several names: `line1`, `street`",
        ),
        (
            {"address": {**FLAT, "line1": "1"}},
            "address",
            "Object contains one field under several names: `line1`, `street`",
        ),
        ({"address": {"street": "1", "city": 5}}, "address.city", "Expected `str`, got `int`"),
        ({"address": FLAT, "city": "x"}, "data", "Object contains unknown field `city`"),
        ({"address": "1 Main St"}, "address", "Expected `object`, got `str`"),
    ],
    ids=[
        "bare-no-city",
        "bare-twice",
        "wrapped-twice",
        "wrapped-type",
        "wrapped-extra",
        "wrapped-str",
    ],
)
def test_bad_update_bodies_name_the_field(update: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ValidationException) as raised:
        address_of_update(update)
    assert raised.value.extra == [{"key": key, "message": message, "source": "body"}]


# The board's form, without servers.


def test_address_form_has_a_state_and_requires_a_street_and_a_city() -> None:
    address, errors = address_from_form(
        {"address.line1": "7 Elm St", "address.city": "Portland", "address.state": "OR"}
    )
    assert errors == {}
    assert address is not None and address.to_address().state == "OR"

    address, errors = address_from_form(
        {"address.line1": "", "address.city": "", "address.state": "OR"}
    )
    assert address is None
    assert errors == {"address.line1": "is required", "address.city": "is required"}


def test_address_form_knows_the_canonical_fields_only() -> None:
    address, errors = address_from_form({"address.street": "7 Elm St", "address.city": "Portland"})
    assert address is None and errors == {"address.line1": "is required"}
    address, errors = address_from_form(
        {"address.line1": "1", "address.street": "2", "address.city": "Portland"}
    )
    assert errors == {} and address is not None and address.to_address().line1 == "1"


# The OpenAPI schema, without servers.


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    app = create_app(temporal_client=object(), manage_pool=False)  # type: ignore[arg-type]
    return app.openapi_schema.to_schema()


def test_schema_documents_the_canonical_fields_and_the_aliases(openapi: dict[str, Any]) -> None:
    address = openapi["components"]["schemas"]["AddressBody"]
    properties = address["properties"]
    assert set(properties) == {*CANONICAL_FIELDS, "street", "region", "zip", "zip_code"}
    assert properties["street"]["description"] == "Alias of `line1`."
    assert properties["region"]["description"] == "Alias of `state`."
    assert (
        properties["zip"]["description"]
        == properties["zip_code"]["description"]
        == ("Alias of `postal_code`.")
    )
    assert "`zip` and `zip_code` for `postal_code`" in address["description"]
    assert address["required"] == ["city"]
    assert address["additionalProperties"] is False

    update = openapi["paths"]["/orders/{order_id}/signals/update-address"]["post"]
    shapes = update["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {"$ref": "#/components/schemas/AddressBody"} in shapes
    assert {
        "type": "object",
        "properties": {"address": {"$ref": "#/components/schemas/AddressBody"}},
        "required": ["address"],
        "additionalProperties": False,
    } in shapes


SAMPLE_ADDRESSES = [
    FLAT,
    ALIASED,
    MINIMAL,
    HOME,
    {**HOME, "street": "x"},
    {**HOME, "zip": "1"},
    {**FLAT, "zip": "1"},
    {**FLAT, "region": "OR"},
    {**FLAT, "postal_code": ""},
    {"city": "Salem"},
    {"street": "1"},
    {**MINIMAL, "country": "U"},
    {**MINIMAL, "street": " "},
    # Whitespace to Python's re, ECMA-262 or schemathesis, but not to all three of them.
    {**MINIMAL, "street": "\x85"},
    {**MINIMAL, "street": "\x1c"},
    {**MINIMAL, "city": "\xa0"},
    {**MINIMAL, "city": "\ufeff"},
    {**MINIMAL, "state": ""},
    {**MINIMAL, "state": "\x00"},
    {**MINIMAL, "city": " \x00a"},
    {**MINIMAL, "postcode": "1"},
    {**MINIMAL, "name": None},
]


@pytest.mark.parametrize("body", SAMPLE_ADDRESSES)
def test_schema_accepts_exactly_the_addresses_the_api_accepts(
    openapi: dict[str, Any], body: dict[str, Any]
) -> None:
    """The fuzz test holds the API to its schema; these are the alias rules' edge cases."""
    try:
        start = msgspec.convert({"payment_id": "p", "address": body}, StartOrderBody)
        assert start.address is not None
        start.address.to_address()
        accepted = True
    except (msgspec.ValidationError, ValidationException):
        accepted = False
    for documented_body, reference in [
        ({"payment_id": "p", "address": body}, "StartOrderBody"),
        (body, "AddressBody"),
    ]:
        schema = {"$ref": f"#/components/schemas/{reference}", "components": openapi["components"]}
        assert jsonschema_rs.validator_for(schema).is_valid(documented_body) == accepted, (
            reference,
            accepted,
        )


# Against the real servers.


@pytest_asyncio.fixture(scope="module")
async def lifecycles(api: httpx.AsyncClient) -> dict[str, Lifecycle]:  # noqa: F811
    """Orders started with each alias and readdressed with each update shape, all approved."""
    started = await asyncio.gather(
        run_lifecycle(api, FLAT, ("approve", None)),
        run_lifecycle(api, ALIASED, ("approve", None)),
        run_lifecycle(api, MINIMAL, ("approve", None)),
        run_lifecycle(api, HOME, ("update-address", FLAT), ("approve", None)),
        run_lifecycle(api, HOME, ("update-address", {"address": ALIASED}), ("approve", None)),
    )
    names = ("flat", "aliased", "minimal", "updated-bare", "updated-wrapped")
    return dict(zip(names, started))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("flat", FLAT_CANONICAL),
        ("aliased", ALIASED_CANONICAL),
        ("minimal", MINIMAL_CANONICAL),
        ("updated-bare", FLAT_CANONICAL),
        ("updated-wrapped", ALIASED_CANONICAL),
    ],
)
async def test_aliased_addresses_are_stored_and_shown_canonical(
    lifecycles: dict[str, Lifecycle], name: str, expected: dict[str, str]
) -> None:
    life = lifecycles[name]
    assert life.responses["start"].status_code == 201, life.responses["start"].text
    if "update-address" in life.responses:
        assert life.responses["update-address"].status_code == 200, life.responses[
            "update-address"
        ].text
    assert life.final["state"] == "shipped", life.final
    assert life.final["address"] == expected
    assert (await order_row(life.order_id))["address_json"] == expected


@pytest.mark.parametrize(
    ("address", "detail"),
    [
        (
            {**MINIMAL, "postcode": "1"},
            "Invalid request: field 'address.postcode' is not a known field.",
        ),
        (
            {**HOME, "street": "2 Main St"},
            "Invalid request: fields 'address.line1' and 'address.street' are one field under "
            "different names; send only one of them.",
        ),
        (
            {**HOME, "zip": "1"},
            "Invalid request: fields 'address.postal_code' and 'address.zip' are one field under "
            "different names; send only one of them.",
        ),
        (
            {**FLAT, "zip": "1", "region": "OR"},
            "Invalid request: fields 'address.state' and 'address.region' are one field under "
            "different names; send only one of them; fields 'address.zip' and 'address.zip_code' "
            "are one field under different names; send only one of them.",
        ),
        ({"street": "1"}, "Invalid request: field 'address.city' is required."),
        (
            {"city": "Salem", "zip": "1"},
            "Invalid request: field 'address.line1' (or its alias 'address.street') is required.",
        ),
        ({**MINIMAL, "street": " "}, "Invalid request: field 'address.street' must not be blank or contain a NUL character."),
        (
            {**MINIMAL, "country": "U"},
            "Invalid request: field 'address.country' must be at least 2 characters long.",
        ),
        # PostgreSQL stores no NUL in text: an order carrying one could never be recorded.
        (
            {**MINIMAL, "city": "Sa\x00lem"},
            "Invalid request: field 'address.city' must not be blank or contain a NUL character.",
        ),
        (
            {**MINIMAL, "state": "O\x00R"},
            "Invalid request: field 'address.state' must not contain the NUL character.",
        ),
    ],
    ids=[
        "unknown",
        "line1-street",
        "postal-code-zip",
        "two-conflicts",
        "no-city",
        "no-street",
        "blank-street",
        "short-country",
        "nul-in-city",
        "nul-in-state",
    ],
)
async def test_bad_address_at_start_is_a_422_naming_the_fields_and_starts_nothing(
    api: httpx.AsyncClient, workers: Client, order_id: str, address: dict, detail: str  # noqa: F811
) -> None:
    response = await api.post(
        f"/orders/{order_id}/start", json={"payment_id": f"pay-{order_id}", "address": address}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == detail
    assert not await workflow_exists(workers, order_id)
    assert await order_row(order_id) is None


BAD_UPDATES = [
    ({**FLAT, "line1": "1"}, "fields 'line1' and 'street' are one field under different names"),
    ({"street": "1"}, "field 'city' is required"),
    ({"city": "Salem"}, "field 'line1' (or its alias 'street') is required"),
    ({**FLAT, "suite": "4"}, "field 'suite' is not a known field"),
    ({"address": {**FLAT, "zip": "1"}}, "fields 'address.zip' and 'address.zip_code'"),
    ({"address": {"city": "Salem"}}, "field 'address.line1' (or its alias 'address.street')"),
    ({"address": FLAT, "note": "x"}, "field 'note' is not a known field"),
    ({"address": None}, "field 'address' must be of type object, not null"),
]


@pytest.mark.parametrize(("update", "named"), BAD_UPDATES)
async def test_bad_update_of_an_unknown_order_is_a_422_before_the_404(
    api: httpx.AsyncClient, workers: Client, order_id: str, update: dict, named: str  # noqa: F811
) -> None:
    response = await api.post(f"/orders/{order_id}/signals/update-address", json=update)
    assert response.status_code == 422, response.text
    assert named in response.json()["detail"]
    assert not await workflow_exists(workers, order_id)
    assert await order_row(order_id) is None


async def test_bad_updates_leave_a_running_order_as_it_was(
    api: httpx.AsyncClient, workers: Client  # noqa: F811
) -> None:
    order_id = new_order_id()
    start = await api.post(
        f"/orders/{order_id}/start", json={"payment_id": f"pay-{order_id}", "address": HOME}
    )
    assert start.status_code == 201, start.text
    try:
        for update, named in BAD_UPDATES:
            response = await api.post(f"/orders/{order_id}/signals/update-address", json=update)
            assert response.status_code == 422, response.text
            assert named in response.json()["detail"]
        status = (await api.get(f"/orders/{order_id}/status")).json()
        assert status["address"] == HOME_CANONICAL
        row = await order_row(order_id)
        assert row is None or row["address_json"] == HOME_CANONICAL
    finally:
        await api.post(f"/orders/{order_id}/signals/cancel", json={"reason": "test over"})


async def test_the_served_schema_lists_the_aliases(api: httpx.AsyncClient) -> None:  # noqa: F811
    schema = (await api.get("/schema/openapi.json")).json()
    properties = schema["components"]["schemas"]["AddressBody"]["properties"]
    assert {"street", "region", "zip", "zip_code"} <= set(properties)


def shown_address(html: str) -> str:
    match = re.search(r'<dd class="address">(.*?)</dd>', html, re.S)
    assert match, html
    return " ".join(match.group(1).split())


async def wait_for_shown_address(board: httpx.AsyncClient, order_id: str, expected: str) -> None:
    """Poll the order page until it shows `expected`: a new address is a signal, which the
    workflow takes in moments after the board's answer."""
    for _ in range(50):
        shown = shown_address((await board.get(f"/orders/{order_id}")).text)
        if shown == expected:
            return
        await asyncio.sleep(0.1)
    assert shown == expected


async def test_board_forms_take_a_state_and_the_order_page_shows_it(
    board: httpx.AsyncClient,  # noqa: F811
) -> None:
    order_id = new_order_id()
    form = order_form(order_id, {**HOME, "state": "IL"})
    started = await board.post("/board/orders", data=form, headers=HTMX)
    assert started.status_code == 200, started.text
    row = await wait_for_row(board, order_id, awaiting_approval)
    assert 'name="address.state" value="IL"' in row.text, "the address form holds the state"
    try:
        await wait_for_shown_address(
            board, order_id, "1 Main St<br> 12345 Springfield<br> IL<br> US"
        )
        readdressed = await board.post(
            f"/board/orders/{order_id}/address",
            data=address_fields({"line1": "7 Elm St", "city": "Portland", "state": "OR"}),
            headers=HTMX,
        )
        assert readdressed.status_code == 200, readdressed.text
        await wait_for_shown_address(board, order_id, "7 Elm St<br> Portland<br> OR<br>")
    finally:
        await board.post(f"/board/orders/{order_id}/cancel", data={"reason": ""}, headers=HTMX)
