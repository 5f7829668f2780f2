"""Request bodies and parameter types of the JSON API, with their limits.

msgspec Structs: Litestar validates them before a handler runs, so a rejected request never
reaches Temporal or the database. Unknown fields are rejected too, so a misspelt optional field
is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import msgspec

# Litestar's schema plugin for msgspec structs is not exported; ClosedStructSchemaPlugin extends it.
from litestar._openapi.schema_generation.plugins import StructSchemaPlugin
from litestar.openapi.spec import Schema
from litestar.typing import FieldDefinition

from orchestration.models import (
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
NOT_BLANK_PATTERN = r"\S"

# Plain-words meaning of each pattern, for validation messages.
PATTERN_MEANINGS = {
    IDENTIFIER_PATTERN: "must start with a letter or digit and contain only letters, digits, "
    "'_', '.', ':' and '-'",
    NOT_BLANK_PATTERN: "must not be blank",
}

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN)]
RequiredText = Annotated[str, msgspec.Meta(max_length=200, pattern=NOT_BLANK_PATTERN)]
OptionalText = Annotated[str, msgspec.Meta(max_length=200)]
Country = Annotated[str, msgspec.Meta(min_length=2, max_length=56, pattern=NOT_BLANK_PATTERN)]
Sku = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NOT_BLANK_PATTERN)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=1000)]
Reason = Annotated[str, msgspec.Meta(max_length=500)]

ORDER_STATES = (
    STARTED,
    RECEIVED,
    VALIDATED,
    AWAITING_APPROVAL,
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


class AddressBody(msgspec.Struct, forbid_unknown_fields=True):
    line1: RequiredText
    city: RequiredText
    postal_code: RequiredText
    country: Country
    name: OptionalText = ""
    line2: OptionalText = ""

    def to_address(self) -> Address:
        return Address(
            line1=self.line1.strip(),
            city=self.city.strip(),
            postal_code=self.postal_code.strip(),
            country=self.country.strip(),
            name=self.name.strip(),
            line2=self.line2.strip(),
        )


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


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Writes `additionalProperties: false` into the OpenAPI schema of a struct that rejects
    unknown fields. Litestar's own plugin leaves it out, and the schema then promises that the
    API accepts fields it answers with 422."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        if field_definition.type_.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


class ErrorBody(msgspec.Struct):
    """Every error answer of the JSON API (web/errors.py)."""

    status_code: int
    detail: str
    """What went wrong, in plain words."""
    extra: Optional[Union[list[Any], dict[str, Any]]] = None
    """Litestar's per-field validation errors, when there are any."""
