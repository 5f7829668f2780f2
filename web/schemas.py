"""Request bodies and parameter types of the JSON API, with their limits.

msgspec Structs: Litestar validates them before a handler runs, so a rejected request never
reaches Temporal or the database. Unknown fields are rejected too, so a misspelt optional field
is reported instead of silently ignored. An address also accepts the field names other clients
use (`street`, `zip`, ...); its handler turns it into the canonical `Address` before anything
else sees it.
"""

from __future__ import annotations

from itertools import combinations
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

import msgspec
from msgspec import UNSET, UnsetType
from litestar.exceptions import ValidationException

# Litestar's schema plugin for msgspec structs is not exported; ClosedStructSchemaPlugin extends it.
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIType, Reference, Schema
from litestar.typing import FieldDefinition

from orchestration.models import (
    APPROVED,
    AWAITING_ADDRESS,
    AWAITING_APPROVAL,
    CANCELLED,
    CHARGED,
    DISPATCHED,
    FAILED,
    RECEIVED,
    SHIPPED,
    SHIPPING,
    STARTED,
    VALIDATED,
    Address,
    Item,
)

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
# Whitespace, as any of Python's re (msgspec), ECMA-262 (JSON Schema) and schemathesis count it
# (not `\S`: they disagree on it, and the schema then accepted strings the API rejects).
_WHITESPACE = r"\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# Text with a character that is not whitespace, and no NUL anywhere: PostgreSQL cannot store NUL
# in text, so an order carrying one could never be recorded. Linear to match: each part's
# characters exclude the next part's first.
NOT_BLANK_PATTERN = rf"^[{_WHITESPACE}]*[^\x00{_WHITESPACE}][^\x00]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"

# Plain-words meaning of each pattern, for validation messages.
PATTERN_MEANINGS = {
    IDENTIFIER_PATTERN: "must start with a letter or digit and contain only letters, digits, "
    "'_', '.', ':' and '-'",
    NOT_BLANK_PATTERN: "must not be blank or contain a NUL character",
    NO_NUL_PATTERN: "must not contain the NUL character",
}

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)]
RequiredText = Annotated[str, msgspec.Meta(max_length=200, pattern=NOT_BLANK_PATTERN)]
OptionalText = Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL_PATTERN)]
Country = Annotated[str, msgspec.Meta(min_length=2, max_length=56, pattern=NOT_BLANK_PATTERN)]
Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NOT_BLANK_PATTERN)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Reason = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL_PATTERN)]

ORDER_STATES = (
    STARTED,
    RECEIVED,
    VALIDATED,
    AWAITING_APPROVAL,
    AWAITING_ADDRESS,
    APPROVED,
    CHARGED,
    SHIPPING,
    DISPATCHED,
    SHIPPED,
    CANCELLED,
    FAILED,
)
OrderState = Literal[ORDER_STATES]  # type: ignore[valid-type]

DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 200
# A status request may wait this long for its order to end (every order ends within 15 s).
MAX_STATUS_WAIT_SECONDS = 30
MAX_BODY_BYTES = 64 * 1024


class ItemBody(msgspec.Struct, forbid_unknown_fields=True):
    sku: Sku
    qty: Quantity = 1

    def to_item(self) -> Item:
        return Item(sku=self.sku.strip(), qty=self.qty)


ADDRESS_ALIASES = {"line1": ("street",), "state": ("region",), "postal_code": ("zip", "zip_code")}
"""The other names each canonical address field is accepted under."""
ALIAS_NAMES = frozenset(alias for aliases in ADDRESS_ALIASES.values() for alias in aliases)
ADDRESS_DESCRIPTION = (
    "A shipping address. The API stores and returns its canonical fields only: `name`, `line1`, "
    "`line2`, `city`, `state`, `postal_code`, `country`. It also accepts the names other clients "
    "use: `street` for `line1`, `region` for `state`, `zip` and `zip_code` for `postal_code`; "
    "send each field under one name only. Required: a street line (`line1` or `street`) and "
    "`city`."
)
State = Annotated[OptionalText, msgspec.Meta(description="State, province or region.")]
Street = Annotated[RequiredText, msgspec.Meta(description="Alias of `line1`.")]
Region = Annotated[OptionalText, msgspec.Meta(description="Alias of `state`.")]
Zip = Annotated[OptionalText, msgspec.Meta(description="Alias of `postal_code`.")]


class AddressBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # An optional field is UNSET when absent, so that a field sent under two names is told apart
    # from one sent once, even as "".
    name: Union[OptionalText, UnsetType] = UNSET
    line1: Union[RequiredText, UnsetType] = UNSET
    line2: Union[OptionalText, UnsetType] = UNSET
    city: RequiredText
    state: Union[State, UnsetType] = UNSET
    postal_code: Union[OptionalText, UnsetType] = UNSET
    country: Union[Country, UnsetType] = UNSET
    street: Union[Street, UnsetType] = UNSET
    region: Union[Region, UnsetType] = UNSET
    zip: Union[Zip, UnsetType] = UNSET
    zip_code: Union[Zip, UnsetType] = UNSET

    def alias_problems(self) -> list[str]:
        """The alias rules this address breaks, worded like msgspec's messages (which
        web/errors.py rewords): a field sent under several names, or no street line."""
        problems = [
            "Object contains one field under several names: "
            + ", ".join(f"`{name}`" for name in names)
            for names in map(self._names_given, ADDRESS_ALIASES)
            if len(names) > 1
        ]
        if not self._names_given("line1"):
            problems.append("Object missing required field `line1` (or its alias `street`)")
        return problems

    def to_address(self, at: str = "address") -> Address:
        """The canonical address; ValidationException if an alias rule is broken, naming the
        fields under `at`, the body's key of this object."""
        if problems := self.alias_problems():
            raise ValidationException(
                detail="Validation failed for the address",
                extra=[{"key": at, "message": problem, "source": "body"} for problem in problems],
            )
        return Address(
            line1=self._value("line1"),
            city=self.city.strip(),
            postal_code=self._value("postal_code"),
            country=self._value("country"),
            name=self._value("name"),
            line2=self._value("line2"),
            state=self._value("state"),
        )

    def _names_given(self, canonical: str) -> list[str]:
        names = (canonical, *ADDRESS_ALIASES.get(canonical, ()))
        return [name for name in names if getattr(self, name) is not UNSET]

    def _value(self, canonical: str) -> str:
        given = self._names_given(canonical)
        return getattr(self, given[0]).strip() if given else ""


def _default_items() -> list[ItemBody]:
    return [ItemBody(sku="ABC", qty=1)]


class StartOrderBody(msgspec.Struct, forbid_unknown_fields=True):
    payment_id: Identifier
    items: Annotated[list[ItemBody], msgspec.Meta(min_length=1, max_length=100)] = msgspec.field(
        default_factory=_default_items
    )
    address: Optional[AddressBody] = None


class CancelBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Optional[Reason] = None


class UpdateAddressBody(msgspec.Struct, forbid_unknown_fields=True):
    address: AddressBody


S = TypeVar("S", bound=msgspec.Struct)


def _converted(body: dict[str, Any], struct_type: type[S]) -> S:
    """The body as `struct_type`, or the ValidationException Litestar would raise for it."""
    try:
        return msgspec.convert(body, struct_type)
    except msgspec.ValidationError as err:
        message, _, location = str(err).partition(" - at `$")
        # Litestar's key for the body itself is its argument's name, `data`.
        key = location.rstrip("`").lstrip(".") or "data"
        raise ValidationException(
            detail="Validation failed for the request body",
            extra=[{"key": key, "message": message, "source": "body"}],
        ) from err


def address_of_update(body: dict[str, Any]) -> Address:
    """The canonical address of an update-address body: `{"address": {...}}`, or the address
    object itself (an address has no field `address`)."""
    if "address" in body:
        return _converted(body, UpdateAddressBody).address.to_address()
    return _converted(body, AddressBody).to_address(at="data")


# Litestar names a struct's component schema after its class; AddressBody's is there because
# StartOrderBody refers to it.
_ADDRESS_REFERENCE = Reference(ref="#/components/schemas/AddressBody")
UPDATE_ADDRESS_SCHEMA = {
    # Replaces the generic object schema of the handler's `dict` argument.
    "type": None,
    "additional_properties": None,
    "one_of": [
        Schema(
            type=OpenAPIType.OBJECT,
            properties={"address": _ADDRESS_REFERENCE},
            required=["address"],
            additional_properties=False,
        ),
        _ADDRESS_REFERENCE,
    ],
}
"""The OpenAPI schema of an update-address body: the address, wrapped or bare."""


def _document_aliases(schema: Schema) -> None:
    """Adds the rules of AddressBody's aliases, which no field type expresses: exactly one
    street line, and no field under two names."""
    schema.description = ADDRESS_DESCRIPTION
    schema.one_of = [Schema(required=["line1"]), Schema(required=["street"])]
    schema.schema_not = Schema(
        any_of=[
            Schema(required=[first, second])
            for canonical, aliases in ADDRESS_ALIASES.items()
            for first, second in combinations((canonical, *aliases), 2)
        ]
    )


class ActionAnswer(msgspec.Struct):
    """The answer to an operator action (approve, cancel, update-address)."""

    order_id: str
    action: Literal["approve", "cancel", "update_address"]
    outcome: Literal["done", "queued", "pending"]
    """done: the workflow carried the action out (200); queued: no worker answered in time, so
    it was sent as a signal that runs once a worker is back (202); pending: accepted, outcome
    still to come (202)."""
    detail: str
    """What happened, in words."""
    state: Optional[str] = None
    """The order's state right after the action (done only), as in the status."""
    waiting_for: list[str] = msgspec.field(default_factory=list)
    allowed_actions: list[str] = msgspec.field(default_factory=list)
    reason: str = ""
    address: Optional[dict[str, str]] = None


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Writes `additionalProperties: false` into the OpenAPI schema of a struct that rejects
    unknown fields, and AddressBody's alias rules into its schema. Litestar's own plugin leaves
    both out, and the schema then promises that the API accepts bodies it answers with 422."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        if field_definition.type_ is AddressBody:
            _document_aliases(schema)
        return schema


class ErrorBody(msgspec.Struct):
    """Every error answer of the JSON API (web/errors.py)."""

    status_code: int
    detail: str
    """What went wrong, in plain words."""
    extra: Optional[Union[list[Any], dict[str, Any]]] = None
    """Litestar's per-field validation errors, when there are any."""
