"""``app.orders.drafts.from_shopify`` on Shopify's real order payload: no database, no HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.limits import MAX_AMOUNT
from app.orders.drafts import CustomerDraft, PayloadError, from_shopify
from tests.support.shopify import order_payload


def as_webhook(payload: dict[str, Any]) -> dict[str, Any]:
    """The body as the worker parses it: JSON numbers with a fraction become Decimal."""
    parsed: dict[str, Any] = json.loads(json.dumps(payload), parse_float=Decimal)
    return parsed


class TestTotals:
    def test_totals_are_exact_decimals(self) -> None:
        draft = from_shopify(order_payload())
        assert draft.currency == "USD"
        assert draft.subtotal_price == Decimal("398.00")
        assert draft.total_tax == Decimal("11.94")
        assert draft.total_shipping == Decimal("0.00")
        assert draft.total_discounts == Decimal("0.00")
        assert draft.total_price == Decimal("409.94")
        for amount in (draft.subtotal_price, draft.total_tax, draft.total_price):
            assert type(amount) is Decimal

    def test_shipping_total_prefers_the_shop_money_set(self) -> None:
        payload = order_payload(
            total_shipping_price_set={
                "shop_money": {"amount": "12.50", "currency_code": "USD"},
                "presentment_money": {"amount": "11.00", "currency_code": "EUR"},
            }
        )
        assert from_shopify(payload).total_shipping == Decimal("12.50")

    def test_shipping_total_falls_back_to_the_shipping_lines(self) -> None:
        payload = order_payload(
            shipping_lines=[
                {"title": "Express", "price": "9.99"},
                {"title": "Handling", "price": "0.01"},
            ]
        )
        draft = from_shopify(payload)
        assert draft.total_shipping == Decimal("10.00")
        assert draft.shipping_method == "Express"

    def test_float_prices_never_go_through_binary_float(self) -> None:
        # A client that decoded the JSON with plain floats: 0.1 + 0.2 must stay 0.3, and 19.99
        # must not become 19.989999999999998436805981327779591083526611328125.
        payload = order_payload(total_price=19.99, total_tax=0.1, subtotal_price=0.2)
        payload["line_items"][0]["price"] = 19.99
        draft = from_shopify(payload)
        assert draft.total_price == Decimal("19.99")
        assert str(draft.total_price) == "19.99"
        assert draft.total_tax + draft.subtotal_price == Decimal("0.3")
        assert str(draft.lines[0].price) == "19.99"

    def test_numbers_parsed_as_decimal_stay_exact(self) -> None:
        payload = order_payload(total_price=409.94)
        payload["line_items"][1]["price"] = 199.0
        draft = from_shopify(as_webhook(payload))
        assert str(draft.total_price) == "409.94"
        assert str(draft.lines[1].price) == "199.0"

    @given(
        st.decimals(
            min_value=0,
            max_value=MAX_AMOUNT,
            allow_nan=False,
            allow_infinity=False,
            places=4,
        )
    )
    def test_any_non_negative_price_string_round_trips_exactly(self, price: Decimal) -> None:
        text = format(price, "f")
        payload = order_payload(total_price=text)
        payload["line_items"][0]["price"] = text
        draft = from_shopify(payload)
        assert draft.lines[0].price == price
        assert format(draft.lines[0].price, "f") == text
        assert format(draft.total_price, "f") == text


class TestLines:
    def test_lines_of_the_real_payload(self) -> None:
        draft = from_shopify(order_payload())
        assert [
            (
                ln.shopify_line_id,
                ln.sku,
                ln.variant_id,
                ln.product_id,
                ln.title,
                ln.variant_title,
                ln.quantity,
                ln.price,
                ln.total_discount,
                ln.requires_shipping,
            )
            for ln in draft.lines
        ] == [
            (
                466157049,
                "IPOD2008GREEN",
                39072856,
                632910392,
                "IPod Nano - 8gb",
                "green",
                1,
                Decimal("199.00"),
                Decimal("0"),
                True,
            ),
            (
                518995019,
                "IPOD2008RED",
                49148385,
                632910392,
                "IPod Nano - 8gb",
                "red",
                1,
                Decimal("199.00"),
                Decimal("0"),
                True,
            ),
            (
                703073504,
                "IPOD2008BLACK",
                457924702,
                632910392,
                "IPod Nano - 8gb",
                "black",
                1,
                Decimal("199.00"),
                Decimal("0"),
                True,
            ),
        ]

    @pytest.mark.parametrize("sku", [None, "", "   "])
    def test_null_or_empty_sku_and_variant_id_become_none(self, sku: str | None) -> None:
        payload = order_payload()
        payload["line_items"][0]["sku"] = sku
        payload["line_items"][0]["variant_id"] = None
        payload["line_items"][0]["product_id"] = None
        line = from_shopify(payload).lines[0]
        assert line.sku is None
        assert line.variant_id is None
        assert line.product_id is None

    def test_sku_is_trimmed(self) -> None:
        payload = order_payload()
        payload["line_items"][0]["sku"] = "  IPOD2008GREEN "
        assert from_shopify(payload).lines[0].sku == "IPOD2008GREEN"

    def test_discount_allocations_are_summed(self) -> None:
        payload = order_payload()
        payload["line_items"][0]["discount_allocations"] = [
            {"amount": "5.00", "discount_application_index": 0},
            {"amount": "0.50", "discount_application_index": 1},
        ]
        payload["line_items"][1]["total_discount"] = "3.10"
        draft = from_shopify(payload)
        assert [ln.total_discount for ln in draft.lines] == [
            Decimal("5.50"),
            Decimal("3.10"),
            Decimal("0"),
        ]

    def test_current_quantity_after_an_order_edit_wins(self) -> None:
        # Admin API 2024-01+: an edit that removes items keeps ``quantity`` as ordered.
        payload = order_payload()
        payload["line_items"][0].update(quantity=3, current_quantity=1)
        payload["line_items"][1].update(quantity=1, current_quantity=0)
        assert [ln.quantity for ln in from_shopify(payload).lines] == [1, 0, 1]

    def test_requires_shipping(self) -> None:
        payload = order_payload()
        payload["line_items"][0]["requires_shipping"] = False
        payload["line_items"][1]["requires_shipping"] = None
        del payload["line_items"][2]["requires_shipping"]
        assert [ln.requires_shipping for ln in from_shopify(payload).lines] == [False, True, True]

    def test_no_lines_is_an_empty_list(self) -> None:
        assert from_shopify(order_payload(line_items=[])).lines == []


class TestIdentity:
    def test_ids_name_and_timestamps(self) -> None:
        draft = from_shopify(order_payload())
        assert draft.source == "shopify"
        assert draft.shopify_order_id == 450789469
        assert draft.shopify_gid == "gid://shopify/Order/450789469"
        assert draft.name == "#1001"
        assert draft.order_number == 1001
        assert draft.financial_status == "authorized"
        assert draft.placed_at == datetime(2008, 1, 10, 16, 0, tzinfo=UTC)
        assert draft.source_updated_at == datetime(2008, 1, 10, 16, 0, tzinfo=UTC)
        assert draft.cancelled_at is None
        assert draft.note is None

    def test_64_bit_ids_stay_exact(self) -> None:
        biggest = 2**63 - 1
        payload = order_payload(id=biggest, admin_graphql_api_id=f"gid://shopify/Order/{biggest}")
        payload["line_items"][0].update(id=biggest - 1, variant_id=biggest - 2)
        payload["customer"]["id"] = biggest - 3
        draft = from_shopify(as_webhook(payload))
        assert draft.shopify_order_id == 9223372036854775807
        assert draft.shopify_gid == "gid://shopify/Order/9223372036854775807"
        assert draft.lines[0].shopify_line_id == 9223372036854775806
        assert draft.lines[0].variant_id == 9223372036854775805
        assert draft.customer is not None
        assert draft.customer.shopify_customer_id == 9223372036854775804

    def test_ids_as_strings_are_accepted(self) -> None:
        draft = from_shopify(order_payload(id="450789469"))
        assert draft.shopify_order_id == 450789469

    def test_name_falls_back_to_the_order_number(self) -> None:
        assert from_shopify(order_payload(name=None)).name == "#1001"
        assert from_shopify(order_payload(name="", order_number=None)).name == "#450789469"

    def test_cancelled_at_is_utc(self) -> None:
        draft = from_shopify(order_payload(cancelled_at="2008-01-11T09:30:00+01:00"))
        assert draft.cancelled_at == datetime(2008, 1, 11, 8, 30, tzinfo=UTC)

    def test_long_text_is_cut_to_what_the_columns_hold(self) -> None:
        payload = order_payload(name="#" + "9" * 400)
        payload["line_items"][0]["title"] = "T" * 600
        payload["line_items"][0]["sku"] = "S" * 300
        draft = from_shopify(payload)
        assert len(draft.name) == 255
        assert len(draft.lines[0].title) == 512
        assert draft.lines[0].sku == "S" * 255


class TestCustomerAndAddresses:
    def test_customer(self) -> None:
        draft = from_shopify(order_payload())
        assert draft.email == "bob.norman@hostmail.com"
        assert draft.customer == CustomerDraft(
            shopify_customer_id=207119551,
            email="bob.norman@hostmail.com",
            first_name="Bob",
            last_name="Norman",
            phone=None,
        )

    def test_no_customer(self) -> None:
        draft = from_shopify(order_payload(customer=None, email=None, contact_email="x@y.example"))
        assert draft.customer is None
        assert draft.email == "x@y.example"

    def test_not_an_email_is_dropped(self) -> None:
        assert from_shopify(order_payload(email="not an email")).email is None

    def test_shipping_address(self) -> None:
        draft = from_shopify(order_payload())
        assert draft.shipping_address == {
            "name": "Bob Norman",
            "first_name": "Bob",
            "last_name": "Norman",
            "company": None,
            "address1": "Chestnut Street 92",
            "address2": None,
            "city": "Louisville",
            "province": "Kentucky",
            "province_code": "KY",
            "zip": "40202",
            "country": "United States",
            "country_code": "US",
            "phone": "555-625-1199",
        }
        assert draft.billing_address == draft.shipping_address

    def test_address_name_is_built_and_country_code_upper_cased(self) -> None:
        payload = order_payload()
        payload["shipping_address"].update(name=None, first_name="Ann", country_code="gb")
        addr = from_shopify(payload).shipping_address
        assert addr is not None
        assert (addr["name"], addr["country_code"]) == ("Ann Norman", "GB")

    def test_no_shipping_address(self) -> None:
        assert from_shopify(order_payload(shipping_address=None)).shipping_address is None


class TestStripeReference:
    def test_none_for_another_gateway(self) -> None:
        assert from_shopify(order_payload()).stripe_payment_reference is None

    def test_payment_intent_from_note_attributes(self) -> None:
        payload = order_payload(
            note_attributes=[
                {"name": "custom engraving", "value": "Happy Birthday"},
                {"name": "stripe_payment_intent", "value": " pi_3MtwBwLkdIwHu7ix28a3tqPa "},
            ]
        )
        assert from_shopify(payload).stripe_payment_reference == "pi_3MtwBwLkdIwHu7ix28a3tqPa"

    def test_charge_id_from_a_transaction(self) -> None:
        payload = order_payload(
            transactions=[{"authorization": "ch_1N3zq2LkdIwHu7ixabcdEFGH", "receipt": "x"}]
        )
        assert from_shopify(payload).stripe_payment_reference == "ch_1N3zq2LkdIwHu7ixabcdEFGH"

    def test_stripe_gateway_without_an_id_uses_the_checkout(self) -> None:
        payload = order_payload(payment_gateway_names=["Stripe"], gateway="stripe")
        assert (
            from_shopify(payload).stripe_payment_reference
            == "shopify-checkout:b1946ac92492d2347c6235b4d2611184"
        )

    def test_gateway_names_as_a_bare_string(self) -> None:
        payload = order_payload(payment_gateway_names="stripe", gateway=None)
        assert from_shopify(payload).stripe_payment_reference == (
            "shopify-checkout:b1946ac92492d2347c6235b4d2611184"
        )

    def test_look_alike_values_are_not_references(self) -> None:
        payload = order_payload(
            note_attributes=[
                {"name": "x", "value": "pi_short"},
                {"name": "y", "value": "pix_1234567890"},
            ]
        )
        assert from_shopify(payload).stripe_payment_reference is None


class TestBadInput:
    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (lambda p: p.pop("id"), "id"),
            (lambda p: p.update(id="abc"), "id"),
            (lambda p: p.update(id=True), "id"),
            (lambda p: p.update(id=0), "id"),
            (lambda p: p.update(id=2**64), "id"),  # unsigned 64-bit: 2**64-1 is the last
            (lambda p: p.update(id="--5"), "id"),
            (lambda p: p.update(id="\u00b2"), "id"),
            (lambda p: p.update(currency="usd"), "currency"),
            (lambda p: p.pop("currency"), "currency"),
            (lambda p: p.update(line_items={"a": 1}), "line_items"),
            (lambda p: p["line_items"].append("x"), "line_items[3]"),
            (lambda p: p["line_items"][1].update(quantity=-1), "line_items[1].quantity"),
            (lambda p: p["line_items"][1].update(quantity="two"), "line_items[1].quantity"),
            (lambda p: p["line_items"][1].pop("quantity"), "line_items[1].quantity"),
            (lambda p: p["line_items"][1].update(quantity=10**12), "line_items[1].quantity"),
            (lambda p: p["line_items"][2].update(price="abc"), "line_items[2].price"),
            (lambda p: p["line_items"][2].update(price="-1.00"), "line_items[2].price"),
            (lambda p: p["line_items"][2].update(price="NaN"), "line_items[2].price"),
            (lambda p: p["line_items"][2].update(price="1_000"), "line_items[2].price"),
            (lambda p: p["line_items"][2].update(price={"amount": "1"}), "line_items[2].price"),
            (lambda p: p["line_items"][0].update(variant_id=1.5), "line_items[0].variant_id"),
            (lambda p: p.update(total_price="1e400"), "total_price"),
            (lambda p: p.update(total_price=float("inf")), "total_price"),
            (lambda p: p.update(total_tax=True), "total_tax"),
            (lambda p: p.update(created_at="yesterday"), "created_at"),
            (lambda p: p.update(updated_at=1234), "updated_at"),
            (lambda p: p.update(shipping_address="Chestnut Street 92"), "shipping_address"),
            (lambda p: p["customer"].update(id="me"), "customer.id"),
            (
                lambda p: p.update(shipping_lines=[{"title": "x", "price": "free"}]),
                "shipping_lines[0].price",
            ),
            (
                lambda p: p["line_items"][0].update(discount_allocations=[{"amount": "x"}]),
                "line_items[0].discount_allocations[0].amount",
            ),
        ],
    )
    def test_payload_error_names_the_field(self, change: Any, field: str) -> None:
        payload = order_payload()
        change(payload)
        with pytest.raises(PayloadError) as err:
            from_shopify(payload)
        assert err.value.field == field
        assert str(err.value).startswith(f"{field}: ")

    def test_body_must_be_an_object(self) -> None:
        with pytest.raises(PayloadError) as err:
            from_shopify([])  # type: ignore[arg-type]
        assert err.value.field == "body"
