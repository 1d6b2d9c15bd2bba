"""Every Admin GraphQL document we send is valid against Shopify's published 2025-01 schema, and
the variables the fulfillment sync builds coerce to the documents' variable types."""

from __future__ import annotations

import pytest
from graphql import get_operation_ast, parse, validate

from app.fulfillment.service import EVENT_STATUS, Group, fulfillment_input
from connectors.shopify_admin import DOCUMENTS
from tests.support.shopify_admin import admin_schema, coerce


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_document_is_valid(name: str) -> None:
    ast = parse(DOCUMENTS[name])
    assert validate(admin_schema(), ast) == []
    operation = get_operation_ast(ast)
    assert operation is not None
    assert operation.name is not None
    assert operation.name.value == name


def test_fulfillment_create_variables_coerce() -> None:
    group = Group(
        "gid://shopify/Location/1",
        {"gid://shopify/FulfillmentOrder/1": [("gid://shopify/FulfillmentOrderLineItem/2", 1)]},
    )
    tracking = {"company": "UPS", "number": "1Z999AA10123456784", "url": "https://ups.example/1Z9"}
    variables = {"fulfillment": fulfillment_input(group, tracking, False)}
    assert variables == {
        "fulfillment": {
            "notifyCustomer": False,
            "lineItemsByFulfillmentOrder": [
                {
                    "fulfillmentOrderId": "gid://shopify/FulfillmentOrder/1",
                    "fulfillmentOrderLineItems": [
                        {"id": "gid://shopify/FulfillmentOrderLineItem/2", "quantity": 1}
                    ],
                }
            ],
            "trackingInfo": tracking,
        }
    }
    assert coerce(DOCUMENTS["FulfillmentCreate"], variables).coerced == variables


@pytest.mark.parametrize("status", sorted(EVENT_STATUS))
def test_every_event_status_we_send_exists(status: str) -> None:
    event = {
        "fulfillmentId": "gid://shopify/Fulfillment/9",
        "status": EVENT_STATUS[status],
        "happenedAt": "2026-11-27T10:00:00+00:00",
        "message": "Returned to sender",
        "estimatedDeliveryAt": "2026-11-29T10:00:00+00:00",
    }
    result = coerce(DOCUMENTS["FulfillmentEventCreate"], {"fulfillmentEvent": event})
    assert not isinstance(result, list), result
    assert result.coerced["fulfillmentEvent"]["status"] == EVENT_STATUS[status]


def test_a_status_shopify_lacks_is_refused() -> None:
    event = {"fulfillmentId": "gid://shopify/Fulfillment/9", "status": "RETURNED"}
    errors = coerce(DOCUMENTS["FulfillmentEventCreate"], {"fulfillmentEvent": event})
    assert isinstance(errors, list)
    assert "Value 'RETURNED' does not exist in 'FulfillmentEventStatus' enum" in errors[0].message


def test_tracking_update_and_queries_coerce() -> None:
    update = {
        "fulfillmentId": "gid://shopify/Fulfillment/9",
        "trackingInfoInput": {
            "company": "DHL Express",
            "number": "JD0002",
            "url": "https://x.test/",
        },
        "notifyCustomer": False,
    }
    assert coerce(DOCUMENTS["FulfillmentTrackingInfoUpdate"], update).coerced == update
    for name in ("OrderFulfillmentOrders", "FulfillmentOrderLineItems"):
        variables = {"id": "gid://shopify/Order/450789469", "after": None}
        assert coerce(DOCUMENTS[name], variables).coerced == variables
    assert coerce(DOCUMENTS["OrderFulfillments"], {"id": "gid://shopify/Order/1"}).coerced == {
        "id": "gid://shopify/Order/1"
    }
